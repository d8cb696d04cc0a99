"""CoNet: collaborative cross networks (Hu, Zhang & Yang, CIKM 2018).

Two MLP towers, one per store, each scoring a (user, item) pair from the concatenation of a user
vector (ONE embedding table shared by both stores) and the item's vector (one table per store).
Cross connection units join the towers: every hidden layer ``l + 1`` of each tower receives

    a_own^{l+1} = relu(W_own^l a_own^l + b_own^l + H^l a_other^l)

with the transfer matrices ``H^l`` shared by the two directions, as in the paper (``l = 0`` is the
embedding layer, so the first hidden layer is crossed too). ``cross_l1`` adds the L1 penalty on
the ``H^l`` of the paper's sparse variant (SCoNet). Each tower ends in a logit; the loss per store
is pointwise binary cross-entropy with the DataModule's sampled negatives, and the joint objective
``source_weight * source_loss + target_loss`` comes from :class:`CrossDomainModule`.

What the other tower is fed
---------------------------
In the paper both towers process a (user, source item, target item) triple of one user at once.
Batches here are per store (a target batch has no source item, and ranking the target catalogue
has none either), so each forward pass scores ONE store and feeds the other tower with the user's
vector and a per-user context item, the same at training and at scoring time:

* ``other_item="zero"`` (default): a zero item vector, so the other tower reads the user alone
  and passes its features of the user through ``H``. A target score then depends on (user,
  target item) only, and a cold-start user is scored from the shared user vector that the
  source store trained.
* ``other_item="history"``: the mean vector of the user's most recent ``history_len`` training
  items in the other store (zero for a user with none): the closest deterministic stand-in for
  the paper's pairing with an item the user actually chose there, carrying the user's source
  behaviour into the target tower through ``H``. The histories are persistent buffers filled by
  :meth:`bind_data`, so a model loaded from a checkpoint needs no DataModule to score.

``zero`` is the default because it was as good or better on cold-start users in almost every
measurement (synthetic stores, 1500 users, seeds 0-2: NDCG@10 0.240/0.219/0.225 against
0.231/0.215/0.216 with ``history`` after 10 epochs; ``history`` was ahead once, on one seed at
15 epochs) and trains about 25% faster.

Either way pair scores, full ranking and training agree.

Full ranking
------------
Every (user, item) pair needs its own pass through both towers (the cross connections mix item
and user nonlinearly), so :meth:`full_scores` is the expensive part of this model. It is
vectorised: the first layer's user- and item-dependent parts are computed once per user and per
item and added by broadcasting; the deeper layers run on blocks of users x items holding at most
``score_chunk`` hidden activations (pairs x the summed widths of both towers), and the other
tower's last hidden layer, which no target logit uses, is skipped. Chunking changes memory only,
never the scores (every operation is per pair).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule

STORES = ("source", "target")
OTHER_ITEMS = ("history", "zero")


def _other(store: str) -> str:
    return "target" if store == "source" else "source"


class CoNet(CrossDomainModule):
    """Collaborative cross networks: two MLP towers joined by shared cross connections.

    Args:
        num_users / num_items / num_source_items: linked from a CrossDomainDataModule
            (``num_items`` is the target catalogue).
        embedding_dim: size of the user and item vectors (the towers' input is 2 x this).
        hidden: widths of the hidden layers, the same for both towers (e.g. ``[64, 32]``).
        cross_l1: weight of the L1 penalty on the transfer matrices H (SCoNet); 0 = CoNet.
        other_item: what the other store's tower is fed with the user: ``zero`` (a zero item
            vector) or ``history`` (the mean of the user's recent training items there); see the
            module docstring.
        history_len: how many recent items per user and store the ``history`` context averages.
        score_chunk: the most hidden activations :meth:`full_scores` holds at once (pairs x
            2 x sum(hidden)). The default, about 4 MB of float32 per block, was measured fastest on
            one CPU thread (blocks that stay in cache); 50M was 2-4x slower.
        **kwargs: see :class:`CrossDomainModule` (source_weight, lr, optimizer, weight_decay, ks).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        embedding_dim: int = 32,
        hidden: Sequence[int] = (64, 32),
        cross_l1: float = 0.0,
        other_item: str = "zero",
        history_len: int = 20,
        score_chunk: int = 1_000_000,
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, **kwargs)
        hidden = [int(h) for h in hidden]
        if embedding_dim < 1:
            raise CrossRecError(f"embedding_dim must be >= 1, got {embedding_dim}", "use e.g. 32")
        if not hidden or min(hidden) < 1:
            raise CrossRecError(f"hidden must be one or more positive widths, got {hidden}", "use e.g. hidden=[64, 32]")
        if cross_l1 < 0:
            raise CrossRecError(f"cross_l1 must be >= 0, got {cross_l1}", "use 0 (CoNet) or a small value such as 1e-4 (SCoNet)")
        if other_item not in OTHER_ITEMS:
            raise CrossRecError(f"unknown other_item {other_item!r}", f"use one of {list(OTHER_ITEMS)}")
        if history_len < 1:
            raise CrossRecError(f"history_len must be >= 1, got {history_len}", "use e.g. 20")
        if score_chunk < 1:
            raise CrossRecError(f"score_chunk must be >= 1, got {score_chunk}", "use e.g. 1_000_000 activations")
        self.save_hyperparameters()
        self.embedding_dim = int(embedding_dim)
        self.hidden = hidden
        self.cross_l1 = float(cross_l1)
        self.other_item = other_item
        self.score_chunk = int(score_chunk)
        d = self.embedding_dim
        widths = [2 * d, *hidden]
        self.user_emb = self.make_embedding(self.num_users, d)
        self.item_emb = nn.ModuleDict({"source": self.make_embedding(self.num_source_items, d), "target": self.make_embedding(self.num_items, d)})
        self.layers = nn.ModuleDict({s: nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(len(hidden))) for s in STORES})
        # H^l: shared by both directions (source -> target and target -> source), as in the paper
        self.cross = nn.ModuleList(nn.Linear(widths[i], widths[i + 1], bias=False) for i in range(len(hidden)))
        self.out = nn.ModuleDict({s: nn.Linear(hidden[-1], 1) for s in STORES})
        if other_item == "history":  # only then: [num_users, history_len] per store in every checkpoint
            for s in STORES:
                self.register_buffer(f"{s}_history", torch.full((self.num_users, int(history_len)), -1, dtype=torch.long))

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        if self.other_item != "history":
            return
        n = self.source_history.shape[1]
        self.source_history.copy_(self.histories(datamodule, datamodule.source_domain, n))
        self.target_history.copy_(self.histories(datamodule, datamodule.target_domain, n))

    def context_vectors(self, users: torch.Tensor, store: str) -> torch.Tensor:
        """[..., d] the item input of ``store``'s tower when the OTHER store is being scored."""
        if self.other_item == "zero":
            return self.user_emb.weight.new_zeros((*users.shape, self.embedding_dim))
        hist = getattr(self, f"{store}_history")[users]  # [..., L], -1 padded
        mask = (hist >= 0).unsqueeze(-1)
        vecs = self.item_emb[store](hist.clamp(min=0)) * mask
        return vecs.sum(-2) / mask.sum(-2).clamp(min=1)

    # ------------------------------------------------------------------ the towers
    def _hidden0_parts(self, store: str, user: torch.Tensor, own_item: torch.Tensor, other_item: torch.Tensor):
        """Layer-1 pre-activations of both towers as (user part, own-item part, other-item part).

        own tower:   W_own [u; i_own] + b + H [u; i_other]
        other tower: W_oth [u; i_other] + b + H [u; i_own]
        """
        d = self.embedding_dim
        w_own, w_oth, h = self.layers[store][0], self.layers[_other(store)][0], self.cross[0].weight
        own = (F.linear(user, w_own.weight[:, :d] + h[:, :d], w_own.bias), F.linear(own_item, w_own.weight[:, d:]), F.linear(other_item, h[:, d:]))
        oth = (F.linear(user, w_oth.weight[:, :d] + h[:, :d], w_oth.bias), F.linear(other_item, w_oth.weight[:, d:]), F.linear(own_item, h[:, d:]))
        return own, oth

    def _deep(self, store: str, a_own: torch.Tensor, a_oth: torch.Tensor) -> torch.Tensor:
        """From the first hidden layers of both towers to ``store``'s logits."""
        own_layers, oth_layers = self.layers[store], self.layers[_other(store)]
        last = len(self.hidden) - 1
        for l in range(1, len(self.hidden)):
            h = self.cross[l].weight
            # in place on fresh products (autograd-safe): one pass fewer over the block per layer
            new_own = _linear(a_own, own_layers[l].weight, own_layers[l].bias).add_(_linear(a_oth, h)).relu_()
            if l < last:  # the other tower's last hidden layer feeds no logit of this store
                a_oth = _linear(a_oth, oth_layers[l].weight, oth_layers[l].bias).add_(_linear(a_own, h)).relu_()
            a_own = new_own
        out = self.out[store]
        # a multiply-and-sum rather than a [*, h] x [h, 1] product: BLAS's matrix-vector kernels
        # round differently depending on the row count, which would make scores depend on chunking
        return (a_own * out.weight[0]).sum(-1) + out.bias[0]

    def logits(self, store: str, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of aligned (user, ``store`` item) pairs; broadcastable shapes."""
        # user-side inputs stay at the users' shape (e.g. [B, 1] against [B, 1 + k] items) and
        # broadcast in the first layer's sum: the context of a user is gathered once, not per item
        u = self.user_emb(users)
        own_item = self.item_emb[store](items)
        other_item = self.context_vectors(users, _other(store))
        (ou, oi, ox), (tu, ti, tx) = self._hidden0_parts(store, u, own_item, other_item)
        # summed in the order full_store_scores uses (user parts first), so the two agree exactly
        return self._deep(store, torch.relu(ou + ox + oi), torch.relu(tu + ti + tx))

    # ------------------------------------------------------------------ scoring
    def score(self, users, items):
        return self.logits("target", users, items)

    def full_scores(self, users):
        return self.full_store_scores(users, "target")

    def full_store_scores(self, users: torch.Tensor, store: str = "target") -> torch.Tensor:
        """[B, n_items(store)] logits of every item of ``store``, in chunks of at most
        ``score_chunk`` hidden activations."""
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        item_w = self.item_emb[store].weight
        n_users, n_items = users.shape[0], item_w.shape[0]
        u = self.user_emb(users)
        ctx = self.context_vectors(users, _other(store))
        # per-user parts [B, h1] and per-item parts [N, h1] of layer 1, computed once
        (ou, oi, ox), (tu, ti, tx) = self._hidden0_parts(store, u, item_w, ctx)
        own_user, oth_user = ou + ox, tu + ti  # the other tower's item input is per user
        per_pair = 2 * sum(self.hidden)
        pairs = max(1, self.score_chunk // per_pair)
        item_step = min(n_items, pairs)
        user_step = max(1, pairs // item_step)
        out = u.new_empty((n_users, n_items))
        for b0 in range(0, n_users, user_step):
            b1 = min(b0 + user_step, n_users)
            for i0 in range(0, n_items, item_step):
                i1 = min(i0 + item_step, n_items)
                a_own = torch.add(own_user[b0:b1, None, :], oi[None, i0:i1, :]).relu_()
                a_oth = torch.add(oth_user[b0:b1, None, :], tx[None, i0:i1, :]).relu_()
                out[b0:b1, i0:i1] = self._deep(store, a_own, a_oth)
        return out

    # ------------------------------------------------------------------ training
    def _store_loss(self, batch: dict, store: str) -> torch.Tensor:
        if "negatives" not in batch:
            raise CrossRecError("CoNet needs sampled negatives", "set num_negatives >= 1 in the DataModule")
        items = torch.cat([batch["items"].unsqueeze(1), batch["negatives"]], dim=1)  # [B, 1 + k]
        logits = self.logits(store, batch["users"].unsqueeze(1), items)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)

    def source_loss(self, batch):
        return self._store_loss(batch, "source")

    def target_loss(self, batch):
        return self._store_loss(batch, "target")

    def cross_penalty(self) -> torch.Tensor:
        """L1 norm of the transfer matrices H (SCoNet's sparsity term), times ``cross_l1``."""
        if not self.cross_l1:
            return self.cross[0].weight.new_zeros(())
        return self.cross_l1 * sum(h.weight.abs().sum() for h in self.cross)

    def joint_loss(self, batch):
        total, parts = super().joint_loss(batch)
        # once per step, whatever parts the batch holds and whatever source_weight is
        return total + self.cross_penalty(), parts


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` whose result per row does not depend on how many rows there are.

    MKL switches to a matrix-vector kernel, which sums in another order, below 4 rows (measured),
    so a tiny block of pairs would score differently from the same pairs in a large block; such
    blocks are padded to 4 rows.
    """
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if 0 < rows < _MIN_GEMM_ROWS:
        flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, _MIN_GEMM_ROWS - rows))
        return F.linear(flat, weight, bias)[:rows].reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


_MIN_GEMM_ROWS = 4

__all__ = ["CoNet"]
