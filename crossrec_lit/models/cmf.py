"""Collective Matrix Factorization (Singh & Gordon, KDD 2008).

Idea: factorise several matrices that share an entity at once, with that entity's factors shared.
Here the two user x item matrices of the source store (X) and the target store (Y) share the users:

    X ~ f(U V^T),   Y ~ f(U W^T)
    L = alpha * L_X(U, V) + (1 - alpha) * L_Y(U, W),   alpha in [0, 1]

with a pointwise loss per observed (and, for implicit data, per sampled unobserved) cell. alpha
trades the two reconstructions off (0: target only; 1: source only; the paper tunes it). Cold
users' ``U`` rows are fitted to the source alone, which is how CMF recommends to them.

Pointwise losses used here, per store ``d`` (``mu_d`` a fixed data offset, ``c_d`` a learned
offset, ``b`` optional user/item biases, per store):

* rating task (the training batch carries ``ratings``, DataModule ``keep_ratings=True``):
  ``pred = mu_d + c_d + b_u^d + b_i^d + <U_u, V_i>`` and ``L_d = mean (pred - rating)^2``
  (``mu_d`` = the store's mean training rating, taken in ``bind_data``; sampled negatives, if
  any, are ignored);
* implicit task (no ``ratings``): logits ``s = c_d + b_u^d + b_i^d + <U_u, V_i>``, label 1 for
  the observed item and 0 for each sampled negative, and ``L_d`` = the mean binary cross-entropy
  on logits (``implicit_loss="bce"``) or the mean squared error of ``s`` against the labels
  (``implicit_loss="squared"``, the paper's Gaussian case with sampled zeros).

Each ``L_d`` adds ``l2_reg * sum of squared factor rows of the batch / batch size``.

How alpha maps onto :class:`~crossrec_lit.models.CrossDomainModule`: alpha IS the base class's
``source_weight`` (``alpha`` is an alias), and :meth:`CMF.joint_loss` weighs the target term by
``1 - source_weight`` instead of the base's 1. So the trained objective is exactly
``alpha * L_source + (1 - alpha) * L_target``, and
:class:`~crossrec_lit.transfer.SourceWeightSchedule` schedules alpha (values outside [0, 1] are
refused at the next step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.embedding import Embedding

IMPLICIT_LOSSES = ("bce", "squared")


class CMF(CrossDomainModule):
    """Collective Matrix Factorization over a source and a target store (see the module docstring).

    Train it with a :class:`~crossrec_lit.data.CrossDomainDataModule` in ``phase="both"``.
    Scores of target items are ``c_T + b_u^T + b_j^T + <U_u, W_j>`` (plus ``mu_T`` for ratings),
    so ranking and rating prediction use the same function.

    Args:
        num_users: the shared user index space (both stores).
        num_items: target catalogue size (ranked in evaluation).
        num_source_items: source catalogue size.
        embedding_dim: size of the user and item factors.
        alpha: weight of the source reconstruction, in [0, 1]; the target gets ``1 - alpha``.
        implicit_loss: ``bce`` (default) or ``squared``, for batches without ratings.
        biases: learn per-store user and item biases (the offsets ``c_d`` are always learned).
        l2_reg: penalty on the factor and bias rows of each batch.
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (lr, optimizer, ks, ...).
            ``source_weight`` is not accepted: it is ``alpha``.

    Parameters: ``user_emb`` (shared U), ``source_item_emb`` (V), ``item_emb`` (W); with
    ``biases``: ``source_user_bias``, ``user_bias``, ``source_item_bias``, ``item_bias``;
    ``source_offset``, ``target_offset``. Buffers ``source_rating_mean``/``target_rating_mean``.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        embedding_dim: int = 64,
        alpha: float = 0.5,
        implicit_loss: str = "bce",
        biases: bool = True,
        l2_reg: float = 0.0,
        **kwargs,
    ):
        if "source_weight" in kwargs:
            raise CrossRecError("CMF weighs the stores by alpha, not source_weight", "pass alpha (the source share, in [0, 1])")
        _check_alpha(alpha)
        super().__init__(num_users, num_items, num_source_items, source_weight=float(alpha), **kwargs)
        if int(embedding_dim) < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32 or 64")
        if implicit_loss not in IMPLICIT_LOSSES:
            raise CrossRecError(f"unknown implicit_loss {implicit_loss!r}", f"use one of {list(IMPLICIT_LOSSES)}")
        if l2_reg < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 (off) or a small value such as 1e-4")
        self.save_hyperparameters()
        self.embedding_dim = int(embedding_dim)
        self.implicit_loss = implicit_loss
        self.biases = bool(biases)
        self.l2_reg = float(l2_reg)
        self.user_emb = self.make_embedding(self.num_users, self.embedding_dim)
        self.source_item_emb = self.make_embedding(self.num_source_items, self.embedding_dim)
        self.item_emb = self.make_embedding(self.num_items, self.embedding_dim)
        if self.biases:
            self.source_user_bias = self._zero_embedding(self.num_users)
            self.user_bias = self._zero_embedding(self.num_users)
            self.source_item_bias = self._zero_embedding(self.num_source_items)
            self.item_bias = self._zero_embedding(self.num_items)
        self.source_offset = nn.Parameter(torch.zeros(()))
        self.target_offset = nn.Parameter(torch.zeros(()))
        self.register_buffer("source_rating_mean", torch.zeros(()))
        self.register_buffer("target_rating_mean", torch.zeros(()))

    def _zero_embedding(self, n: int) -> nn.Embedding:
        emb = Embedding(n, 1, sparse=self.sparse_embeddings)
        nn.init.zeros_(emb.weight)
        return emb

    # ------------------------------------------------------------------ alpha
    @property
    def alpha(self) -> float:
        """The source share of the objective (the same number as ``source_weight``)."""
        return self.source_weight

    @alpha.setter
    def alpha(self, value: float) -> None:
        _check_alpha(value)
        self.source_weight = float(value)

    def part_weight(self, part: str) -> float:
        """``alpha * L_source + (1 - alpha) * L_target`` (alpha = source_weight)."""
        alpha = self.source_weight
        _check_alpha(alpha)
        return {"source": alpha, "target": 1.0 - alpha}.get(part, 1.0)

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        idx = datamodule.index
        if idx.num_items(datamodule.source_domain) != self.num_source_items or idx.num_items(datamodule.target_domain) != self.num_items:
            raise CrossRecError(
                f"CMF was built for {self.num_source_items} source / {self.num_items} target items, but the data has "
                f"{idx.num_items(datamodule.source_domain)} / {idx.num_items(datamodule.target_domain)}",
                "link num_items and num_source_items from this CrossDomainDataModule",
            )
        for domain, buffer in ((datamodule.source_domain, self.source_rating_mean), (datamodule.target_domain, self.target_rating_mean)):
            buffer.fill_(datamodule.mean_rating(domain))

    # ------------------------------------------------------------------ scoring
    def _logits(self, store: str, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pointwise scores without the rating mean, and the rows used (for l2_reg)."""
        item_emb = self.source_item_emb if store == "source" else self.item_emb
        offset = self.source_offset if store == "source" else self.target_offset
        u, v = self.user_emb(users), item_emb(items)
        if u.dim() < v.dim():
            u = u.unsqueeze(-2)
        out = (u * v).sum(-1) + offset
        rows = [u, v]
        if self.biases:
            ub = (self.source_user_bias if store == "source" else self.user_bias)(users).squeeze(-1)
            ib = (self.source_item_bias if store == "source" else self.item_bias)(items).squeeze(-1)
            if ub.dim() < ib.dim():
                ub = ub.unsqueeze(-1)
            out = out + ub + ib
            rows += [ub, ib]
        return out, rows

    def score(self, users, items):
        users, items = torch.broadcast_tensors(users, items)
        return self._logits("target", users, items)[0] + self.target_rating_mean

    def full_scores(self, users):
        out = self.user_emb(users) @ self.item_emb.weight.T + self.target_offset + self.target_rating_mean
        if self.biases:
            out = out + self.user_bias(users) + self.item_bias.weight.T
        return out

    # ------------------------------------------------------------------ losses
    def _loss(self, batch: dict, store: str) -> torch.Tensor:
        users, items = batch["users"], batch["items"]
        n = users.shape[0]
        if "ratings" in batch:
            mean = self.source_rating_mean if store == "source" else self.target_rating_mean
            pred, rows = self._logits(store, users, items)
            loss = F.mse_loss(pred + mean, batch["ratings"].to(pred.dtype))
        else:
            if "negatives" not in batch:
                raise CrossRecError(
                    f"CMF on implicit data needs sampled negatives in {store} batches",
                    "set num_negatives >= 1 in the DataModule (or keep_ratings=True for the rating task)",
                )
            pos, rows = self._logits(store, users, items)
            neg, neg_rows = self._logits(store, users, batch["negatives"])
            rows += neg_rows[1::2]  # item factors and item biases of the negatives
            logits = torch.cat([pos, neg.reshape(-1)])
            labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg.reshape(-1))])
            if self.implicit_loss == "bce":
                loss = F.binary_cross_entropy_with_logits(logits, labels)
            else:
                loss = F.mse_loss(logits, labels)
        if self.l2_reg:
            loss = loss + self.l2_reg * sum(r.square().sum() for r in rows) / n
        return loss

    def source_loss(self, batch):
        return self._loss(batch, "source")

    def target_loss(self, batch):
        return self._loss(batch, "target")


def _check_alpha(alpha) -> None:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise CrossRecError(f"CMF's alpha (source_weight) must be in [0, 1], got {alpha!r}", "use e.g. alpha=0.5; 0 trains the target only, 1 the source only")
