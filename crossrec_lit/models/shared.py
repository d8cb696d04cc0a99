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
With ``item_bias=True`` each store's score gains a learned item bias, ``<p_u, q_i> + c_i`` in the
source and ``<p_u, r_j> + b_j`` in the target (the BPR differences gain ``c_i - c_j`` and
``b_i - b_j``, and the L2 term the bias rows of the batch).

Why it transfers: a cold-start user (no target training data) still has a vector, learned from
their source purchases alone, and warm shared users tie the two item spaces together, so that
vector ranks target items by the taste the source revealed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule
from crossrec_lit.models.mf import FactorModel, check_item_bias, make_bias


class SharedUserMF(CrossDomainModule, FactorModel):
    """Joint BPR-MF over two stores with one shared user table (see the module docstring).

    Train it with a :class:`~crossrec_lit.data.CrossDomainDataModule` in ``phase="both"`` (a
    ``target`` or ``source`` phase trains that side only). :meth:`full_scores` ranks the target
    catalogue by ``<p_u, r_j>`` (``+ b_j`` with ``item_bias``).

    Args:
        num_users: the shared user index space (both stores).
        num_items: target catalogue size (ranked in evaluation).
        num_source_items: source catalogue size.
        embedding_dim: size of the user and item vectors.
        l2_reg: penalty on the embedding rows each batch uses (works with sparse optimisers),
            item bias rows included.
        source_weight: lambda in ``lambda * L_source + L_target`` (>= 0; 0 ignores the source);
            :class:`~crossrec_lit.transfer.SourceWeightSchedule` may change it per epoch.
        item_bias: learn a scalar bias per item in each store (zero at the start): ``b_j`` is
            added to the target scores (training, ``score`` and ``full_scores``), ``c_i`` to the
            source training scores. Off by default (no parameters, so older checkpoints load).
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (lr, optimizer, ks, ...).

    Parameters: ``user_emb`` (shared), ``source_item_emb``, ``item_emb`` (target); with
    ``item_bias``: ``source_item_bias``, ``item_bias`` (target), each ``[n, 1]``.
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
        item_bias: bool = False,
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, source_weight=source_weight, **kwargs)
        if int(embedding_dim) < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32 or 64")
        if l2_reg < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 (off) or a small value such as 1e-4")
        item_bias = check_item_bias(item_bias)
        self.save_hyperparameters()
        self.embedding_dim = int(embedding_dim)
        self.l2_reg = float(l2_reg)
        self.user_emb = self.make_embedding(self.num_users, self.embedding_dim)
        self.source_item_emb = self.make_embedding(self.num_source_items, self.embedding_dim)
        self.item_emb = self.make_embedding(self.num_items, self.embedding_dim)
        # The source store gets its bias too: without one, BPR can favour popular source items
        # only through a component that every shared user vector carries, and that component
        # (learned from the source, and all a cold user's vector is made of) then enters every
        # target score as well. With c_i holding source popularity, the shared vectors keep taste.
        self.source_item_bias = make_bias(self, self.num_source_items) if item_bias else None
        self.item_bias = make_bias(self, self.num_items) if item_bias else None

    # ------------------------------------------------------------------ factors
    def user_vectors(self, users):
        return self.user_emb(users)

    def item_vectors(self, items=None):
        return self.item_emb.weight if items is None else self.item_emb(items)

    # ------------------------------------------------------------------ losses
    def _bpr(self, batch: dict, items: torch.nn.Embedding, biases: torch.nn.Embedding | None, store: str) -> torch.Tensor:
        if "negatives" not in batch:
            raise CrossRecError(f"SharedUserMF needs sampled negatives in {store} batches", "set num_negatives >= 1 in the DataModule")
        u = self.user_emb(batch["users"])
        pos = items(batch["items"])
        neg = items(batch["negatives"])  # [B, k, d]
        diff = (u * pos).sum(-1, keepdim=True) - (u.unsqueeze(1) * neg).sum(-1)
        rows = [u, pos, neg]
        if biases is not None:
            b_pos, b_neg = biases(batch["items"]), biases(batch["negatives"]).squeeze(-1)  # [B, 1], [B, k]
            diff = diff + (b_pos - b_neg)
            rows += [b_pos, b_neg]
        loss = -F.logsigmoid(diff).mean()
        if self.l2_reg:
            loss = loss + self.l2_reg * sum(r.square().sum() for r in rows) / u.shape[0]
        return loss

    def source_loss(self, batch):
        return self._bpr(batch, self.source_item_emb, self.source_item_bias, "source")

    def target_loss(self, batch):
        return self._bpr(batch, self.item_emb, self.item_bias, "target")
