"""The base LightningModule every recommender in crossrec_lit derives from.

A recommender here is anything that can (1) score given (user, item) pairs and (2) score every
item of the target catalogue for a batch of users. The base class turns that into Lightning
training, full-ranking validation/testing with logged metrics, per-user test values for
significance tests, a configurable optimiser, and ``recommend`` for inference.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.evaluation.metrics import check_ks, topk_indices
from crossrec_lit.evaluation.protocol import RankingAccumulator
from crossrec_lit.models.embedding import Embedding
from crossrec_lit.optim import LazyAdam

OPTIMIZERS = ("adam", "adamw", "sparse_adam", "adagrad", "sgd")


class RecommenderModule(pl.LightningModule):
    """Base class: subclasses implement :meth:`score`, :meth:`full_scores` and :meth:`loss`.

    Args:
        num_users: size of the user index space (linked from the DataModule by the CLI).
        num_items: size of the (target) item catalogue.
        lr: learning rate.
        optimizer: ``adam`` (the default; fused kernel where torch supports it), ``adamw``,
            ``sparse_adam`` (lazy updates that touch only the rows in the batch, see
            :class:`~crossrec_lit.optim.LazyAdam`: use it for catalogues of millions of items,
            where a dense Adam step costs more than the batch),
            ``adagrad`` or ``sgd``.
        weight_decay: decoupled/L2 weight decay passed to the optimiser (not with ``sparse_adam``).
        ks: the cut-offs K of the logged ranking metrics.
        sampled_eval_negatives: if > 0, also log SAMPLED metrics (``sampled_hit@K``...) against
            this many random negatives. Off by default: full ranking is the protocol.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        *,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        ks: Sequence[int] = (10, 20),
        sampled_eval_negatives: int = 0,
    ):
        super().__init__()
        if int(num_users) < 1 or int(num_items) < 1:
            raise CrossRecError(f"num_users={num_users} and num_items={num_items} must be >= 1", "link them from the DataModule")
        if optimizer not in OPTIMIZERS:
            raise CrossRecError(f"unknown optimizer {optimizer!r}", f"use one of {list(OPTIMIZERS)}")
        if optimizer == "sparse_adam" and weight_decay:
            raise CrossRecError("sparse_adam does not support weight_decay", "use the model's l2_reg (a batch-level penalty) instead")
        if lr <= 0:
            raise CrossRecError(f"learning rate must be > 0, got {lr}", "use e.g. lr=1e-3")
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.lr = float(lr)
        self.optimizer_name = optimizer
        self.weight_decay = float(weight_decay)
        self.ks = check_ks(list(ks), self.num_items)
        self.val_metrics = RankingAccumulator(self.ks, sampled_negatives=sampled_eval_negatives)
        self.test_metrics = RankingAccumulator(self.ks, keep_per_user=True, sampled_negatives=sampled_eval_negatives)
        self.test_per_user = None

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name around every hook it calls, some 40 times per training
        # step; nn.Module.__setattr__ first checks whether the value is a parameter, module or
        # buffer (about 5 us each). The name is a plain attribute, so it is stored directly.
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's loader, with its two common failures turned into errors that say what to do."""
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            raise CrossRecError(
                f"checkpoint {checkpoint_path} was saved by another model ({exc}); {cls.__name__} cannot load it",
                "load it with the class that trained it (its hyper_parameters name the arguments), or transfer weights with LoadSourceWeights",
            ) from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as exc:
            raise CrossRecError(f"checkpoint {checkpoint_path} is unreadable ({type(exc).__name__}: {exc})", "re-create it by training again") from None
        except RuntimeError as exc:
            if "PytorchStreamReader" not in str(exc) and "zip archive" not in str(exc):
                raise
            raise CrossRecError(f"checkpoint {checkpoint_path} is unreadable (truncated or not a checkpoint)", "re-create it by training again") from None

    # ------------------------------------------------------------------ what subclasses define
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of aligned (user, item) pairs; any broadcastable shapes."""
        raise NotImplementedError

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        """[B, num_items] scores of every target item for a batch of users."""
        raise NotImplementedError

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    @property
    def sparse_embeddings(self) -> bool:
        """Whether embedding tables should produce sparse gradients (for ``sparse_adam``)."""
        return self.optimizer_name == "sparse_adam"

    def make_embedding(self, n: int, dim: int) -> nn.Embedding:
        """An embedding table with Xavier-normal init (the reference BPR setting)."""
        emb = Embedding(n, dim, sparse=self.sparse_embeddings)
        nn.init.xavier_normal_(emb.weight)
        return emb

    # ------------------------------------------------------------------ data binding
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.world_size > 1 and not any(p.requires_grad for p in self.parameters()):
            raise CrossRecError(
                f"{type(self).__name__} has nothing to train, so it cannot run under DDP (devices > 1)",
                "fit counting baselines with devices=1; they take one pass over the data",
            )
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and stage == "fit":
            self.bind_data(datamodule)

    def bind_data(self, datamodule) -> None:
        """Take data-derived tensors a model needs beyond its sizes (e.g. which users are cold).

        Called once before training. Whatever is taken must live in persistent buffers, so a
        model loaded from a checkpoint needs no DataModule to score. No-op by default.
        """

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        batch = single_domain_batch(batch)
        loss = rank_weighted(self.loss(batch), batch)
        if not torch.isfinite(loss):
            raise CrossRecError(f"training loss became {loss.item()} at step {self.global_step}", "lower the learning rate or add regularisation")
        self.track("train/loss", loss, _batch_size(batch))
        return loss

    def track(self, name: str, value: torch.Tensor, weight: int) -> None:
        """Accumulate a per-step training value, logged once per epoch as its weighted mean.

        Why not ``self.log`` every step: Lightning's logging costs about 2.5 ms per call (it moves
        its result containers between devices each time), a third of a BPR step at batch 4096.
        The means are logged from the epoch's last training step, so callbacks see them in
        ``trainer.callback_metrics`` at ``on_train_epoch_end`` as with ordinary logging.
        """
        sums = self.__dict__.setdefault("_tracked", {})
        total, count = sums.get(name, (0.0, 0))
        sums[name] = (total + value.detach() * weight, count + weight)

    def flush_tracked(self, batch_idx: int | None = None) -> None:
        """Log the tracked means if ``batch_idx`` is the epoch's last batch (always when None)."""
        last = self.trainer.num_training_batches
        if batch_idx is not None and not (isinstance(last, int) and batch_idx + 1 >= last):
            return
        for name, (total, count) in self.__dict__.pop("_tracked", {}).items():
            self.log(name, total / count, prog_bar=name == "train/loss", on_step=False, on_epoch=True, batch_size=1, sync_dist=self.trainer.world_size > 1)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.flush_tracked(batch_idx)

    def on_train_epoch_end(self) -> None:
        # an epoch of unknown length ends without a known last batch
        self.flush_tracked()

    def on_train_epoch_start(self) -> None:
        # batch-level datasets derive their shuffling and negatives from (seed, epoch)
        for loader in _flat_loaders(self.trainer.train_dataloader):
            dataset = getattr(loader, "dataset", None)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        name = self.optimizer_name
        if name == "adam":
            # fused: one kernel for all parameters; measured about 2.5x faster than the default
            # for-each Adam on Toys-sized tables, same maths
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=_fused_ok(params))
        if name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=_fused_ok(params))
        if name == "sparse_adam":
            sparse = [p for m in self.modules() if isinstance(m, nn.Embedding) and m.sparse for p in m.parameters() if p.requires_grad]
            ids = {id(p) for p in sparse}
            dense = [p for p in params if id(p) not in ids]
            if dense:
                # a sparse Adam cannot step dense tensors, and a second optimiser would need manual
                # optimisation; sparse updates matter for huge embedding tables, i.e. MF models
                raise CrossRecError(
                    f"optimizer='sparse_adam' applies to embedding-only models; {type(self).__name__} has dense parameters",
                    "use optimizer='adam' (or 'adamw') for this model",
                )
            return LazyAdam(sparse, lr=self.lr)
        if name == "adagrad":
            return torch.optim.Adagrad(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, metrics: RankingAccumulator) -> None:
        if "rating_values" in batch:
            users, items = batch["users"][batch["rating_coords"][0]], batch["rating_coords"][1]
            metrics.update_ratings(self.score(users, items), batch["rating_values"], users)
        if batch["truth"].numel():
            metrics.update(self.full_scores(batch["users"]), batch)

    def on_validation_epoch_start(self) -> None:
        # Fresh, process-private sums: ddp_spawn hands each process the model through shared
        # memory, and Lightning unshares parameters and buffers but not torchmetrics states, so
        # the ranks of a first evaluation would otherwise add into one tensor at the same time
        # (measured: a racy precision@10 in about 1 run in 20 on a loaded box).
        self.val_metrics.reset()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_start(self) -> None:
        self.test_per_user = None
        self.test_metrics.reset()  # process-private states, as in on_validation_epoch_start

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        if values and self.test_metrics.count > 0:
            self.test_per_user = self.test_metrics.per_user()
        self._log_metrics("test", self.test_metrics, values)

    def _log_metrics(self, stage: str, metrics: RankingAccumulator, values=None) -> None:
        values = metrics.compute() if values is None else values
        for key, value in values.items():
            self.log(f"{stage}/{key}", value, prog_bar=key in ("ndcg@10", "mae"), sync_dist=False)
        metrics.reset()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def recommend(self, users: torch.Tensor, k: int = 10, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item indices and scores for ``users``.

        ``exclude`` is a [2, nnz] (row, col) tensor of items not to recommend (e.g. what each
        user already bought); see :meth:`crossrec_lit.data.InteractionDataModule.recommend`
        for the id-level version.
        """
        check_ks([k], self.num_items)
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        if users.numel() and (users.min() < 0 or users.max() >= self.num_users):
            raise CrossRecError(f"user index out of range 0..{self.num_users - 1}", "map user ids with the DataModule's user_vocab")
        was_training = self.training
        self.eval()
        scores = self.full_scores(users)
        # a copy (it may be an expanded view, as Popularity's is), in the model's own float precision:
        # casting float64 scores down would erase the tie-breaks the evaluation ranked by
        scores = scores.clone() if scores.is_floating_point() else scores.float()
        if exclude is not None and exclude.numel():
            scores[exclude[0], exclude[1]] = float("-inf")
        top = topk_indices(scores, k)
        self.train(was_training)
        return top, scores.gather(1, top)


DOMAIN_KEYS = ("source", "target", "overlap")


def rank_weighted(loss: torch.Tensor, batch: dict) -> torch.Tensor:
    """The loss scaled by the batch's ``rank_weight``, which the batch datasets set under DDP only
    (ranks' shares of an uneven epoch); a single process skips the multiplication."""
    weight = batch.get("rank_weight")
    return loss if weight is None else loss * weight


def single_domain_batch(batch):
    """A single-domain model's batch: a cross-domain DataModule keys batches by domain
    (``{"target": ...}``); such a model takes the one sub-batch served to it."""
    if isinstance(batch, dict) and "users" not in batch:
        parts = [k for k in DOMAIN_KEYS if k in batch]
        if len(parts) != 1:
            raise CrossRecError(
                f"a single-domain model got a batch with parts {parts}",
                "serve one side only (DataModule phase='target' or 'source'), or use a cross-domain model",
            )
        return batch[parts[0]]
    return batch


def _fused_ok(params) -> bool:
    return all(p.is_floating_point() and not p.is_sparse for p in params) and all(p.device.type in ("cpu", "cuda") for p in params)


def _batch_size(batch) -> int:
    if isinstance(batch, dict):
        if "users" in batch:
            return len(batch["users"])
        return sum(_batch_size(v) for v in batch.values() if isinstance(v, dict))
    return 1


def _flat_loaders(loaders):
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return [x for v in loaders.values() for x in _flat_loaders(v)]
    if isinstance(loaders, (list, tuple)):
        return [x for v in loaders for x in _flat_loaders(v)]
    flattened = getattr(loaders, "flattened", None)
    return list(flattened) if flattened is not None else [loaders]
