"""Base class of the models that learn from two stores.

The joint objective of the seed,

    min_theta  lambda * sum_S l(y_S, f_theta(x_S))  +  sum_T l(y_T, f_theta(x_T)),

is what :meth:`CrossDomainModule.training_step` computes from a batch keyed by domain: each
model defines the loss of the parts it learns from (``source_loss``, ``target_loss``,
``overlap_loss``) and the base weighs the source term by ``source_weight`` (lambda). Each part's
loss is a batch MEAN and, in phase ``both``, the smaller store's batches repeat within an epoch,
so ``source_weight=1`` gives the two stores equal weight; the seed's summed objective with
lambda = 1 corresponds to ``source_weight = |O_S| / |O_T|`` (the ratio of the stores' training
interactions). Which parts a batch contains is decided by the DataModule's phase, so a
multi-phase model (SOURCE -> TARGET -> OVERLAP) is trained by switching phases between epochs
(:class:`crossrec_lit.transfer.PhaseSchedule`), not by a hand-written loop.
"""

from __future__ import annotations

import torch

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule, rank_weighted

PARTS = ("source", "target", "overlap")


class CrossDomainModule(RecommenderModule):
    """A recommender for the target store that may learn from the source store too.

    Args:
        num_users: the shared user index space (both stores).
        num_items: target catalogue size (ranked in evaluation).
        num_source_items: source catalogue size.
        source_weight: lambda, the weight of the source store's mean batch loss against the
            target's (1 = equal weight; the seed's sum over all interactions corresponds to the
            ratio of the stores' training sizes); a
            :class:`crossrec_lit.transfer.SourceWeightSchedule` may change it per epoch.
        **kwargs: see :class:`RecommenderModule`.
    """

    def __init__(self, num_users: int, num_items: int, num_source_items: int, *, source_weight: float = 1.0, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        if int(num_source_items) < 1:
            raise CrossRecError(f"num_source_items={num_source_items} must be >= 1", "link it from a CrossDomainDataModule")
        if source_weight < 0:
            raise CrossRecError(f"source_weight must be >= 0, got {source_weight}", "use 0 (ignore the source) or more")
        self.num_source_items = int(num_source_items)
        self.source_weight = float(source_weight)
        # users with target training data; the others are cold in the target store
        self.register_buffer("has_target", torch.ones(self.num_users, dtype=torch.bool))

    # ------------------------------------------------------------------ losses per part
    def source_loss(self, batch: dict) -> torch.Tensor:
        raise CrossRecError(f"{type(self).__name__} does not train on source batches", "serve it another phase (DataModule phase)")

    def target_loss(self, batch: dict) -> torch.Tensor:
        raise CrossRecError(f"{type(self).__name__} does not train on target batches", "serve it another phase (DataModule phase)")

    def overlap_loss(self, batch: dict) -> torch.Tensor:
        raise CrossRecError(f"{type(self).__name__} does not train on overlap batches", "serve it another phase (DataModule phase)")

    def joint_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """lambda * source loss + target loss (+ overlap loss) over the parts present."""
        if not isinstance(batch, dict) or "users" in batch:
            batch = {"target": batch}
        parts = {part: rank_weighted(getattr(self, f"{part}_loss")(batch[part]), batch[part]) for part in PARTS if part in batch}
        if not parts:
            raise CrossRecError(f"batch has none of the parts {list(PARTS)}", "train with a CrossDomainDataModule")
        total = sum(self.part_weight(part) * loss for part, loss in parts.items())
        return total, parts

    def part_weight(self, part: str) -> float:
        """Weight of one part's loss in the total: lambda for the source, 1 otherwise."""
        return self.source_weight if part == "source" else 1.0

    def training_step(self, batch, batch_idx):
        total, parts = self.joint_loss(batch)
        if not torch.isfinite(total):
            raise CrossRecError(f"training loss became {total.item()} at step {self.global_step}", "lower the learning rate or add regularisation")
        n = sum(len(batch[p]["users"]) for p in parts) if isinstance(batch, dict) and "users" not in batch else len(batch["users"])
        for part, loss in parts.items():
            self.track(f"train/{part}_loss", loss, n)
        self.track("train/loss", total, n)
        return total

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        if not hasattr(datamodule, "source_domain"):
            raise CrossRecError(f"{type(self).__name__} needs a CrossDomainDataModule", "train it with crossrec_lit.data.CrossDomainDataModule")
        idx = datamodule.index
        warm = idx.users_with(datamodule.target_domain, "train")
        mask = torch.zeros(self.num_users, dtype=torch.bool)
        mask[torch.from_numpy(warm)] = True
        self.has_target.copy_(mask)

    @staticmethod
    def histories(datamodule, domain: str, max_len: int) -> torch.Tensor:
        """[num_users, max_len] item indices of each user's most recent training items in
        ``domain``, most recent first, padded with -1 (a fixed-size buffer, so it lives in
        checkpoints): the DataModule's sequences (oldest first, shifted by one) reversed."""
        return torch.from_numpy(datamodule.sequences("train", max_len, domain)[:, ::-1].copy()) - 1
