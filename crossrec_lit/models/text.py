"""A text-based two-tower recommender: item text from a frozen pretrained encoder, adapted, pooled.

Idea (UniSRec: Hou et al., "Towards Universal Sequence Representation Learning for Recommender
Systems", KDD 2022): items of different stores share no ids, but they share *language*. Encode
every item's text once with a pretrained sentence model (all-MiniLM-L6-v2, 384-d, by default),
keep those vectors frozen (the pretrained model is a feature extractor), and learn only a small
**adaptor** that maps them to the recommendation space. Because the adaptor reads text, not ids,
what it learns in one store applies to the items of another store, and to items nobody has bought
yet. UniSRec's adaptor is a mixture of experts over "parametric whitening" layers,
``sum_k g_k(x) (x - b_k) W_k`` with a softmax gate ``g``; ``adaptor="moe"`` is that (without the
gate noise); ``"linear"`` is one whitening-free linear map and ``"mlp"`` a two-layer MLP.

The towers:

* **item tower**: ``v_i = adaptor(text_i)`` (plus a trainable id vector with ``hybrid=True``);
* **user tower**: the pooled adapted vectors of the user's most recent ``history_len`` training
  items (``pooling="mean"``, or ``"attention"``: a softmax over ``w^T tanh(W v_j)``), plus a
  trainable user-id vector with ``hybrid=True``.

There are no per-user parameters unless ``hybrid``: a user IS their history, so a user the model
never trained on (a store without shared users, a cold-start user, a new catalogue) is
represented as soon as they have a history in either store.

Training (``source_loss`` on source batches, ``target_loss`` on target batches, ``overlap``
batches like target batches): the user vector is the pooled history **in the store of the
batch**, with every history entry equal to the batch's positive item masked out (otherwise the
model learns to find the item in the history, a shortcut that does not exist at test time).
The loss is chosen by ``loss``:

* ``"bpr"`` (default): ``-log sigmoid((s(u, i) - s(u, j)) / temperature)`` over the batch's
  sampled negatives (uniform over the store's items; needs ``num_negatives >= 1``). Uniform
  negatives leave popularity alone, which is what a popularity prior needs, and it is the
  cheapest: about 30-50 ms CPU per batch of 2048 on Amazon Toys.
* ``"softmax"``: a sampled softmax (cross-entropy at ``temperature``) over the batch's distinct
  candidates, every positive and sampled negative of the batch (in-batch negatives, as in UniSRec's
  contrastive task), each once, so repeated items need no masking. With ``logq_correction`` (default)
  the logits are corrected by the log of how often each candidate is expected in a batch (Yi et al.,
  RecSys 2019), else in-batch negatives push popular items down. Works with ``num_negatives=0``.
  It costs 3-5x a BPR step at batch 2048 (the [B, C] logits), and measured no better here.

Optional **popularity prior** (``popularity_prior=True``): ``+ beta * log(1 + training count)``
in the logits, ``beta`` learned (from 1). In zero-shot transfer it is learned on the source and
applied with the target's training counts, so no parameter is trained on the target, but the
target's interaction counts are used. On the synthetic stores text alone cannot beat Popularity
(an item's text names only 2 of its 8 latent topics), text + prior does, and only when the text
is informative. Leave it off for new-item cold start: unseen items have count 0.

With ``normalize=True`` (default) user and item vectors are L2-normalised, so scores are cosines
(the temperature then sets how peaked the softmax is; 0.1 works well).

Scoring target items: ``full_scores(users) = U @ V^T`` with the target item vectors computed once
per call and the user vectors from the history chosen by ``history``: ``"target"`` (the user's
target training history), ``"source"`` (source history), ``"both"`` (the two pooled together), or
``"auto"`` (default): the target history when the user has one (``has_target``), else the source
history (a cold-start user in the target store).

Transfer, all through Lightning:

1. **zero-shot**: train on the source only (``CrossDomainDataModule(phase="source")`` or
   ``PhaseSchedule({0: "source"})``) and evaluate on the target: the adaptor carries over because
   items of both stores go through it.
2. **fine-tune**: ``PhaseSchedule({0: "source", E: "target"})`` (all weights), or in a second fit
   on ``phase="target"`` with ``FreezeUnfreeze(["pooler"])`` (plus ``"user_id"``/``"item_id"``/
   ``"source_item_id"`` when hybrid) so that only the adaptor adapts, UniSRec's inductive
   fine-tuning. For cold-start users, fine-tune on the cross-store task instead:
   ``PhaseSchedule({0: "source", E: "overlap"})`` with ``overlap_history="source"`` (shared users'
   source histories must predict their target items).
3. **target only**: ``phase="target"``; with ``split="new_items"`` the model ranks items that have
   no interactions at all by their text. Items without training interactions are never used as
   negatives (the sampler draws from the whole catalogue, which in reality did not yet hold them).

``min_overlap=0`` data (no shared user) is fine: users are then represented by their own store's
history. What ``bind_data`` takes from the DataModule (both stores' text vectors, both histories,
which users are warm, item training counts) lives in persistent buffers, so a checkpoint scores
without data or text encoder.

Recommended settings (measured on the synthetic stores, see ``tests/test_models_text.py``, and on
Amazon Beauty -> Toys with ``split="cold_start"``, 20% of the shared users cold, 415 test users):

* new items: ``phase="target"``, ``popularity_prior=False`` (unseen items have count 0),
  ``hybrid=False`` (with ``hybrid``, trained items get an id bonus that new items lack);
* cold-start users: train the cross-store task, ``PhaseSchedule({0: "overlap"})`` (or
  ``{0: "source", E: "overlap"}``) with ``overlap_history="source"``, ``adaptor="moe"``,
  ``loss="softmax"``: Beauty -> Toys NDCG@10 0.031 / 0.037 (seeds 0 / 1) against Popularity's
  0.014 / 0.017. Zero-shot from the source alone is at random level on those stores (0.0004), and
  with ``popularity_prior=True`` only about as good as Popularity (0.015 / 0.011);
* no shared users, warm target users: train on the target (``phase="target"`` or ``"both"``),
  ``hybrid=True`` when the target has enough interactions; zero-shot from the source (with
  ``popularity_prior=True``) only when it has none.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.cross_domain import CrossDomainModule

ADAPTORS = ("mlp", "moe", "linear")
POOLINGS = ("mean", "attention")
HISTORIES = ("auto", "target", "source", "both")
LOSSES = ("softmax", "bpr")
OVERLAP_HISTORIES = ("target", "source", "both")
MINILM_DIM = 384


def default_text_cache() -> Path:
    """Where text embeddings are cached by default: ``$CROSSREC_CACHE`` or ``~/.cache/crossrec_lit``."""
    return Path(os.environ.get("CROSSREC_CACHE") or "~/.cache/crossrec_lit").expanduser()


# ====================================================================== adaptors
class MoEAdaptor(nn.Module):
    """UniSRec's MoE adaptor: ``sum_k softmax(x G)_k (x - b_k) W_k`` over ``n_experts`` parametric
    whitening experts, computed as one matrix product for all experts; dropout on the output."""

    def __init__(self, in_dim: int, out_dim: int, n_experts: int, dropout: float):
        super().__init__()
        self.n_experts, self.out_dim = int(n_experts), int(out_dim)
        self.bias = nn.Parameter(torch.zeros(self.n_experts, in_dim))
        weight = torch.empty(self.n_experts, in_dim, out_dim)
        for k in range(self.n_experts):
            nn.init.xavier_normal_(weight[k])
        self.weight = nn.Parameter(weight)
        self.gate = nn.Linear(in_dim, self.n_experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # as UniSRec: experts start equally weighted
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d_in = x.shape[-1]
        w = self.weight.permute(1, 0, 2).reshape(d_in, self.n_experts * self.out_dim)
        experts = (x @ w).view(-1, self.n_experts, self.out_dim) - torch.einsum("kd,kde->ke", self.bias, self.weight)
        gates = torch.softmax(self.gate(x), dim=-1)
        return self.dropout((gates.unsqueeze(-1) * experts).sum(1))


def _make_adaptor(kind: str, in_dim: int, out_dim: int, n_experts: int, dropout: float) -> nn.Module:
    # Dropout acts on the adapted (or hidden) vectors, not on the 384-d input: sampling a mask over
    # every text row a step touches cost a quarter of a training step on CPU (measured).
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.Dropout(dropout))
    if kind == "mlp":
        hidden = 2 * out_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
    return MoEAdaptor(in_dim, out_dim, n_experts, dropout)


class MeanPooling(nn.Module):
    """Mean of each user's history rows of ``table``: ``index`` [B, L] with -1 for entries to leave
    out; an empty history gives a zero vector. One ``embedding_bag`` over the present entries only:
    no [B, L, d] tensor is built, and its backward is a scatter of those entries."""

    def forward(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        present = index >= 0
        counts = present.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        return F.embedding_bag(index[present], table, offsets, mode="mean")


class AttentionPooling(nn.Module):
    """Softmax over ``w^T tanh(W v_j)`` of each user's history entries (``index`` [B, L], -1 = left
    out); an empty history gives a zero vector."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))

    def forward(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        present = index >= 0
        vectors = table[index.clamp(min=0)]
        logits = self.score(vectors).squeeze(-1).masked_fill(~present, torch.finfo(vectors.dtype).min)
        weights = torch.softmax(logits, dim=-1) * present
        return (weights.unsqueeze(-1) * vectors).sum(1)


# ====================================================================== the model
class TextTwoTower(CrossDomainModule):
    """Two towers over frozen item-text embeddings; see the module docstring for the design.

    Args:
        num_users, num_items, num_source_items: from the CrossDomainDataModule (``num_items`` is
            the target catalogue, which is ranked).
        embedding_dim: size of the adapted item and user vectors.
        encoder: ``"minilm"`` (all-MiniLM-L6-v2, offline), ``"hashing"`` (hashed TF-IDF over
            words, fitted on both stores' texts; a lexical baseline) or the path of a local
            sentence-transformers model folder.
        text_cache: folder of the :class:`~crossrec_lit.features.EmbeddingCache` (default
            ``$CROSSREC_CACHE`` or ``~/.cache/crossrec_lit``).
        adaptor: ``"mlp"``, ``"moe"`` (UniSRec's mixture of whitening experts) or ``"linear"``.
        n_experts: experts of the MoE adaptor.
        dropout: dropout on the adapted vectors (the MLP's hidden layer) in training; not on the
            384-d input, where sampling the mask cost a quarter of a training step on CPU.
        pooling: ``"mean"`` or ``"attention"`` over the history's adapted item vectors.
        history_len: most recent training items kept per user and store.
        history: which history represents a user when ranking target items: ``"auto"``,
            ``"target"``, ``"source"`` or ``"both"`` (see the module docstring).
        hybrid: add zero-initialised trainable user-id and item-id vectors (``user_id``,
            ``item_id``, ``source_item_id``); the id part of an item without training
            interactions is masked to zero, so unseen items are ranked by text alone.
        temperature: softmax temperature (also divides the BPR score difference).
        l2_reg: penalty on the squared norm of the batch's user and item vectors before
            normalisation (use ``weight_decay`` for the adaptor's weights).
        loss: ``"bpr"`` (sampled negatives) or ``"softmax"`` (sampled softmax over the batch's
            distinct candidates, see the module docstring).
        normalize: L2-normalise user and item vectors (cosine scores).
        hashing_dim: output width of the hashing encoder.
        text_dim: width of the text embeddings; None reads it from the encoder (384 for MiniLM).
            Stored in the checkpoint, so loading never needs the encoder.
        popularity_prior: add ``beta * log(1 + training count)`` to the scores (see above).
        logq_correction: correct the sampled softmax for how candidates are sampled.
        overlap_history: the history that represents a user in ``overlap`` batches: ``"target"``
            (they train like target batches), ``"source"`` (the source history must predict the
            target item: the cross-store task that cold-start users are ranked by) or ``"both"``.
        **kwargs: see :class:`~crossrec_lit.models.CrossDomainModule` (source_weight, lr,
            optimizer, weight_decay, ks).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        *,
        embedding_dim: int = 64,
        encoder: str = "minilm",
        text_cache: str | None = None,
        adaptor: str = "mlp",
        n_experts: int = 4,
        dropout: float = 0.0,
        pooling: str = "mean",
        history_len: int = 50,
        history: str = "auto",
        hybrid: bool = False,
        temperature: float = 0.1,
        l2_reg: float = 0.0,
        loss: str = "bpr",
        normalize: bool = True,
        hashing_dim: int = 512,
        text_dim: int | None = None,
        popularity_prior: bool = False,
        logq_correction: bool = True,
        overlap_history: str = "target",
        **kwargs,
    ):
        super().__init__(num_users, num_items, num_source_items, **kwargs)
        _choice("adaptor", adaptor, ADAPTORS)
        _choice("pooling", pooling, POOLINGS)
        _choice("history", history, HISTORIES)
        _choice("loss", loss, LOSSES)
        _choice("overlap_history", overlap_history, OVERLAP_HISTORIES)
        if not isinstance(encoder, (str, os.PathLike)) or not str(encoder):
            raise CrossRecError(f"encoder must be 'minilm', 'hashing' or a model folder path, got {encoder!r}", "pass encoder='minilm'")
        if int(embedding_dim) < 1 or int(history_len) < 1 or int(n_experts) < 1 or int(hashing_dim) < 2:
            raise CrossRecError(
                f"embedding_dim={embedding_dim}, history_len={history_len}, n_experts={n_experts} must be >= 1 and hashing_dim={hashing_dim} >= 2",
                "use e.g. embedding_dim=64, history_len=50, n_experts=4, hashing_dim=512",
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise CrossRecError(f"dropout must be in [0, 1), got {dropout}", "use e.g. dropout=0.1")
        if not float(temperature) > 0:
            raise CrossRecError(f"temperature must be > 0, got {temperature}", "use e.g. temperature=0.1 (with normalize=True)")
        if float(l2_reg) < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 or a small value such as 1e-4")
        encoder = str(encoder)
        text_dim = int(text_dim) if text_dim is not None else _encoder_dim(encoder, int(hashing_dim))
        self.save_hyperparameters()
        self.hparams["text_dim"] = text_dim  # resolved, so a checkpoint loads without the encoder
        self.embedding_dim, self.text_dim = int(embedding_dim), text_dim
        self.encoder_name, self.text_cache, self.hashing_dim = encoder, text_cache, int(hashing_dim)
        self.adaptor_kind, self.pooling_kind, self.history, self.hybrid = adaptor, pooling, history, bool(hybrid)
        self.history_len, self.temperature, self.l2_reg = int(history_len), float(temperature), float(l2_reg)
        self.loss_kind, self.normalize, self.popularity_prior = loss, bool(normalize), bool(popularity_prior)
        self.logq_correction, self.overlap_history = bool(logq_correction), overlap_history

        d = self.embedding_dim
        self.adaptor = _make_adaptor(adaptor, text_dim, d, int(n_experts), float(dropout))
        self.pooler = AttentionPooling(d) if pooling == "attention" else MeanPooling()
        if self.hybrid:
            self.user_id = self._zero_embedding(self.num_users, d)
            self.item_id = self._zero_embedding(self.num_items, d)
            self.source_item_id = self._zero_embedding(self.num_source_items, d)
        if self.popularity_prior:
            # weight of log(1 + training count) in the logits; learned where the model trains, applied
            # with the counts of the store it ranks
            self.pop_weight = nn.Parameter(torch.ones(()))

        # data-derived state (bind_data): frozen text features, histories, which items were trained
        self.register_buffer("source_text", torch.zeros(self.num_source_items, text_dim))
        self.register_buffer("target_text", torch.zeros(self.num_items, text_dim))
        self.register_buffer("source_history", torch.full((self.num_users, self.history_len), -1, dtype=torch.long))
        self.register_buffer("target_history", torch.full((self.num_users, self.history_len), -1, dtype=torch.long))
        self.register_buffer("source_item_trained", torch.zeros(self.num_source_items, dtype=torch.bool))
        self.register_buffer("target_item_trained", torch.zeros(self.num_items, dtype=torch.bool))
        self.register_buffer("source_item_count", torch.zeros(self.num_source_items))
        self.register_buffer("target_item_count", torch.zeros(self.num_items))
        self.register_buffer("text_bound", torch.zeros((), dtype=torch.bool))

    def _zero_embedding(self, n: int, dim: int) -> nn.Embedding:
        emb = self.make_embedding(n, dim)
        nn.init.zeros_(emb.weight)
        return emb

    # ------------------------------------------------------------------ data
    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)
        sizes = (datamodule.num_users, datamodule.num_source_items, datamodule.num_target_items, datamodule.num_items)
        if sizes != (self.num_users, self.num_source_items, self.num_items, self.num_items):
            raise CrossRecError(
                f"{type(self).__name__} was built for {self.num_users} users, {self.num_source_items} source and {self.num_items} target "
                f"items, but the DataModule has {sizes[0]}, {sizes[1]} and {sizes[2]} (ranking {sizes[3]} {datamodule.eval_domain!r} items)",
                "build the model from this DataModule (dm.model_arguments_for(TextTwoTower)) and evaluate on the target (eval_domain='target')",
            )
        text = datamodule.source.item_text()
        if text is None:
            raise CrossRecError(
                f"{type(self).__name__} needs item text, but {type(datamodule.source).__name__} has none (item_text() is None)",
                "use a data source with item titles or descriptions (AmazonP5, Synthetic, a TableSource with text=...), or an id-based model",
            )
        src, tgt = datamodule.source_domain, datamodule.target_domain
        matrices = self._encode(text, {src: datamodule.source_item_vocab, tgt: datamodule.target_item_vocab})
        for name, m in (("source_text", matrices[src]), ("target_text", matrices[tgt])):
            getattr(self, name).copy_(torch.tensor(m))  # a copy: cached rows may be read-only
        self.source_history.copy_(self.histories(datamodule, src, self.history_len))
        self.target_history.copy_(self.histories(datamodule, tgt, self.history_len))
        idx = datamodule.index
        for store, domain in (("source", src), ("target", tgt)):
            n = getattr(self, f"{store}_item_count").numel()
            counts = torch.bincount(torch.from_numpy(idx.arrays(domain, "train")["items"]), minlength=n)
            getattr(self, f"{store}_item_trained").copy_(counts > 0)
            getattr(self, f"{store}_item_count").copy_(counts.float())
        self.text_bound.fill_(True)

    def _encode(self, text, vocabs) -> dict:
        return encode_item_text(text, vocabs, encoder=self.encoder_name, text_dim=self.text_dim, hashing_dim=self.hashing_dim, text_cache=self.text_cache)

    def _require_bound(self) -> None:
        if not bool(self.text_bound):
            raise CrossRecError(
                f"{type(self).__name__} has no item text yet (bind_data has not run)",
                "train it with trainer.fit(model, datamodule), call model.bind_data(datamodule), or load a trained checkpoint",
            )

    # ------------------------------------------------------------------ towers
    def text_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """Adapted text vectors (normalised when ``normalize``): the text part of the item tower."""
        v = self.adaptor(text)
        return F.normalize(v, dim=-1) if self.normalize else v

    def _adapt_unique(self, text: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(table, local): the adapted vectors of the distinct items of ``index`` (any shape, -1 =
        padding), each adapted once, and ``index`` renumbered into that table (-1 kept)."""
        present = index >= 0
        unique, inverse = torch.unique(index[present], return_inverse=True)
        local = torch.full_like(index, -1)
        local[present] = inverse
        return self.text_vectors(text[unique]), local

    def _pool(self, tables: list[torch.Tensor], indices: list[torch.Tensor]) -> torch.Tensor:
        """Pool history entries that index into several tables (e.g. source and target items)."""
        offsets, total = [], 0
        for t in tables:
            offsets.append(total)
            total += t.shape[0]
        if len(tables) == 1:
            return self.pooler(tables[0], indices[0])
        index = torch.cat([torch.where(i >= 0, i + o, -1) for i, o in zip(indices, offsets)], dim=1)
        return self.pooler(torch.cat(tables), index)

    def _finish(self, vectors: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        if ids is not None:
            vectors = vectors + ids
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def _item_ids(self, store: str, items: torch.Tensor | None) -> torch.Tensor | None:
        """The id part of items (all of the store's items when None); zero for untrained items."""
        if not self.hybrid:
            return None
        table, trained = (self.item_id, self.target_item_trained) if store == "target" else (self.source_item_id, self.source_item_trained)
        if items is None:
            return table.weight * trained.unsqueeze(-1)
        return table(items) * trained[items].unsqueeze(-1)

    def _user_ids(self, users: torch.Tensor) -> torch.Tensor | None:
        return self.user_id(users) if self.hybrid else None

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Target item vectors of ``items`` (1-d; all target items when None)."""
        self._require_bound()
        if items is None:
            return self._finish(self.text_vectors(self.target_text), self._item_ids("target", None))
        table, local = self._adapt_unique(self.target_text, items)
        return self._finish(table[local], self._item_ids("target", items))

    def scoring_histories(self, users: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(source, target) history rows that represent ``users`` when ranking target items, per
        ``history``; -1 = padding; None = that store is not used."""
        src, tgt = self.source_history[users], self.target_history[users]
        if self.history == "source":
            return src, None
        if self.history == "target":
            return None, tgt
        if self.history == "both":
            return src, tgt
        warm = self.has_target[users].unsqueeze(-1)
        return src.masked_fill(warm, -1), tgt.masked_fill(~warm, -1)

    def user_vectors(self, users: torch.Tensor, target_text_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d] user vectors for ranking target items (``users`` 1-d). ``target_text_vectors``: the
        adapted text vectors of all target items, when the caller has them already."""
        self._require_bound()
        src, tgt = self.scoring_histories(users)
        tables, indices = [], []
        if src is not None:
            table, local = self._adapt_unique(self.source_text, src)
            tables.append(table)
            indices.append(local)
        if tgt is not None:
            if target_text_vectors is None:
                table, local = self._adapt_unique(self.target_text, tgt)
            else:
                table, local = target_text_vectors, tgt
            tables.append(table)
            indices.append(local)
        return self._finish(self._pool(tables, indices), self._user_ids(users))

    def batch_user_vectors(self, users: torch.Tensor, positives: torch.Tensor, store: str = "target") -> torch.Tensor:
        """User vectors as a training batch in ``store`` sees them: the pooled history in that store
        with every entry equal to the row's positive item masked out."""
        self._require_bound()
        history = self._history(store)[users]
        table, local = self._adapt_unique(self._text(store), history)
        local = local.masked_fill(history == positives.unsqueeze(-1), -1)
        return self._finish(self._pool([table], [local]), self._user_ids(users))

    def _text(self, store: str) -> torch.Tensor:
        return self.source_text if store == "source" else self.target_text

    def _history(self, store: str) -> torch.Tensor:
        return self.source_history if store == "source" else self.target_history

    def _counts(self, store: str) -> torch.Tensor:
        return self.source_item_count if store == "source" else self.target_item_count

    # ------------------------------------------------------------------ scoring
    def _pop_term(self, counts: torch.Tensor) -> torch.Tensor:
        # on the score scale (logits are scores / temperature)
        return self.temperature * self.pop_weight * torch.log1p(counts)

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        self._require_bound()
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        text = self.text_vectors(self.target_text)  # the item side, once per call
        items = self._finish(text, self._item_ids("target", None))
        scores = self.user_vectors(users, text) @ items.T
        if self.popularity_prior:
            scores = scores + self._pop_term(self.target_item_count)
        return scores

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        items = torch.as_tensor(items, dtype=torch.long, device=self.device)
        users, items = torch.broadcast_tensors(users, items)
        shape = users.shape
        unique_users, user_row = torch.unique(users.reshape(-1), return_inverse=True)
        unique_items, item_row = torch.unique(items.reshape(-1), return_inverse=True)
        scores = (self.user_vectors(unique_users)[user_row] * self.item_vectors(unique_items)[item_row]).sum(-1)
        if self.popularity_prior:
            scores = scores + self._pop_term(self.target_item_count[items.reshape(-1)])
        return scores.reshape(shape)

    # ------------------------------------------------------------------ training
    def source_loss(self, batch: dict) -> torch.Tensor:
        return self._store_loss(batch, "source")

    def target_loss(self, batch: dict) -> torch.Tensor:
        return self._store_loss(batch, "target")

    def overlap_loss(self, batch: dict) -> torch.Tensor:
        """Target interactions of users who also shop in the source store, with the user represented
        per ``overlap_history``: ``"target"`` (like a target batch), ``"source"`` (the source history
        predicts target items: what a cold-start user's ranking needs) or ``"both"``."""
        return self._store_loss(batch, "target", self.overlap_history)

    def _log_q(self, counts: torch.Tensor, store: str, n_pos: int, n_neg: int) -> torch.Tensor:
        """log of how often each candidate is expected among a batch's candidates: positives are
        drawn by popularity, sampled negatives uniformly (the sampled-softmax correction of Yi et
        al., RecSys 2019); without it, in-batch negatives push popular items down."""
        all_counts = self._counts(store)
        n_trained = torch.count_nonzero(all_counts).clamp(min=1)
        expected = n_pos * counts / all_counts.sum().clamp(min=1.0) + n_neg / n_trained
        return torch.log(expected.clamp(min=1e-12))

    def _store_loss(self, batch: dict, store: str, history: str | None = None) -> torch.Tensor:
        self._require_bound()
        users, pos = batch["users"], batch["items"]
        neg = batch.get("negatives")
        if neg is not None and neg.numel() == 0:
            neg = None
        if self.loss_kind == "bpr" and neg is None:
            raise CrossRecError("TextTwoTower with loss='bpr' needs sampled negatives", "set num_negatives >= 1 in the DataModule, or use loss='softmax'")
        other = "target" if store == "source" else "source"
        history = history or store
        same = self._history(store)[users] if history in (store, "both") else None
        cross = self._history(other)[users] if history in (other, "both") else None
        b = len(users)
        trained = self.source_item_trained if store == "source" else self.target_item_trained
        if neg is not None and self.loss_kind == "softmax":
            neg = neg.reshape(-1)[trained[neg.reshape(-1)]]  # see below: untrained items are no negatives
        cand_items = pos if neg is None else torch.cat([pos, neg.reshape(-1)])
        n_cand = len(cand_items)
        # every item of the batch's store it touches is adapted once
        pieces = [cand_items] if same is None else [cand_items, same.reshape(-1)]
        table, local = self._adapt_unique(self._text(store), torch.cat(pieces))
        cand_raw = table[local[:n_cand]]
        tables, indices = [], []
        if same is not None:
            tables.append(table)
            indices.append(local[n_cand:].view_as(same).masked_fill(same == pos.unsqueeze(-1), -1))  # no peeking at the positive
        if cross is not None:
            cross_table, cross_local = self._adapt_unique(self._text(other), cross)
            tables.append(cross_table)
            indices.append(cross_local)
        u_raw = self._pool(tables, indices)
        if self.hybrid:
            u_raw = u_raw + self.user_id(users)
            cand_raw = cand_raw + self._item_ids(store, cand_items)
        u = F.normalize(u_raw, dim=-1) if self.normalize else u_raw
        cand = F.normalize(cand_raw, dim=-1) if self.normalize else cand_raw
        counts = self._counts(store)[cand_items]
        prior = self.pop_weight * torch.log1p(counts) if self.popularity_prior else None
        if self.loss_kind == "bpr":
            pos_s = (u * cand[:b]).sum(-1, keepdim=True)
            neg_s = torch.bmm(cand[b:].view(b, -1, u.shape[-1]), u.unsqueeze(-1)).squeeze(-1)
            diff = (pos_s - neg_s) / self.temperature
            if prior is not None:
                diff = diff + prior[:b].unsqueeze(-1) - prior[b:].view(b, -1)
            # An item without training interactions (a new item held out by split="new_items") is
            # never a negative: the sampler draws from the whole catalogue, but in reality the item
            # did not exist yet, and learning to push its text down would bury it at test time.
            weight = trained[neg].to(diff.dtype)
            loss = -(F.logsigmoid(diff) * weight).sum() / weight.sum().clamp(min=1.0)
        else:
            # the batch's distinct candidates, each once: the row's positive is its class and every
            # other candidate a negative, so repeated items need no masking
            unique, inverse = torch.unique(cand_items, return_inverse=True)
            first = torch.empty_like(unique).scatter_(0, inverse, torch.arange(len(cand_items), device=inverse.device))
            bias = torch.zeros(len(unique), dtype=u.dtype, device=u.device)
            if prior is not None:
                bias = bias + prior[first]
            if self.logq_correction:
                bias = bias - self._log_q(counts[first], store, b, len(cand_items) - b)
            logits = torch.addmm(bias, u / self.temperature, cand[first].T)
            loss = F.cross_entropy(logits, inverse[:b])
        if self.l2_reg:
            loss = loss + self.l2_reg * (u_raw.square().sum() + cand_raw.square().sum()) / b
        return loss


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CrossRecError(f"unknown {name} {value!r}", f"use one of {list(allowed)}")


def encode_item_text(text, vocabs, *, encoder: str, text_dim: int, hashing_dim: int = 512, text_cache=None) -> dict:
    """One frozen text matrix per store, rows in vocabulary order (``{domain: [n_items, dim]}``),
    through the on-disk cache: ``encoder`` is ``"minilm"``, ``"hashing"`` (fitted on these stores'
    texts) or a local sentence-transformers folder; its width must be ``text_dim``."""
    from crossrec_lit.features import EmbeddingCache, HashingTfidfEncoder, SentenceTransformerEncoder, encode_domains

    if encoder == "hashing":
        model = HashingTfidfEncoder(hashing_dim)
        texts = text[text["domain"].astype(str).isin([str(d) for d in vocabs])]["text"]
        model.fit(texts.fillna("").astype(str).tolist())
    else:
        model = SentenceTransformerEncoder(None if encoder == "minilm" else encoder)
    if int(model.dim) != int(text_dim):
        raise CrossRecError(
            f"the encoder gives {model.dim}-d vectors but this model was built for text_dim={text_dim}",
            "build the model with the same encoder (or text_dim) it is trained with",
        )
    cache = EmbeddingCache(text_cache if text_cache is not None else default_text_cache())
    return encode_domains(text, vocabs, model, cache)


def _encoder_dim(encoder: str, hashing_dim: int) -> int:
    if encoder == "hashing":
        return hashing_dim
    if encoder == "minilm":
        return MINILM_DIM
    from crossrec_lit.features import SentenceTransformerEncoder

    return int(SentenceTransformerEncoder(encoder).dim)  # read from the folder's configs, no model load


__all__ = ["MoEAdaptor", "TextTwoTower", "default_text_cache", "encode_item_text"]
