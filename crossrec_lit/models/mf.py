"""Matrix factorisation: the seed's MF (sigmoid + binary cross-entropy) and BPR-MF.

Both score a (user, item) pair by the dot product of their embeddings. They differ only in the
objective: the seed's MF treats each observed pair as label 1 and each sampled negative as label
0 (pointwise BCE on sigmoid scores); BPR (Rendle et al., UAI 2009) asks each observed item to
score above a sampled negative (pairwise). BPR is the stronger ranker and the usual baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule


class FactorModel(RecommenderModule):
    """A recommender whose score is ``<user vector, item vector>``.

    Subclasses provide :meth:`user_vectors` and :meth:`item_vectors`; pairwise and full-ranking
    scores follow, so every factor model ranks the same way.
    """

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of ``items`` (all items when None)."""
        raise NotImplementedError

    def score(self, users, items):
        return (self.user_vectors(users) * self.item_vectors(items)).sum(-1)

    def full_scores(self, users):
        return self.user_vectors(users) @ self.item_vectors().T


class MF(FactorModel):
    """The seed's matrix factorisation: embeddings, dot product, sigmoid, BCE with sampled negatives.

    Args:
        embedding_dim: size of the user and item vectors.
        l2_reg: penalty on the embeddings used in each batch (applied to the rows the batch
            touches, so it works with sparse optimisers too).
        **kwargs: see :class:`RecommenderModule` (lr, optimizer, weight_decay, ks).
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, l2_reg: float = 0.0, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        if embedding_dim < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32 or 64")
        self.save_hyperparameters()
        self.embedding_dim = embedding_dim
        self.l2_reg = float(l2_reg)
        self.user_emb = self.make_embedding(self.num_users, embedding_dim)
        self.item_emb = self.make_embedding(self.num_items, embedding_dim)

    def user_vectors(self, users):
        return self.user_emb(users)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    def loss(self, batch):
        if "negatives" not in batch:
            raise CrossRecError(f"{type(self).__name__} needs sampled negatives", "set num_negatives >= 1 in the DataModule")
        u = self.user_vectors(batch["users"])
        pos = self.item_vectors(batch["items"])
        neg = self.item_vectors(batch["negatives"])  # [B, k, d]
        pos_logit = (u * pos).sum(-1)
        neg_logit = (u.unsqueeze(1) * neg).sum(-1)
        logits = torch.cat([pos_logit, neg_logit.reshape(-1)])
        labels = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit.reshape(-1))])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss + self._reg(u, pos, neg)

    def _reg(self, *tensors) -> torch.Tensor:
        if not self.l2_reg:
            return torch.zeros((), device=tensors[0].device)
        n = tensors[0].shape[0]
        return self.l2_reg * sum(t.square().sum() for t in tensors) / n


class BPRMF(MF):
    """BPR-MF: maximise log sigmoid(score(u, i) - score(u, j)) for observed i and sampled j."""

    def loss(self, batch):
        if "negatives" not in batch:
            raise CrossRecError("BPRMF needs sampled negatives", "set num_negatives >= 1 in the DataModule")
        u = self.user_vectors(batch["users"])
        pos = self.item_vectors(batch["items"])
        neg = self.item_vectors(batch["negatives"])
        diff = (u * pos).sum(-1, keepdim=True) - (u.unsqueeze(1) * neg).sum(-1)
        return -F.logsigmoid(diff).mean() + self._reg(u, pos, neg)
