"""DTCDR: dual-target cross-domain recommendation (Zhu, Wang, Chen & Liu, CIKM 2019).

Each store keeps its own user and item embeddings, as a per-store matrix factorisation would; the
user's representation in a store is a COMBINATION of the user's two per-store vectors, so a loss
in either store trains both of the user's vectors and both stores improve each other (the "dual
target"). The combinations of the paper (``combine``):

* ``mean``: element-wise average of the two vectors (the same representation in both stores;
  with dot-product scoring this amounts to one shared user vector split into two summands);
* ``max``: element-wise maximum (max pooling; also the same in both stores);
* ``concat_mlp``: the two vectors concatenated and mapped back to ``embedding_dim`` by a small
  MLP, one per store, so each store reads its own view of the shared information.

A store scores an item by the dot product of the user's representation there and the item's
vector, trained with BPR (default) or pointwise BCE on the sampled negatives; the joint objective
``source_weight * source_loss + target_loss`` comes from :class:`CrossDomainModule`. With
``item_bias=True`` each store adds a learned bias per item to that dot product, in training
(both losses) and, for the target store, in :meth:`DTCDR.score` and :meth:`DTCDR.full_scores`.

Users missing from a store
--------------------------
A user with no training interaction in the target store (cold start: ``has_target`` False, set by
:meth:`CrossDomainModule.bind_data`) has a target vector that no target data ever shaped. Such a
user's missing vector is REPLACED by the vector of the store the user does have, in training and
in scoring alike: the combination becomes ``combine(p_source, p_source)``, which is exactly
``p_source`` for ``mean`` and ``max`` (and ``mlp([p_source; p_source])`` for ``concat_mlp``). The
untrained target vector therefore never enters any score, and a cold user is ranked with the
vector the source store trained, in the space the warm users' combinations share. Users without
source training data (``has_source``, filled here) are treated symmetrically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.mf import check_item_bias, make_bias

STORES = ("source", "target")
COMBINES = ("mean", "max", "concat_mlp")
LOSSES = ("bpr", "bce")


class DTCDR(CrossDomainModule):
    """Dual-target CDR: per-store MF embeddings, users combined across the two stores.

    Args:
        num_users / num_items / num_source_items: linked from a CrossDomainDataModule
            (``num_items`` is the target catalogue).
        embedding_dim: size of every user and item vector.
        combine: ``mean``, ``max`` or ``concat_mlp`` (see the module docstring).
        loss_type: ``bpr`` (pairwise, default) or ``bce`` (pointwise, as the seed's MF).
        l2_reg: penalty on the embedding rows used in each batch (item bias rows included).
        item_bias: learn a scalar bias per item in each store (zero at the start), added to that
            store's scores: the target's in training, ``score`` and ``full_scores``, the source's
            in the source loss. Off by default (no parameters, so older checkpoints load).
        **kwargs: see :class:`CrossDomainModule` (source_weight, lr, optimizer, weight_decay, ks).

    Parameters: ``user_emb.{source,target}``, ``item_emb.{source,target}``, with ``concat_mlp``
    ``combiner.{source,target}``; with ``item_bias``: ``item_bias.{source,target}`` ([n, 1] each).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        embedding_dim: int = 32,
        combine: str = "mean",
        loss_type: str = "bpr",
        l2_reg: float = 0.0,
        item_bias: bool = False,
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, **kwargs)
        if embedding_dim < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32")
        if combine not in COMBINES:
            raise CrossRecError(f"unknown combine {combine!r}", f"use one of {list(COMBINES)}")
        if loss_type not in LOSSES:
            raise CrossRecError(f"unknown loss_type {loss_type!r}", f"use one of {list(LOSSES)}")
        item_bias = check_item_bias(item_bias)
        self.save_hyperparameters()
        d = self.embedding_dim = int(embedding_dim)
        self.combine = combine
        self.loss_type = loss_type
        self.l2_reg = float(l2_reg)
        self.user_emb = nn.ModuleDict({s: self.make_embedding(self.num_users, d) for s in STORES})
        self.item_emb = nn.ModuleDict({"source": self.make_embedding(self.num_source_items, d), "target": self.make_embedding(self.num_items, d)})
        if combine == "concat_mlp":
            self.combiner = nn.ModuleDict({s: nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d)) for s in STORES})
        # A source bias too: both losses train the same user vectors (with mean and max the very
        # same representation in both stores), so without one the source's popularity would be
        # learned as a component every user shares, and it would enter the target scores.
        self.item_bias = None
        if item_bias:
            self.item_bias = nn.ModuleDict({"source": make_bias(self, self.num_source_items), "target": make_bias(self, self.num_items)})
        # users with source training data (has_target, for the target store, is the base's)
        self.register_buffer("has_source", torch.ones(self.num_users, dtype=torch.bool))

    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        mask = torch.zeros(self.num_users, dtype=torch.bool)
        mask[torch.from_numpy(datamodule.index.users_with(datamodule.source_domain, "train"))] = True
        self.has_source.copy_(mask)

    # ------------------------------------------------------------------ representations
    def store_user_vectors(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) per-store vectors of ``users``, a missing store's replaced by the
        other's (see the module docstring)."""
        p_s, p_t = self.user_emb["source"](users), self.user_emb["target"](users)
        has_s, has_t = self.has_source[users].unsqueeze(-1), self.has_target[users].unsqueeze(-1)
        return torch.where(has_s, p_s, p_t), torch.where(has_t, p_t, p_s)

    def user_vectors(self, users: torch.Tensor, store: str = "target") -> torch.Tensor:
        """[..., d] the combined representation of ``users`` in ``store``."""
        p_s, p_t = self.store_user_vectors(users)
        if self.combine == "mean":
            return (p_s + p_t) / 2
        if self.combine == "max":
            return torch.maximum(p_s, p_t)
        return self.combiner[store](torch.cat([p_s, p_t], dim=-1))

    def item_vectors(self, items: torch.Tensor | None = None, store: str = "target") -> torch.Tensor:
        emb = self.item_emb[store]
        return emb.weight if items is None else emb(items)

    def item_biases(self, items: torch.Tensor | None = None, store: str = "target") -> torch.Tensor | None:
        """Item biases of ``items`` in ``store`` (shaped like ``items``; all items when None), or
        None without ``item_bias``."""
        if self.item_bias is None:
            return None
        table = self.item_bias[store]
        return table.weight.squeeze(-1) if items is None else table(items).squeeze(-1)

    # ------------------------------------------------------------------ scoring
    def score(self, users, items):
        out = (self.user_vectors(users) * self.item_vectors(items)).sum(-1)
        return out if self.item_bias is None else out + self.item_biases(items)

    def full_scores(self, users):
        out = self.user_vectors(users) @ self.item_vectors().T
        return out if self.item_bias is None else out + self.item_biases()

    # ------------------------------------------------------------------ training
    def _store_loss(self, batch: dict, store: str) -> torch.Tensor:
        if "negatives" not in batch:
            raise CrossRecError("DTCDR needs sampled negatives", "set num_negatives >= 1 in the DataModule")
        u = self.user_vectors(batch["users"], store)
        pos = self.item_vectors(batch["items"], store)
        neg = self.item_vectors(batch["negatives"], store)  # [B, k, d]
        pos_logit = (u * pos).sum(-1)
        neg_logit = (u.unsqueeze(1) * neg).sum(-1)
        rows = [u, pos, neg]
        if self.item_bias is not None:
            b_pos, b_neg = self.item_biases(batch["items"], store), self.item_biases(batch["negatives"], store)
            pos_logit, neg_logit = pos_logit + b_pos, neg_logit + b_neg
            rows += [b_pos, b_neg]
        if self.loss_type == "bpr":
            loss = -F.logsigmoid(pos_logit.unsqueeze(1) - neg_logit).mean()
        else:
            logits = torch.cat([pos_logit, neg_logit.reshape(-1)])
            labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit.reshape(-1))])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        if self.l2_reg:
            loss = loss + self.l2_reg * sum(r.square().sum() for r in rows) / len(u)
        return loss

    def source_loss(self, batch):
        return self._store_loss(batch, "source")

    def target_loss(self, batch):
        return self._store_loss(batch, "target")


__all__ = ["DTCDR"]
