"""EMCDR (Man et al., IJCAI 2017, "Cross-Domain Recommendation: An Embedding and Mapping Approach").

Three steps, each a phase here:

1. **Source MF** (not trained by this module): a :class:`~crossrec_lit.models.BPRMF` trained on the
   source store with ``CrossDomainDataModule(..., phase="source", eval_domain="source")`` - the
   same user index as the target side - is loaded into ``source_user_emb``/``source_item_emb``::

       LoadSourceWeights(ckpt, mapping={"user_emb": "source_user_emb", "item_emb": "source_item_emb"})

   The model freezes these two tables itself (``requires_grad=False`` from construction on), so
   no :class:`~crossrec_lit.transfer.FreezeUnfreeze` is needed; do not unfreeze them (the mapping
   loss would then pull the source vectors towards the target ones instead of learning a map).
2. **Target MF** (phase ``target``): BPR on the target store's training interactions
   (``user_emb``, ``item_emb``); with ``keep_ratings=True, num_negatives=0`` squared error on
   the ratings instead, every predicted rating starting from the target store's mean training
   rating (``target_rating_mean``, taken in ``bind_data``; 0 for ranking, where it changes nothing).
3. **Mapping** (phase ``overlap``): ``f`` from source to target user vectors, trained by squared
   error ``mean_u ||f(s_u) - t_u||^2`` over the *unique* users of each overlap batch, with the
   target vector ``t_u`` detached (the target MF stays fixed, as in the paper). ``f`` is
   ``linear`` (``x W^T + b``) or ``mlp`` (tanh hidden layers, the paper's MLP). Overlap batches
   are target *interactions*, so with several batches per epoch a user counts once per batch
   they appear in (heavy users weigh a little more); with a batch size of at least the number of
   overlap interactions every epoch is one step on exactly the per-user least-squares objective.

Scoring: a user with target training data (``has_target``) uses the target vector, a cold user
the mapped source vector ``f(s_u)``; ``map_all_users=True`` maps everybody (for analysis).
With ``item_bias=True`` the target MF learns a bias ``b_j`` per target item in its phase, and
every score adds it (warm and cold users alike), so the mapped vector of a cold user ranks on
top of the target store's popularity instead of having to carry it.

Recommended schedule: ``PhaseSchedule({0: "target", E: "overlap"})`` with
``Trainer(reload_dataloaders_every_n_epochs=1, max_epochs=E + M)``; E is what a target-only
BPR-MF needs to converge (pick it with a target-only run), M = 10-50 overlap epochs is usually
plenty for the linear map (a few batches of unique users per epoch), more for the MLP. With
``mapping_init="closed_form"`` the linear map starts at the least-squares solution, and a few
overlap epochs suffice. Validation under ``split="cold_start"`` ranks for cold validation users,
so it measures the mapping (meaningless during the target epochs: the map is untrained; with
EarlyStopping set ``Trainer(min_epochs=E + 1)`` so it cannot stop before the overlap phase).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.mf import FactorModel, check_item_bias, make_bias

MAPPINGS = ("linear", "mlp")
MAPPING_INITS = ("random", "closed_form")


class SourceMappingModule(CrossDomainModule, FactorModel):
    """Shared base of the embedding-and-mapping models (EMCDR, PTUPCDR).

    Holds the frozen source MF (``source_user_emb``, ``source_item_emb``), the target MF
    (``user_emb``, ``item_emb``, and ``item_bias`` when on) and the target loss; subclasses
    define :meth:`transferred_vectors` (a user's target-space vector built from the source side)
    and the overlap loss that trains it.

    Args:
        embedding_dim: size of every embedding (source and target must match the source checkpoint).
        l2_reg: batch-level L2 penalty of the target MF's rows in each target batch (as in MF),
            item bias rows included.
        map_all_users: score every user with the transferred vector (default: only users without
            target training data).
        item_bias: learn a scalar ``b_j`` per target item (zero at the start) in the target MF's
            loss (BPR difference ``b_i - b_j``, or the predicted rating), added to every score
            and to ``full_scores``. No source item bias: the source MF is loaded and frozen,
            and nothing here scores source items. Off by default (no parameter, so older
            checkpoints load).
        **kwargs: see :class:`CrossDomainModule` / :class:`RecommenderModule`.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        *,
        embedding_dim: int = 64,
        l2_reg: float = 0.0,
        map_all_users: bool = False,
        item_bias: bool = False,
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, **kwargs)
        if int(embedding_dim) < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use the source model's embedding size, e.g. 32 or 64")
        if l2_reg < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 or a small penalty such as 1e-4")
        self.embedding_dim = int(embedding_dim)
        self.l2_reg = float(l2_reg)
        self.map_all_users = bool(map_all_users)
        self.phase: str | None = None  # set by PhaseSchedule
        d = self.embedding_dim
        self.source_user_emb = self.make_embedding(self.num_users, d)
        self.source_item_emb = self.make_embedding(self.num_source_items, d)
        # the source MF is loaded (LoadSourceWeights) and stays fixed: frozen here, once, so that
        # the optimiser never sees it and no FreezeUnfreeze callback is needed
        self.source_user_emb.weight.requires_grad_(False)
        self.source_item_emb.weight.requires_grad_(False)
        self.user_emb = self.make_embedding(self.num_users, d)
        self.item_emb = self.make_embedding(self.num_items, d)
        # LoadSourceWeights' usual mapping ({"item_emb": "source_item_emb", ...}) matches names by
        # prefix plus ".", so "item_bias.weight" is never a copy target; a source BPRMF's own
        # item_bias ranks source items and is left unused
        self.item_bias = make_bias(self, self.num_items) if check_item_bias(item_bias) else None
        # users with training data in BOTH stores (what the mapping learns from)
        self.register_buffer("overlap_mask", torch.zeros(self.num_users, dtype=torch.bool))
        # rating task: the target store's mean training rating, the offset every predicted rating
        # starts from (as CMF's mu). Without it the item biases, starting at 0, had to climb to the
        # ~4 stars of a typical rating by gradient steps, and rarely rated items never got there:
        # mapped newcomers were measured at RMSE 0.93 against 0.79 for item means. 0 for ranking.
        self.register_buffer("target_rating_mean", torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the rating offset have none: theirs was 0
        state_dict.setdefault(prefix + "target_rating_mean", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        mask = torch.zeros(self.num_users, dtype=torch.bool)
        mask[torch.from_numpy(datamodule.overlap_users("train"))] = True
        self.overlap_mask.copy_(mask)
        self.target_rating_mean.fill_(datamodule.mean_rating(datamodule.target_domain))

    def score(self, users, items):
        return super().score(users, items) + self.target_rating_mean

    def full_scores(self, users):
        return super().full_scores(users) + self.target_rating_mean

    # ------------------------------------------------------------------ vectors
    def transferred_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[..., d] target-space vectors of ``users`` computed from the source side."""
        raise NotImplementedError

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        flat = users.reshape(-1)
        if self.map_all_users:
            out = self.transferred_vectors(flat)
        else:
            out = self.user_emb(flat)
            cold = ~self.has_target[flat]
            if bool(cold.any()):
                out = out.clone()
                out[cold] = self.transferred_vectors(flat[cold]).to(out.dtype)
        return out.reshape(*users.shape, self.embedding_dim)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    # ------------------------------------------------------------------ losses
    def target_loss(self, batch: dict) -> torch.Tensor:
        """Target MF: BPR with the batch's negatives, or squared error when it carries ``ratings``."""
        u = self.user_emb(batch["users"])
        pos = self.item_emb(batch["items"])
        b_pos = self.item_biases(batch["items"])
        if "ratings" in batch:
            pred = (u * pos).sum(-1) + self.target_rating_mean
            if b_pos is None:
                return F.mse_loss(pred, batch["ratings"].to(u.dtype)) + self._reg(u, pos)
            return F.mse_loss(pred + b_pos, batch["ratings"].to(u.dtype)) + self._reg(u, pos, b_pos)
        if "negatives" not in batch:
            raise CrossRecError(f"{type(self).__name__} needs sampled negatives (or ratings) in target batches", "set num_negatives >= 1, or keep_ratings=True for the rating task")
        neg = self.item_emb(batch["negatives"])
        if b_pos is None:
            return bpr_loss(u, pos, neg) + self._reg(u, pos, neg)
        b_neg = self.item_biases(batch["negatives"])
        return bpr_loss(u, pos, neg, b_pos, b_neg) + self._reg(u, pos, neg, b_pos, b_neg)

    def _reg(self, *tensors) -> torch.Tensor:
        if not self.l2_reg:
            return torch.zeros((), device=tensors[0].device)
        return self.l2_reg * sum(t.square().sum() for t in tensors) / tensors[0].shape[0]


def bpr_loss(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, pos_bias: torch.Tensor | None = None, neg_bias: torch.Tensor | None = None) -> torch.Tensor:
    """-mean log sigmoid(<u, pos> - <u, neg_k>) for u, pos [B, d] and neg [B, k, d]; with item
    biases (pos_bias [B], neg_bias [B, k]) the difference adds ``pos_bias - neg_bias``."""
    diff = (u * pos).sum(-1, keepdim=True) - (u.unsqueeze(1) * neg).sum(-1)
    if pos_bias is not None:
        diff = diff + (pos_bias.unsqueeze(1) - neg_bias)
    return -F.logsigmoid(diff).mean()


def _mlp(dims: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class EMCDR(SourceMappingModule):
    """EMCDR: a learned map from source-store user vectors to target-store user vectors.

    Args:
        num_users, num_items, num_source_items: from the CrossDomainDataModule (``num_items`` is
            the target catalogue).
        embedding_dim: must equal the source BPRMF's.
        mapping: ``linear`` (``x W^T + b``) or ``mlp``.
        hidden: hidden layer sizes of the MLP (default ``[2 * embedding_dim]``), tanh between layers
            as in the paper.
        mapping_reg: L2 penalty ``mapping_reg * ||W||^2`` on the mapping's weight matrices (not the
            biases), added to the per-user mean squared error; 0 gives ordinary least squares.
        mapping_init: ``random`` (PyTorch's default init) or ``closed_form`` (linear only): at the
            first overlap batch, set the map to the least-squares solution over all overlap users'
            current vectors (:meth:`closed_form_linear`); gradient steps then continue from there.
        map_all_users, l2_reg, item_bias, ``**kwargs``: see :class:`SourceMappingModule`.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        *,
        embedding_dim: int = 64,
        mapping: str = "linear",
        hidden: Sequence[int] | None = None,
        mapping_reg: float = 0.0,
        mapping_init: str = "random",
        map_all_users: bool = False,
        l2_reg: float = 0.0,
        item_bias: bool = False,
        **kwargs,
    ):
        super().__init__(
            num_users, num_items, num_source_items, embedding_dim=embedding_dim, l2_reg=l2_reg, map_all_users=map_all_users, item_bias=item_bias, **kwargs
        )
        if mapping not in MAPPINGS:
            raise CrossRecError(f"unknown mapping {mapping!r}", f"use one of {list(MAPPINGS)}")
        if mapping_init not in MAPPING_INITS:
            raise CrossRecError(f"unknown mapping_init {mapping_init!r}", f"use one of {list(MAPPING_INITS)}")
        if mapping_init == "closed_form" and mapping != "linear":
            raise CrossRecError("mapping_init='closed_form' exists only for the linear mapping", "use mapping='linear' or mapping_init='random'")
        if mapping_reg < 0:
            raise CrossRecError(f"mapping_reg must be >= 0, got {mapping_reg}", "use 0 (least squares) or a small ridge such as 1e-3")
        self.save_hyperparameters()
        d = self.embedding_dim
        self.mapping_kind = mapping
        self.mapping_reg = float(mapping_reg)
        self.mapping_init = mapping_init
        if mapping == "linear":
            self.mapping = nn.Linear(d, d)
        else:
            sizes = [2 * d] if hidden is None else [int(h) for h in hidden]
            if not sizes or min(sizes) < 1:
                raise CrossRecError(f"hidden sizes must be a non-empty list of positive sizes, got {hidden}", "use e.g. hidden=[128]")
            self.mapping = _mlp([d, *sizes, d], nn.Tanh)
        # whether the closed-form start was applied (a buffer, so a resumed run does not redo it)
        self.register_buffer("mapping_initialised", torch.zeros((), dtype=torch.bool))

    def transferred_vectors(self, users):
        return self.mapping(self.source_user_emb(users))

    def overlap_loss(self, batch: dict) -> torch.Tensor:
        """Mean over the batch's unique users of ``||f(s_u) - t_u||^2`` (t_u detached), plus the ridge."""
        if self.mapping_init == "closed_form" and not bool(self.mapping_initialised):
            self.fit_mapping_closed_form()
        users = torch.unique(batch["users"])
        source = self.source_user_emb(users).detach()
        target = self.user_emb(users).detach()
        loss = (self.mapping(source) - target).square().sum(-1).mean()
        if self.mapping_reg:
            loss = loss + self.mapping_reg * sum(m.weight.square().sum() for m in self.mapping.modules() if isinstance(m, nn.Linear))
        return loss

    # ------------------------------------------------------------------ closed form
    @staticmethod
    def closed_form_linear(source: torch.Tensor, target: torch.Tensor, reg: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The minimiser ``(weight [d_out, d_in], bias [d_out])`` of
        ``mean_u ||source_u W^T + b - target_u||^2 + reg * ||W||^2`` (the bias is not penalised).

        That is the objective :meth:`overlap_loss` descends on, when every overlap user is in one
        batch. Solved in float64: ``lstsq`` for ``reg=0`` (minimum-norm solution if the source
        vectors are rank-deficient), the ridge normal equations otherwise.
        """
        if source.ndim != 2 or target.ndim != 2 or source.shape[0] != target.shape[0]:
            raise CrossRecError(f"need aligned [N, d] matrices, got {tuple(source.shape)} and {tuple(target.shape)}", "pass one row per overlap user")
        if source.shape[0] == 0:
            raise CrossRecError("no overlap users to fit the mapping on", "use data with users in both stores")
        x = source.detach().double().cpu()
        y = target.detach().double().cpu()
        a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        if reg:
            penalty = torch.eye(a.shape[1], dtype=x.dtype) * reg
            penalty[-1, -1] = 0.0
            theta = torch.linalg.solve(a.T @ a / len(a) + penalty, a.T @ y / len(a))
        else:
            theta = torch.linalg.lstsq(a, y, driver="gelsd").solution
        return theta[:-1].T.contiguous(), theta[-1].contiguous()

    @torch.no_grad()
    def fit_mapping_closed_form(self, users: torch.Tensor | None = None) -> None:
        """Set the linear map to the least-squares solution over ``users`` (default: the overlap users)."""
        if self.mapping_kind != "linear":
            raise CrossRecError("the closed-form map exists only for mapping='linear'", "use mapping='linear'")
        if users is None:
            users = self.overlap_mask.nonzero().squeeze(1)
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        weight, bias = self.closed_form_linear(self.source_user_emb(users), self.user_emb(users), self.mapping_reg)
        self.mapping.weight.copy_(weight.to(self.mapping.weight))
        self.mapping.bias.copy_(bias.to(self.mapping.bias))
        self.mapping_initialised.fill_(True)


__all__ = ["EMCDR", "SourceMappingModule", "bpr_loss"]
