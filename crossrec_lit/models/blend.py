"""A learned blend of the simple cross-domain signals, with the strongest simple signal as fallback.

Which simple recommender wins depends on the store pair: global popularity on some, popularity
among the shared customers or cross-store co-occurrence on others. :class:`BlendRanker` computes
those signals (all counted from TRAINING data only), re-ranks each user's candidate items with a
learning-to-rank model fitted on a slice of the training data held out from the counts, and ranks
every other item by the fallback signal below the candidates. With one signal it IS that signal,
so the experiment runner's validation choice over ``signals`` can fall back to the best simple
baseline where the blend does not pay.

Why the name: it blends signals (not models' outputs on validation data) and ranks candidates; a
"stacking" name would suggest a second model fitted on validation predictions, which this is not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.baselines import CrossDomainCooccurrence, _CountingModel, _cross_domains, _csr_gather, take_saved_shapes

#: Signals scoring (user, item) pairs; the user-level ones only say how far to trust the others.
ITEM_SIGNALS = ("popularity", "overlap_popularity", "cooccurrence", "target_item_knn", "text_similarity")
USER_SIGNALS = ("source_history_size", "target_history_size")
SIGNALS = ITEM_SIGNALS + USER_SIGNALS
RANKERS = ("lambdarank", "linear")
HOLDOUTS = ("auto", "cold", "warm")
# a single signal gets the fallback order as a tie-break at this weight (fallback scores are in
# (0, 1)); the same device as CrossDomainCooccurrence's popularity_weight
TIE_BREAK = 1e-9
# the knn child's name for the target store used as its "source" side
_TARGET_AS_SOURCE = "__target_history__"


def parse_signals(spec, text: bool = False) -> tuple[str, ...]:
    """The signals named by ``spec``, in the canonical order of :data:`SIGNALS`.

    ``spec`` is a list of names, or a string (search-friendly: Optuna categoricals must be
    scalars): ``"all"``, one name, or names joined by ``+`` (``"popularity+cooccurrence"``).
    ``"all"`` (also ``None``) is every signal, ``text_similarity`` only when ``text`` (item text
    vectors given). Order and repeats do not matter, so equal sets give the same model.
    """
    if spec is None:
        spec = "all"
    if isinstance(spec, str):
        names = [s.strip() for s in spec.split("+")]
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        names = [s.strip() for s in spec]
    else:
        raise CrossRecError(f"signals must be a list of names or a string, got {spec!r}", 'pass e.g. ["popularity", "cooccurrence"], "popularity+cooccurrence" or "all"')
    chosen = set()
    for name in names:
        if name == "all":
            chosen |= set(SIGNALS) - (set() if text else {"text_similarity"})
        elif name in SIGNALS:
            chosen.add(name)
        else:
            raise CrossRecError(f"unknown signal {name!r}", f"use names from {list(SIGNALS)}, joined by '+', or 'all'")
    if not chosen & set(ITEM_SIGNALS):
        raise CrossRecError(
            f"signals {sorted(chosen)} hold no item-level signal: user-level history sizes cannot rank items",
            f"add at least one of {list(ITEM_SIGNALS)}",
        )
    if "text_similarity" in chosen and not text:
        raise CrossRecError("signal 'text_similarity' needs item text vectors, but text_embeddings is None", "pass text_embeddings=<path to .npz/.pt with 'source' and 'target' vectors>, or drop text_similarity")
    return tuple(s for s in SIGNALS if s in chosen)


# ---------------------------------------------------------------------------------------------
# a DataModule-like view of the training part, with some target interactions taken out
# ---------------------------------------------------------------------------------------------
class _TrainIndex:
    """The ``train`` part of an index with rows removed; asking for any other part is an error.

    It offers what the counting baselines read (``matrix``, ``users_with``, ``num_items``,
    ``item_counts``), so CrossDomainCooccurrence binds to reduced data through its public
    ``bind_data``, unchanged.
    """

    def __init__(self, num_users: int, arrays: dict[str, tuple[np.ndarray, np.ndarray]], num_items: dict[str, int]):
        self.num_users = int(num_users)
        self._arrays = arrays
        self._num_items = num_items
        self._cache: dict[str, sp.csr_matrix] = {}

    @staticmethod
    def _train_only(parts) -> None:
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        if parts != ("train",):
            raise CrossRecError(f"a training view was asked for parts {parts}", "count from 'train' only")

    def num_items(self, domain: str) -> int:
        return self._num_items[domain]

    def matrix(self, domain: str, parts="train") -> sp.csr_matrix:
        self._train_only(parts)
        if domain not in self._cache:
            users, items = self._arrays[domain]
            m = sp.csr_matrix((np.ones(len(users), dtype=np.bool_), (users, items)), shape=(self.num_users, self._num_items[domain]))
            m.sum_duplicates()
            m.sort_indices()
            self._cache[domain] = m
        return self._cache[domain]

    def users_with(self, domain: str, parts="train") -> np.ndarray:
        self._train_only(parts)
        return np.unique(self._arrays[domain][0])

    def item_counts(self, domain: str, parts="train") -> np.ndarray:
        self._train_only(parts)
        return np.bincount(self._arrays[domain][1], minlength=self._num_items[domain])


class _TrainView:
    """What a counting model reads from a CrossDomainDataModule, over a :class:`_TrainIndex`."""

    def __init__(self, index: _TrainIndex, source_domain: str, target_domain: str):
        self.index = index
        self.source_domain = source_domain
        self.target_domain = target_domain
        self.eval_domain = target_domain
        self.num_items = index.num_items(target_domain)

    def knn_view(self) -> _TrainView:
        """The target store against itself: item-item co-occurrence within the target store is
        CrossDomainCooccurrence with the target history in the place of the source history."""
        arrays = {_TARGET_AS_SOURCE: self.index._arrays[self.target_domain], self.target_domain: self.index._arrays[self.target_domain]}
        sizes = {_TARGET_AS_SOURCE: self.num_items, self.target_domain: self.num_items}
        return _TrainView(_TrainIndex(self.index.num_users, arrays, sizes), _TARGET_AS_SOURCE, self.target_domain)


# ---------------------------------------------------------------------------------------------
# the signals, counted from one view, kept in buffers
# ---------------------------------------------------------------------------------------------
class _Signals(nn.Module):
    """Every signal's state for one view of the training data (the full one for serving, a
    reduced one while fitting), in persistent buffers so a checkpoint scores without data."""

    _SIZED = ("source_hist_items", "target_hist_items", "source_text", "target_text")

    def __init__(self, num_users: int, num_items: int, num_source_items: int, ks, signals: tuple[str, ...]):
        super().__init__()
        self.num_users, self.num_items, self.num_source_items = num_users, num_items, num_source_items
        self.signals = signals
        # overlap popularity and cross-store co-occurrence: the baseline itself, bound to the view
        self.cross = CrossDomainCooccurrence(num_users, num_items, num_source_items, ks=ks)
        # item-item co-occurrence within the target store: the same counting, target against
        # target; no popularity term, so a user without target history scores zero
        self.within = CrossDomainCooccurrence(num_users, num_items, num_items, popularity_weight=0.0, ks=ks) if "target_item_knn" in signals else None
        self.register_buffer("popularity_counts", torch.zeros(num_items, dtype=torch.float64))
        self.register_buffer("n_target_users", torch.zeros((), dtype=torch.long))
        self.register_buffer("fallback", torch.zeros(num_items, dtype=torch.float64))
        self.register_buffer("source_hist_indptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("source_hist_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("target_hist_indptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("target_hist_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("source_text", torch.zeros(0, 0, dtype=torch.float32))
        self.register_buffer("target_text", torch.zeros(0, 0, dtype=torch.float32))

    # -------------------------------------------------------------- binding
    def bind(self, view: _TrainView, text: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        idx, source, target = view.index, view.source_domain, view.target_domain
        has_shared = len(np.intersect1d(idx.users_with(source, "train"), idx.users_with(target, "train"))) > 0
        if has_shared:
            self.cross.bind_data(view)
        elif {"overlap_popularity", "cooccurrence"} & set(self.signals):
            raise CrossRecError(
                "no user has training interactions in both stores, so overlap popularity and co-occurrence are undefined",
                "use data with shared users, or signals without overlap_popularity and cooccurrence",
            )
        if self.within is not None:
            self.within.bind_data(view.knn_view())
        # item_counts counts repeats as the Popularity baseline does (identical under dedupe)
        counts = idx.item_counts(target, "train").astype(np.float64)
        self.popularity_counts.copy_(torch.from_numpy(counts))
        self.n_target_users.fill_(len(idx.users_with(target, "train")))
        for side, domain in (("source", source), ("target", target)):
            m = idx.matrix(domain, "train")
            setattr(self, f"{side}_hist_indptr", torch.from_numpy(m.indptr.astype(np.int64)))
            setattr(self, f"{side}_hist_items", torch.from_numpy(m.indices.astype(np.int64)))
        # the fallback order: overlap popularity where shared users exist, then global popularity,
        # then the lower index; stored as distinct scores in (0, 1) so it never ties
        primary = self.cross.counts.numpy() if has_shared else counts
        order = np.lexsort((np.arange(self.num_items), -counts, -primary))
        fallback = np.empty(self.num_items, dtype=np.float64)
        fallback[order] = (self.num_items - np.arange(self.num_items)) / (self.num_items + 1.0)
        self.fallback.copy_(torch.from_numpy(fallback))
        if text is not None:
            self.source_text = torch.from_numpy(np.ascontiguousarray(text[0], dtype=np.float32))
            self.target_text = torch.from_numpy(np.ascontiguousarray(text[1], dtype=np.float32))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        take_saved_shapes(self, state_dict, prefix, self._SIZED)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    # -------------------------------------------------------------- scoring
    def history(self, side: str, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in ``users``, item) of each training item of ``users`` in one store."""
        indptr, items = getattr(self, f"{side}_hist_indptr"), getattr(self, f"{side}_hist_items")
        owner, pos = _csr_gather(indptr, users)
        return owner, items[pos]

    def history_size(self, side: str, users: torch.Tensor) -> torch.Tensor:
        indptr = getattr(self, f"{side}_hist_indptr")
        return (indptr[users + 1] - indptr[users]).to(torch.float64)

    def item_signal(self, name: str, users: torch.Tensor) -> torch.Tensor:
        """[B, num_items] float64 feature values of one item-level signal (may be an expanded view).

        Popularity shares are logs of smoothed shares rather than counts, so that the reduced
        counts of the fitting slice and the full counts of serving sit on the same scale.
        """
        b = len(users)
        if name == "popularity":
            n = float(self.n_target_users)
            return torch.log((self.popularity_counts + 1.0) / (n + 1.0)).unsqueeze(0).expand(b, -1)
        if name == "overlap_popularity":
            n = float(self.cross.n_shared)
            return torch.log((self.cross.counts + 1.0) / (n + 1.0)).unsqueeze(0).expand(b, -1)
        if name == "cooccurrence":
            return self.cross.full_scores(users)
        if name == "target_item_knn":
            scores = self.within.full_scores(users)
            # the child scores a user without history by popularity; this signal is zero for them
            return scores * (self.history_size("target", users) > 0).unsqueeze(1)
        if name == "text_similarity":
            return self.text_scores(users)
        raise KeyError(name)

    def user_signal(self, name: str, users: torch.Tensor) -> torch.Tensor:
        side = "source" if name == "source_history_size" else "target"
        return torch.log1p(self.history_size(side, users))

    def text_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Cosine of each target item's text vector with the user's profile: the mean of the unit
        text vectors of everything the user bought in either store (zero without history)."""
        dim = self.target_text.shape[1]
        profile = torch.zeros(len(users), dim, dtype=torch.float32, device=self.target_text.device)
        for side, vectors in (("source", self.source_text), ("target", self.target_text)):
            owner, items = self.history(side, users)
            if len(items):
                profile.index_add_(0, owner, nn.functional.normalize(vectors[items], dim=1))
        profile = nn.functional.normalize(profile, dim=1)
        items = nn.functional.normalize(self.target_text, dim=1)
        # one matrix-vector product per user: a matrix product picks its BLAS kernel by the number
        # of rows, so a user's scores would change in the last bit with the batch around them
        out = torch.empty(len(users), self.num_items, dtype=torch.float64, device=items.device)
        for row, p in enumerate(profile):
            out[row] = torch.mv(items, p)
        return out


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class BlendRanker(_CountingModel):
    """A learning-to-rank blend of popularity, overlap popularity, co-occurrence and more.

    Signals, each counted from the DataModule's TRAINING part only:

    * ``popularity``: target-store training counts (global popularity);
    * ``overlap_popularity``: counts among the shared customers (as :class:`OverlapPopularity`);
    * ``cooccurrence``: the cross-store co-occurrence score of :class:`CrossDomainCooccurrence`;
    * ``target_item_knn``: item-item co-occurrence within the target store, from the user's own
      target training items (zero for a cold user);
    * ``source_history_size`` / ``target_history_size``: how much the user bought in each store,
      so the ranker can trust the other signals differently per user;
    * ``text_similarity`` (only with ``text_embeddings``): cosine of an item's text vector with
      the mean text vector of the user's purchases in both stores.

    Fitting (in :meth:`bind_data`, once; no optimiser, the training epoch does nothing): a slice
    of ``holdout_share`` of the training users is drawn with ``holdout_seed``, their labels are
    taken out of the training data, every signal is counted from what remains, and the ranker
    learns to put the labels first among each slice user's candidates (one query per user). The
    labels mimic the DataModule's protocol:

    * cold start (``split="cold_start"``, or ``holdout="cold"``): the slice is drawn from the
      SHARED users (the evaluated cold users are shared users: a slice of target-only users
      would teach nothing about transfer) and they become pseudo-cold: ALL their target training
      items are labels and leave every count;
    * otherwise (leave-one-out and other warm protocols, or ``holdout="warm"``): the slice is
      drawn from users with at least two target training items (so they keep a history, like an
      evaluated user) and each one's LAST target training item (by the DataModule's ``position``:
      time order where timestamps were given, else the order of the source rows) is the label.

    Validation and test parts are never read: the final choice among variants (``signals``,
    ``ranker``, knobs) is the experiment runner's, on validation. After fitting, every signal is
    counted again from the full training data for serving.

    Serving: per user, the candidates are the union of each item-level signal's top
    ``candidates`` items (the user's own target training items left out: the evaluation masks
    them). Candidates get the ranker's score, shifted above every other item; the others keep the
    fallback order: overlap popularity where shared users exist, else popularity (ties by global
    popularity, then item index). With ONE item-level signal and no user-level one there is
    nothing to learn and no slice: the model ranks exactly as that signal's baseline
    (:class:`Popularity`, :class:`OverlapPopularity`, :class:`CrossDomainCooccurrence`; the knn
    and text signals with the fallback order as a tie-break).

    Args:
        num_users / num_items: user index space and target catalogue size (from the DataModule).
        num_source_items: source catalogue size (from the CrossDomainDataModule).
        signals: the signals to use: a list of names, or a string for searches (Optuna
            categoricals must be scalars): ``"all"`` (default: every signal, text only with
            ``text_embeddings``), one name, or names joined by ``+``, e.g.
            ``"popularity+cooccurrence"``. Search ``signals`` as a categorical such as
            ``[popularity, overlap_popularity, cooccurrence, all]`` to let validation fall back to
            the best simple signal.
        ranker: ``"lambdarank"`` (LightGBM's LGBMRanker, objective lambdarank) or ``"linear"``
            (a linear conditional-logit blend of the standardised signals; see
            :meth:`_fit_linear`).
        candidates: per user and item-level signal, how many top items join the re-ranked
            candidates (>= 1).
        holdout_share: share of the eligible training users in the fitting slice, in (0, 1).
        holdout_seed: seeds the slice (and LightGBM).
        holdout: ``"auto"`` (cold when the DataModule's split is ``cold_start``, else warm),
            ``"cold"`` or ``"warm"`` (e.g. for a cold-start split read from a file).
        num_leaves / n_estimators / learning_rate / min_child_samples: LightGBM settings.
        linear_l2: L2 penalty of the linear ranker's weights.
        text_embeddings: path of item text vectors for ``text_similarity``: a ``.npz`` with arrays
            ``source`` [num_source_items, d] and ``target`` [num_items, d], or a ``.pt`` holding a
            dict with those keys; rows in the DataModule's item index order. Read in
            :meth:`bind_data` and kept in the checkpoint.
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (ks, ...).

    After fitting, ``fit_report`` (also in the checkpoint) says what was learned: slice users,
    candidates per user, labels found among the candidates (candidate recall), and the feature
    importances (LightGBM gain shares) or linear weights.
    """

    # users scored at once in full_scores (bounds the [users, items] float64 signal matrices)
    USER_CHUNK = 256
    CHECKPOINT_KEY = "blend_ranker"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_source_items: int,
        signals: str | list[str] | None = "all",
        ranker: str = "lambdarank",
        candidates: int = 200,
        holdout_share: float = 0.2,
        holdout_seed: int = 0,
        holdout: str = "auto",
        num_leaves: int = 7,
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        min_child_samples: int = 200,
        linear_l2: float = 1e-3,
        text_embeddings: str | None = None,
        **kwargs,
    ):
        super().__init__(num_users, num_items, **kwargs)
        self.save_hyperparameters()
        if int(num_source_items) < 1:
            raise CrossRecError(f"num_source_items={num_source_items} must be >= 1", "link it from a CrossDomainDataModule")
        if text_embeddings is not None and not str(text_embeddings).endswith((".npz", ".pt")):
            raise CrossRecError(f"text_embeddings={text_embeddings!r} is neither .npz nor .pt", "save the vectors with numpy.savez(path, source=..., target=...) or torch.save({'source': ..., 'target': ...}, path)")
        self.signals = parse_signals(signals, text=text_embeddings is not None)
        if ranker not in RANKERS:
            raise CrossRecError(f"unknown ranker {ranker!r}", f"use one of {list(RANKERS)}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise CrossRecError(f"candidates must be an integer >= 1, got {candidates!r}", "use e.g. 200 items per signal")
        if not (isinstance(holdout_share, (int, float)) and 0 < holdout_share < 1):
            raise CrossRecError(f"holdout_share must be strictly between 0 and 1, got {holdout_share!r}", "use e.g. 0.2")
        if holdout not in HOLDOUTS:
            raise CrossRecError(f"unknown holdout {holdout!r}", f"use one of {list(HOLDOUTS)}")
        for name, value in (("num_leaves", num_leaves), ("n_estimators", n_estimators), ("min_child_samples", min_child_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "num_leaves" else 1):
                raise CrossRecError(f"{name} must be an integer >= {2 if name == 'num_leaves' else 1}, got {value!r}", f"use the LightGBM default or a similar value for {name}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise CrossRecError(f"learning_rate must be > 0, got {learning_rate!r}", "use e.g. 0.05")
        if not (math.isfinite(linear_l2) and linear_l2 >= 0):
            raise CrossRecError(f"linear_l2 must be >= 0, got {linear_l2!r}", "use e.g. 1e-3")
        self.num_source_items = int(num_source_items)
        self.ranker = ranker
        self.candidates = int(candidates)
        self.holdout_share = float(holdout_share)
        self.holdout_seed = int(holdout_seed)
        self.holdout = holdout
        self.lgbm_params = dict(num_leaves=num_leaves, n_estimators=n_estimators, learning_rate=float(learning_rate), min_child_samples=min_child_samples)
        self.linear_l2 = float(linear_l2)
        self.text_embeddings = text_embeddings
        self.item_signals = tuple(s for s in self.signals if s in ITEM_SIGNALS)
        self.user_signals = tuple(s for s in self.signals if s in USER_SIGNALS)
        self.single = len(self.signals) == 1
        self.feature_names = self._feature_names()
        self.state = _Signals(self.num_users, self.num_items, self.num_source_items, self.ks, self.signals)
        n_features = len(self.feature_names)
        # the linear ranker's parameters (fixed sizes, so plain buffers); unused by lambdarank
        self.register_buffer("feature_mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(n_features, dtype=torch.float64))
        self.register_buffer("feature_low", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("feature_high", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("linear_weights", torch.zeros(n_features, dtype=torch.float64))
        # the lowest score the ranker can give: candidates are shifted by it to sit above 1
        self.register_buffer("score_floor", torch.zeros((), dtype=torch.float64))
        self.booster = None
        self.fit_report: dict = {"mode": "single_signal" if self.single else "unfitted", "signals": list(self.signals)}

    def _feature_names(self) -> list[str]:
        if self.ranker == "lambdarank":
            return list(self.item_signals + self.user_signals)
        # a softmax over a user's candidates cancels anything constant per user, so user-level
        # signals enter the linear blend only as interactions with the item-level ones
        return list(self.item_signals) + [f"{i}*{u}" for u in self.user_signals for i in self.item_signals]

    # ------------------------------------------------------------------ fitting
    def bind_data(self, datamodule) -> None:
        source, target = _cross_domains(datamodule, self)
        idx = datamodule.index
        if idx.num_items(source) != self.num_source_items:
            raise CrossRecError(
                f"num_source_items={self.num_source_items} but the source store has {idx.num_items(source)} items",
                "link num_source_items from this CrossDomainDataModule",
            )
        text = self._read_text() if "text_similarity" in self.signals else None
        a_s, a_t = idx.arrays(source, "train"), idx.arrays(target, "train")
        sizes = {source: self.num_source_items, target: self.num_items}

        def view(keep_target: np.ndarray | None = None) -> _TrainView:
            t_users, t_items = a_t["users"], a_t["items"]
            if keep_target is not None:
                t_users, t_items = t_users[keep_target], t_items[keep_target]
            return _TrainView(_TrainIndex(idx.num_users, {source: (a_s["users"], a_s["items"]), target: (t_users, t_items)}, sizes), source, target)

        if not self.single:
            cold = self.holdout == "cold" or (self.holdout == "auto" and getattr(datamodule, "split", None) == "cold_start")
            keep, labels, slice_users = self._holdout(a_s, a_t, cold)
            fitting = _Signals(self.num_users, self.num_items, self.num_source_items, self.ks, self.signals)
            fitting.bind(view(keep), text)
            self._fit_ranker(fitting, slice_users, labels, cold)
        self.state.bind(view(), text)
        super().bind_data(datamodule)

    def _read_text(self) -> tuple[np.ndarray, np.ndarray]:
        path = Path(self.text_embeddings)
        if not path.exists():
            raise CrossRecError(f"text_embeddings file {path} does not exist", "check the path, or drop text_similarity from signals")
        if path.suffix == ".npz":
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            data = {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in data.items()} if isinstance(data, dict) else {}
        for key, rows in (("source", self.num_source_items), ("target", self.num_items)):
            m = data.get(key)
            if m is None or m.ndim != 2 or m.shape[0] != rows:
                raise CrossRecError(
                    f"text_embeddings {path} must hold {key!r} vectors of shape [{rows}, d], got {None if m is None else m.shape}",
                    "save one row per item in the DataModule's item index order, under keys 'source' and 'target'",
                )
        if data["source"].shape[1] != data["target"].shape[1]:
            raise CrossRecError(f"source and target text vectors differ in size ({data['source'].shape[1]} vs {data['target'].shape[1]})", "encode both stores with the same encoder")
        return data["source"], data["target"]

    def _holdout(self, a_s: dict, a_t: dict, cold: bool) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
        """Which target training rows stay counted, the slice users' labels, and the slice."""
        t_users, t_items = a_t["users"], a_t["items"]
        sizes = np.bincount(t_users, minlength=self.num_users)
        if cold:
            eligible = np.intersect1d(np.unique(a_s["users"]), np.flatnonzero(sizes > 0))
        else:
            eligible = np.flatnonzero(sizes >= 2)
        if len(eligible) < 2:
            raise CrossRecError(
                f"only {len(eligible)} training user(s) can be held out to fit the blend ({'shared users' if cold else 'users with 2+ target training items'})",
                "use more data, or a single signal (signals='popularity') which needs no fitting",
            )
        n = min(len(eligible), max(1, int(round(self.holdout_share * len(eligible)))))
        slice_users = np.sort(np.random.default_rng(self.holdout_seed).choice(eligible, size=n, replace=False))
        in_slice = np.zeros(self.num_users, dtype=bool)
        in_slice[slice_users] = True
        if cold:
            is_label = in_slice[t_users]
        else:
            # each slice user's last training row by position; every row of that item leaves too
            # (with dedupe="none" an earlier repeat would otherwise leak the label)
            order = np.lexsort((a_t["positions"], t_users))
            last = order[np.r_[t_users[order][1:] != t_users[order][:-1], True]]
            last = last[in_slice[t_users[last]]]
            label_keys = t_users[last].astype(np.int64) * self.num_items + t_items[last]
            is_label = np.isin(t_users.astype(np.int64) * self.num_items + t_items, label_keys)
        labels = sp.csr_matrix((np.ones(int(is_label.sum()), dtype=np.bool_), (t_users[is_label], t_items[is_label])), shape=(self.num_users, self.num_items))
        labels.sum_duplicates()
        return ~is_label, labels, slice_users

    def _fit_ranker(self, fitting: _Signals, slice_users: np.ndarray, labels: sp.csr_matrix, cold: bool) -> None:
        coo = labels.tocoo()
        label_keys = np.sort(coo.row.astype(np.int64) * self.num_items + coo.col)
        parts, n_cand = [], 0
        for chunk in torch.from_numpy(slice_users).split(self.USER_CHUNK):
            rows, cols, x = self._candidate_features(fitting, chunk)
            users = chunk.numpy()[rows.numpy()]
            y = np.isin(users.astype(np.int64) * self.num_items + cols.numpy(), label_keys, assume_unique=False).astype(np.float64)
            parts.append((users, x, y))
            n_cand += len(rows)
        users = np.concatenate([p[0] for p in parts])
        x = np.concatenate([p[1] for p in parts])
        y = np.concatenate([p[2] for p in parts])
        # users without a label among their candidates carry no ranking signal (zero gradient in
        # lambdarank, undefined in the softmax): they only count for the candidate recall
        group_users, group_sizes = np.unique(users, return_counts=True)  # rows are sorted by user
        positives = np.bincount(np.searchsorted(group_users, users), weights=y, minlength=len(group_users))
        useful = np.repeat(positives > 0, group_sizes)
        n_labels, n_found = int(labels[slice_users].nnz), int(y.sum())
        if not useful.any():
            raise CrossRecError(
                f"none of the {n_labels} held-out labels is among the slice users' candidates",
                "raise candidates or holdout_share, or use a single signal",
            )
        x, y, sizes = x[useful], y[useful], group_sizes[positives > 0]
        if self.ranker == "lambdarank":
            learned = self._fit_lambdarank(x, y, sizes)
        else:
            learned = self._fit_linear(x, y, sizes)
        self.fit_report = {
            "mode": self.ranker,
            "signals": list(self.signals),
            "holdout": "cold" if cold else "warm",
            "slice_users": int(len(slice_users)),
            "candidates_per_user": float(n_cand / len(slice_users)),
            "labels": n_labels,
            "labels_in_candidates": n_found,
            "candidate_recall": float(n_found / max(n_labels, 1)),
            "queries": int(len(sizes)),
            "rows": int(len(y)),
            **learned,
        }

    def _fit_lambdarank(self, x: np.ndarray, y: np.ndarray, sizes: np.ndarray) -> dict:
        import lightgbm as lgb

        model = lgb.LGBMRanker(
            objective="lambdarank",
            random_state=self.holdout_seed,
            n_jobs=_threads(),
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
            **self.lgbm_params,
        )
        model.fit(x, y, group=sizes, feature_name=[_lgb_name(f) for f in self.feature_names])
        self._set_booster(model.booster_)
        gain = model.booster_.feature_importance(importance_type="gain")
        share = gain / gain.sum() if gain.sum() > 0 else gain
        return {"importance_gain_share": {f: float(v) for f, v in zip(self.feature_names, share)}}

    def _fit_linear(self, x: np.ndarray, y: np.ndarray, sizes: np.ndarray) -> dict:
        """A conditional logit: the softmax over each user's candidates of a linear score of the
        standardised signals, fitted by L-BFGS on the slice.

        Why this linear model rather than a pointwise logistic regression or LightGBM's linear
        trees: it optimises what the evaluation measures (the labels above the user's OTHER
        candidates), so differences between users (history sizes, label counts) cannot leak into
        the weights; it is convex and deterministic, and its few weights are readable in
        ``fit_report``. Features are clipped to their range on the slice when serving, so the
        score is bounded and candidates can be shifted above the fallback exactly.
        """
        z = torch.from_numpy(x)
        mean, std = z.mean(0), z.std(0).clamp_min(1e-12)
        z = (z - mean) / std
        label = torch.from_numpy(y)
        group = torch.repeat_interleave(torch.arange(len(sizes)), torch.from_numpy(sizes))
        n_groups = len(sizes)
        n_pos = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, label)
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            s = z @ w
            top = torch.full((n_groups,), -torch.inf, dtype=torch.float64).scatter_reduce(0, group, s.detach(), "amax")
            lse = torch.log(torch.zeros(n_groups, dtype=torch.float64).index_add(0, group, torch.exp(s - top[group]))) + top
            pos = torch.zeros(n_groups, dtype=torch.float64).index_add(0, group, s * label) / n_pos
            loss = (lse - pos).mean() + self.linear_l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w = w.detach()
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)
        self.feature_low.copy_(z.min(0).values)
        self.feature_high.copy_(z.max(0).values)
        self.linear_weights.copy_(w)
        self.score_floor.fill_(float(torch.minimum(w * self.feature_low, w * self.feature_high).sum()))
        return {"linear_weights": {f: float(v) for f, v in zip(self.feature_names, w)}}

    def _set_booster(self, booster) -> None:
        self.booster = booster
        self.score_floor.fill_(_booster_floor(booster.dump_model()))

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[self.CHECKPOINT_KEY] = {
            "booster": None if self.booster is None else self.booster.model_to_string(),
            "fit_report": self.fit_report,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(self.CHECKPOINT_KEY) or {}
        self.fit_report = saved.get("fit_report", self.fit_report)
        if saved.get("booster"):
            import lightgbm as lgb

            self.booster = lgb.Booster(model_str=saved["booster"])
        # the signals were bound when the checkpoint was written; scoring needs no DataModule
        self._bound = True

    # ------------------------------------------------------------------ scoring
    def _candidate_features(self, state: _Signals, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(row in ``users``, item) of every candidate, sorted by row, and their feature rows."""
        values = {name: state.item_signal(name, users) for name in self.item_signals}
        seen_rows, seen_items = state.history("target", users)
        n = min(self.candidates, self.num_items)
        mask = torch.zeros(len(users), self.num_items, dtype=torch.bool, device=users.device)
        for v in values.values():
            # ties (e.g. the many zero co-occurrence scores) go to the fallback order
            key = v + TIE_BREAK * state.fallback
            key[seen_rows, seen_items] = -torch.inf
            mask.scatter_(1, torch.topk(key, n, dim=1).indices, True)
        mask[seen_rows, seen_items] = False
        rows, cols = mask.nonzero(as_tuple=True)
        item_cols = [values[name][rows, cols] for name in self.item_signals]
        user_cols = [state.user_signal(name, users)[rows] for name in self.user_signals]
        if self.ranker == "lambdarank":
            columns = item_cols + user_cols
        else:
            columns = item_cols + [i * u for u in user_cols for i in item_cols]
        x = torch.stack(columns, dim=1) if columns else torch.zeros(len(rows), 0, dtype=torch.float64)
        # LightGBM predicts on the CPU; the candidate rows are all that crosses over
        return rows, cols, x.to(torch.float64).cpu().numpy()

    def _predict(self, x: np.ndarray) -> torch.Tensor:
        if self.ranker == "lambdarank":
            if self.booster is None:
                raise CrossRecError("BlendRanker has not been fitted", "fit it with trainer.fit(model, datamodule=CrossDomainDataModule(...)) or load a checkpoint")
            if not len(x):
                return torch.zeros(0, dtype=torch.float64, device=self.score_floor.device)
            pred = np.asarray(self.booster.predict(x, num_threads=_threads()), dtype=np.float64)
            return torch.from_numpy(pred).to(self.score_floor.device)
        z = (torch.from_numpy(x).to(self.feature_mean.device) - self.feature_mean) / self.feature_std
        z = torch.maximum(torch.minimum(z, self.feature_high), self.feature_low)
        # a row-wise sum rather than a matrix product: BLAS blocking depends on the number of rows,
        # which would make a user's scores depend (in the last bit) on the rest of the batch
        return (z * self.linear_weights).sum(1)

    def _single_scores(self, users: torch.Tensor) -> torch.Tensor:
        name, state = self.signals[0], self.state
        if name == "popularity":
            return state.popularity_counts.float().unsqueeze(0).expand(len(users), -1)
        if name == "overlap_popularity":
            return state.cross.counts.float().unsqueeze(0).expand(len(users), -1)
        if name == "cooccurrence":
            return state.cross.full_scores(users)
        return state.item_signal(name, users) + TIE_BREAK * state.fallback

    def _blend_scores(self, users: torch.Tensor) -> torch.Tensor:
        state = self.state
        rows, cols, x = self._candidate_features(state, users)
        pred = self._predict(x)
        out = state.fallback.unsqueeze(0).repeat(len(users), 1)
        # fallback scores are in (0, 1); candidates start at 1 (the floor is the lowest score the
        # ranker can give; the margin absorbs summation-order rounding), fallback tie-break
        floor = float(self.score_floor) - 1e-9 * (1.0 + abs(float(self.score_floor)))
        out[rows, cols] = 1.0 + (pred - floor) + TIE_BREAK * state.fallback[cols]
        return out

    @torch.no_grad()
    def full_scores(self, users):
        users = torch.as_tensor(users, dtype=torch.long).reshape(-1).to(self.score_floor.device)
        if self.single:
            return self._single_scores(users)
        parts = [self._blend_scores(chunk) for chunk in users.split(self.USER_CHUNK)]
        return torch.cat(parts) if parts else torch.zeros(0, self.num_items, dtype=torch.float64, device=users.device)

    def score(self, users, items):
        users, items = torch.broadcast_tensors(torch.as_tensor(users), torch.as_tensor(items))
        unique, inverse = torch.unique(users.reshape(-1), return_inverse=True)
        full = self.full_scores(unique)
        return full[inverse, items.reshape(-1).to(full.device)].reshape(users.shape)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _threads() -> int:
    # the package pins torch's pool (num_threads in configs, CROSSREC_NUM_THREADS in tests);
    # LightGBM follows it instead of taking every core of a shared machine
    return max(1, torch.get_num_threads())


def _lgb_name(name: str) -> str:
    # LightGBM refuses some characters in feature names
    return name.replace("*", "_x_")


def _booster_floor(dump: dict) -> float:
    """The lowest raw score a LightGBM model can output: the sum over trees of each tree's lowest
    leaf value (exact, since every prediction adds one leaf per tree)."""

    def lowest(node: dict) -> float:
        if "leaf_value" in node:
            return float(node["leaf_value"])
        return min(lowest(node["left_child"]), lowest(node["right_child"]))

    return float(sum(lowest(tree["tree_structure"]) for tree in dump.get("tree_info", [])))


__all__ = ["BlendRanker", "ITEM_SIGNALS", "SIGNALS", "USER_SIGNALS", "parse_signals"]
