"""Matrix factorisation: the seed's MF (sigmoid + binary cross-entropy) and BPR-MF.

Both score a (user, item) pair by the dot product of their embeddings. They differ only in the
objective: the seed's MF treats each observed pair as label 1 and each sampled negative as label
0 (pointwise BCE on sigmoid scores); BPR (Rendle et al., UAI 2009) asks each observed item to
score above a sampled negative (pairwise). BPR is the stronger ranker and the usual baseline.

With ``item_bias=True`` the score gains a learned scalar per item, ``<p_u, q_j> + b_j``: on a
sparse store popularity is the strongest simple signal, and a dot product alone can only express
it through a direction every user vector shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule
from crossrec_lit.models.embedding import Embedding


def make_bias(model: RecommenderModule, n: int) -> nn.Embedding:
    """A 1-wide embedding of ``n`` zeros: one learned scalar per row, sparse like ``make_embedding``'s.

    Zeros from ``from_pretrained`` rather than ``make_embedding`` + zeroing: no random draw, so a
    model with the bias starts every other weight exactly where the same seed puts it without the
    bias, and an on/off comparison differs by the bias alone.
    """
    return Embedding.from_pretrained(torch.zeros(int(n), 1), freeze=False, sparse=model.sparse_embeddings)


def check_item_bias(item_bias) -> bool:
    """``item_bias`` as a bool; a string such as ``"false"`` would otherwise count as on."""
    if isinstance(item_bias, str) or item_bias not in (True, False):
        raise CrossRecError(f"item_bias must be true or false, got {item_bias!r}", "use item_bias=true for a learned per-item popularity term, false for the plain dot product")
    return bool(item_bias)


class FactorModel(RecommenderModule):
    """A recommender whose score is ``<user vector, item vector>`` (``+ b_j`` with item biases).

    Subclasses provide :meth:`user_vectors` and :meth:`item_vectors`, and may hold an ``item_bias``
    table (a 1-wide embedding over the target items, or None); pairwise and full-ranking scores
    follow, so every factor model ranks the same way.
    """

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of ``items`` (all items when None)."""
        raise NotImplementedError

    def item_biases(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """Target item biases ``b_j`` of ``items`` (shaped like ``items``; all items when None), or
        None for a model without them."""
        table = getattr(self, "item_bias", None)
        if table is None:
            return None
        # a lookup, not weight indexing, so training batches give the table sparse gradients
        return table.weight.squeeze(-1) if items is None else table(items).squeeze(-1)

    def score(self, users, items):
        out = (self.user_vectors(users) * self.item_vectors(items)).sum(-1)
        bias = self.item_biases(items)
        return out if bias is None else out + bias

    def full_scores(self, users):
        out = self.user_vectors(users) @ self.item_vectors().T
        bias = self.item_biases()
        return out if bias is None else out + bias


class MF(FactorModel):
    """The seed's matrix factorisation: embeddings, dot product, sigmoid, BCE with sampled negatives.

    Args:
        embedding_dim: size of the user and item vectors.
        l2_reg: penalty on the embeddings used in each batch (applied to the rows the batch
            touches, so it works with sparse optimisers too); item bias rows included.
        item_bias: learn a scalar ``b_j`` per item (zero at the start), added to every score and
            to the training logits; off by default (no parameter at all, so older checkpoints load).
        **kwargs: see :class:`RecommenderModule` (lr, optimizer, weight_decay, ks).

    Parameters: ``user_emb``, ``item_emb``; with ``item_bias``: ``item_bias`` ([num_items, 1]).
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, l2_reg: float = 0.0, item_bias: bool = False, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        if embedding_dim < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32 or 64")
        check_item_bias(item_bias)
        self.save_hyperparameters()
        self.embedding_dim = embedding_dim
        self.l2_reg = float(l2_reg)
        self.user_emb = self.make_embedding(self.num_users, embedding_dim)
        self.item_emb = self.make_embedding(self.num_items, embedding_dim)
        self.item_bias = make_bias(self, self.num_items) if item_bias else None

    def user_vectors(self, users):
        return self.user_emb(users)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    def _sampled(self, batch):
        """User, positive and negative vectors of a batch, their logits, and the rows ``_reg`` penalises."""
        if "negatives" not in batch:
            raise CrossRecError(f"{type(self).__name__} needs sampled negatives", "set num_negatives >= 1 in the DataModule")
        u = self.user_vectors(batch["users"])
        pos = self.item_vectors(batch["items"])
        neg = self.item_vectors(batch["negatives"])  # [B, k, d]
        pos_logit = (u * pos).sum(-1)
        neg_logit = (u.unsqueeze(1) * neg).sum(-1)
        rows = [u, pos, neg]
        if self.item_bias is not None:
            b_pos, b_neg = self.item_biases(batch["items"]), self.item_biases(batch["negatives"])
            pos_logit, neg_logit = pos_logit + b_pos, neg_logit + b_neg
            rows += [b_pos, b_neg]
        return pos_logit, neg_logit, rows

    def loss(self, batch):
        pos_logit, neg_logit, rows = self._sampled(batch)
        logits = torch.cat([pos_logit, neg_logit.reshape(-1)])
        labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit.reshape(-1))])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss + self._reg(*rows)

    def _reg(self, *tensors) -> torch.Tensor:
        if not self.l2_reg:
            return torch.zeros((), device=tensors[0].device)
        n = tensors[0].shape[0]
        return self.l2_reg * sum(t.square().sum() for t in tensors) / n


class BPRMF(MF):
    """BPR-MF: maximise log sigmoid(score(u, i) - score(u, j)) for observed i and sampled j
    (with ``item_bias``, the difference includes ``b_i - b_j``)."""

    def loss(self, batch):
        pos_logit, neg_logit, rows = self._sampled(batch)
        diff = pos_logit.unsqueeze(1) - neg_logit
        return -F.logsigmoid(diff).mean() + self._reg(*rows)
