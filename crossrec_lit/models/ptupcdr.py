"""PTUPCDR (Zhu et al., WSDM 2022, "Personalized Transfer of User Preferences for Cross-domain
Recommendation").

EMCDR maps every user with one common bridge; PTUPCDR gives each user a personal bridge:

* a **characteristic encoder** pools the user's source-store history: attention weights
  ``a_j = softmax_j(w^T relu(W e_j))`` over the source item vectors ``e_j`` of the user's (up to
  ``max_len`` most recent) source training items, ``p_u = sum_j a_j e_j``;
* a **meta network** ``h`` (a 2-layer MLP, ReLU) turns ``p_u`` into a bridge matrix
  ``W_u = h(p_u)`` (``d x d``; with ``bridge_rank=r`` a low-rank ``A_u B_u``, ``d x r`` times
  ``r x d``, so the meta network outputs ``2 d r`` numbers instead of ``d^2``);
* the **transferred user vector** is ``s_u W_u`` (``s_u`` the frozen source user vector).

Training is *task-oriented* (phase ``overlap``): the transferred vector of each overlap user
must do the target task on that user's target training interactions, with the target item
vectors of a target MF trained first (phase ``target``) and frozen by default (the reference code
optimises only the meta network in this stage). The paper's task is rating prediction (squared
error); this package is implicit-feedback first, so with sampled negatives the task loss is its
analogue, BPR: ``-log sigmoid(<s_u W_u, v_i> - <s_u W_u, v_j>)``. When batches carry ``ratings``
(``keep_ratings=True``, ``num_negatives=0``), the paper's squared error ``(<., v_i> - r_ui)^2``
is used instead, in both phases. With ``item_bias=True`` the target item biases ``b_j`` learned
in the target phase enter the overlap task's scores too (``<s_u W_u, v_i> + b_i``; in BPR the
difference gains ``b_i - b_j``), so the bridges learn the part of the target score that
popularity does not explain, the same score that ranks cold users in evaluation.

Source weights, freezing and scoring are as in :class:`~crossrec_lit.models.emcdr.EMCDR`
(``LoadSourceWeights(ckpt, mapping={"user_emb": "source_user_emb", "item_emb":
"source_item_emb"})``; the model freezes the source tables itself; cold users get the transferred
vector, warm users their target vector, ``map_all_users=True`` transfers for everyone).
Recommended schedule: ``PhaseSchedule({0: "target", E: "overlap"})`` with
``Trainer(reload_dataloaders_every_n_epochs=1)``, E as for a target-only BPR-MF, then 10-30
overlap epochs (watch validation: under ``split="cold_start"`` it ranks for cold users).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.emcdr import SourceMappingModule, bpr_loss


class PTUPCDR(SourceMappingModule):
    """Personalised bridges from a meta network over each user's source history.

    Args:
        num_users, num_items, num_source_items: from the CrossDomainDataModule.
        embedding_dim: must equal the source BPRMF's.
        max_len: source history length kept per user (most recent first; a persistent buffer
            of ``num_users x max_len`` indices filled in ``bind_data``).
        meta_dim: hidden size of the meta network (the reference code uses 50).
        bridge_rank: None for a full ``d x d`` bridge (the paper), or ``r`` for a rank-``r``
            factorisation (cheaper for large ``d``).
        train_target_items: also update the target item vectors (and item biases) in the overlap
            phase (default False: they stay as the target MF left them, as in the reference code).
        map_all_users, l2_reg, item_bias, ``**kwargs``: see
            :class:`~crossrec_lit.models.emcdr.SourceMappingModule`.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        *,
        embedding_dim: int = 64,
        max_len: int = 50,
        meta_dim: int = 50,
        bridge_rank: int | None = None,
        train_target_items: bool = False,
        map_all_users: bool = False,
        l2_reg: float = 0.0,
        item_bias: bool = False,
        **kwargs,
    ):
        super().__init__(
            num_users, num_items, num_source_items, embedding_dim=embedding_dim, l2_reg=l2_reg, map_all_users=map_all_users, item_bias=item_bias, **kwargs
        )
        if int(max_len) < 1 or int(meta_dim) < 1:
            raise CrossRecError(f"max_len={max_len} and meta_dim={meta_dim} must be >= 1", "use e.g. max_len=50, meta_dim=50")
        if bridge_rank is not None and not 1 <= int(bridge_rank) <= int(embedding_dim):
            raise CrossRecError(f"bridge_rank must be in 1..{embedding_dim} or None, got {bridge_rank}", "use None (full bridge) or a small rank such as 8")
        self.save_hyperparameters()
        d = self.embedding_dim
        self.max_len = int(max_len)
        self.bridge_rank = None if bridge_rank is None else int(bridge_rank)
        self.train_target_items = bool(train_target_items)
        # characteristic encoder: one attention logit per history item
        self.attention = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1, bias=False))
        out = d * d if self.bridge_rank is None else 2 * d * self.bridge_rank
        self.meta = nn.Sequential(nn.Linear(d, int(meta_dim)), nn.ReLU(), nn.Linear(int(meta_dim), out))
        # each user's most recent source training items, -1 padded (filled in bind_data)
        self.register_buffer("source_history", torch.full((self.num_users, self.max_len), -1, dtype=torch.long))

    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        self.source_history.copy_(self.histories(datamodule, datamodule.source_domain, self.max_len))

    # ------------------------------------------------------------------ transfer
    def characteristics(self, users: torch.Tensor) -> torch.Tensor:
        """[B, d] attention-pooled source item vectors of ``users``' histories (0 for an empty history)."""
        history = self.source_history[users]
        present = history >= 0
        items = self.source_item_emb(history.clamp(min=0))  # [B, L, d]
        logits = self.attention(items).squeeze(-1)
        logits = logits.masked_fill(~present, torch.finfo(logits.dtype).min)
        weights = torch.softmax(logits, dim=-1) * present  # an empty history gets all-zero weights
        return (weights.unsqueeze(-1) * items).sum(1)

    def bridges(self, users: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The personal bridge of each user: [B, d, d], or (A [B, d, r], B [B, r, d]) when low-rank."""
        raw = self.meta(self.characteristics(users))
        d = self.embedding_dim
        if self.bridge_rank is None:
            return raw.view(-1, d, d)
        r = self.bridge_rank
        return raw[:, : d * r].view(-1, d, r), raw[:, d * r :].view(-1, r, d)

    def transferred_vectors(self, users):
        shape = users.shape
        unique, inverse = torch.unique(users.reshape(-1), return_inverse=True)
        source = self.source_user_emb(unique).unsqueeze(1)  # [U, 1, d]
        bridge = self.bridges(unique)
        if isinstance(bridge, tuple):
            out = torch.bmm(torch.bmm(source, bridge[0]), bridge[1])
        else:
            out = torch.bmm(source, bridge)
        return out.squeeze(1)[inverse].reshape(*shape, self.embedding_dim)

    # ------------------------------------------------------------------ task-oriented meta training
    def overlap_loss(self, batch: dict) -> torch.Tensor:
        """The target task, solved by each overlap user's transferred vector: squared error
        against ``ratings`` when the batch has them, else BPR against its negatives."""
        u = self.transferred_vectors(batch["users"])
        pos = self._task_rows(self.item_emb(batch["items"]))
        b_pos = self._task_rows(self.item_biases(batch["items"]))
        if "ratings" in batch:
            pred = (u * pos).sum(-1) + self.target_rating_mean
            if b_pos is not None:
                pred = pred + b_pos
            return F.mse_loss(pred, batch["ratings"].to(u.dtype))
        if "negatives" not in batch:
            raise CrossRecError(
                "PTUPCDR's overlap batches need sampled negatives (ranking task) or ratings (rating task)",
                "set num_negatives >= 1, or keep_ratings=True for the rating task",
            )
        neg = self._task_rows(self.item_emb(batch["negatives"]))
        return bpr_loss(u, pos, neg, b_pos, self._task_rows(self.item_biases(batch["negatives"])))

    def _task_rows(self, rows: torch.Tensor | None) -> torch.Tensor | None:
        """Target item vectors or biases as the overlap task uses them: fixed unless ``train_target_items``."""
        return rows if rows is None or self.train_target_items else rows.detach()


__all__ = ["PTUPCDR"]
