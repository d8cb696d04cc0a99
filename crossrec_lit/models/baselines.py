"""Baselines that every comparison must show.

* :class:`Popularity` - global popularity, the same list for everyone.
* :class:`TargetOnlyMF` - BPR-MF on the target store alone (no transfer); cold users get the
  warm users' mean vector.
* :class:`OverlapPopularity` - popularity among the customers shared by both stores.
* :class:`CrossDomainCooccurrence` - "bought source item i, also bought target item j" counted
  over the shared customers: the classic personalised cross-domain baseline.

All but TargetOnlyMF need no gradient training: they count, once, from the training data.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from crossrec_lit.errors import CrossRecError
from crossrec_lit.models.base import RecommenderModule, single_domain_batch
from crossrec_lit.models.mf import BPRMF

# Popularity counts items during one pass over the training batches and has no parameters to
# optimise; Lightning warns that such a fit "will run with no optimizer", which is the intent.
warnings.filterwarnings("ignore", message=r".*configure_optimizers` returned `None`.*")


class RandomScores(RecommenderModule):
    """A random ranking, the same for a user every time: the chance level every model must clear.

    Scores come from a hash of (seed, user, item), so they need no storage, are reproducible and
    have no ties in practice (a constant score would fall back on the item-index tie rule, which
    can carry an order of its own, e.g. older catalogue ids being more popular).
    """

    def __init__(self, num_users: int, num_items: int, seed: int = 0, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        self.save_hyperparameters()
        self.seed = int(seed)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return None

    def score(self, users, items):
        users, items = torch.broadcast_tensors(torch.as_tensor(users), torch.as_tensor(items))
        # a multiplicative hash (splitmix-style constants) mapped to [0, 1)
        x = ((users.long() + 1) * 0x9E3779B1 + (items.long() + 1) * 0x85EBCA77 + (self.seed + 1) * 0xC2B2AE3D) & 0xFFFFFFFF
        x = (x ^ (x >> 16)) * 0x45D9F3B & 0xFFFFFFFF
        x = x ^ (x >> 16)
        return x.double() / 2**32

    def full_scores(self, users):
        items = torch.arange(self.num_items, device=users.device)
        return self.score(users.unsqueeze(1), items.unsqueeze(0))


class Popularity(RecommenderModule):
    """Rank items by how often they occur in the training data, the same list for every user.

    Counting happens in ``training_step`` over the positives of the first epoch, so it trains
    through the same DataModule, Trainer and CLI path as every other model (with one device:
    there is nothing to distribute).
    """

    def __init__(self, num_users: int, num_items: int, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.register_buffer("counts", torch.zeros(self.num_items, dtype=torch.float64))

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 0:
            items = single_domain_batch(batch)["items"]
            self.counts += torch.bincount(items, minlength=self.num_items).to(self.counts)
        return None

    def configure_optimizers(self):
        return None

    def score(self, users, items):
        return self.counts[items].float().expand(torch.broadcast_shapes(users.shape, items.shape))

    def full_scores(self, users):
        return self.counts.float().unsqueeze(0).expand(len(users), -1)


# ---------------------------------------------------------------------------------------------
# Target-only and overlap baselines of the cross-domain comparisons
# ---------------------------------------------------------------------------------------------
class TargetOnlyMF(BPRMF):
    """BPR-MF on the target store alone: the "no transfer" baseline of every cross-domain table.

    Idea: train BPR-MF (Rendle et al., UAI 2009) on target training batches only and never look at
    the source store. A user without target training data (a cold-start user, ``has_target``
    False) has no learned vector; they get the MEAN of the warm users' vectors, so their ranking
    is the model's "average customer" ranking (close to popularity). That is the standard
    cold-start reference a transfer model has to beat.

    Train it with an :class:`~crossrec_lit.data.InteractionDataModule` or with a
    :class:`~crossrec_lit.data.CrossDomainDataModule` in ``phase="target"`` (``both`` is refused:
    it would see source batches). ``has_target`` is taken in :meth:`bind_data` from the target
    store's training part: a user is warm when they have at least one target training
    interaction. On a single-store DataModule that is every user with training data (all users
    under leave-one-out); on a cold-start split the held-out shared users are cold.

    Args:
        num_users / num_items: user index space and target catalogue size (from the DataModule).
        embedding_dim: size of the user and item vectors.
        l2_reg: penalty on the embedding rows of each batch.
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (lr, optimizer, ks, ...).
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, l2_reg: float = 0.0, **kwargs):
        super().__init__(num_users, num_items, embedding_dim=embedding_dim, l2_reg=l2_reg, **kwargs)
        if l2_reg < 0:
            raise CrossRecError(f"l2_reg must be >= 0, got {l2_reg}", "use 0 (off) or a small value such as 1e-4")
        # users with target training data; the others are cold and get the warm users' mean vector
        self.register_buffer("has_target", torch.ones(self.num_users, dtype=torch.bool))

    def bind_data(self, datamodule) -> None:
        domain = _target_domain(datamodule, self)
        warm = datamodule.index.users_with(domain, "train")
        mask = torch.zeros(self.num_users, dtype=torch.bool)
        mask[torch.from_numpy(warm)] = True
        self.has_target.copy_(mask)

    def cold_user_vector(self) -> torch.Tensor:
        """The vector every cold user gets: the mean of the warm users' vectors (no gradient)."""
        weight = self.user_emb.weight.detach()
        if not bool(self.has_target.any()):
            return torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
        return weight[self.has_target].mean(0)

    def user_vectors(self, users):
        vectors = self.user_emb(users)
        cold = ~self.has_target[users]
        # training batches hold warm users only, so this costs one check per batch there
        if bool(cold.any()):
            vectors = torch.where(cold.unsqueeze(-1), self.cold_user_vector().to(vectors.dtype), vectors)
        return vectors


class _CountingModel(RecommenderModule):
    """A model whose state is counted from the DataModule in :meth:`bind_data` (no optimiser).

    It still trains through the usual Trainer/DataModule/CLI path: ``fit`` runs ``setup`` ->
    :meth:`bind_data`, and the training epoch itself does nothing. Counting from the index
    rather than from batches keeps the counts exact whatever the phase (``both`` cycles the
    shorter side, which would count some interactions twice) and identical on every DDP rank.
    """

    def __init__(self, num_users: int, num_items: int, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        self.automatic_optimization = False
        self._bound = False

    def training_step(self, batch, batch_idx):
        return None

    def on_train_start(self) -> None:
        if not self._bound:
            raise CrossRecError(
                f"{type(self).__name__} counts from a DataModule, but fit got none",
                "call trainer.fit(model, datamodule=CrossDomainDataModule(...))",
            )

    def configure_optimizers(self):
        return None

    def bind_data(self, datamodule) -> None:
        self._bound = True


class OverlapPopularity(_CountingModel):
    """Popularity among the SHARED customers: the control every transfer model must beat.

    Idea: rank target items by how many users who shop in BOTH stores (training interactions in
    the source and in the target store) bought them, the same list for every user. It uses the
    overlap users' taste without any personal transfer, so a cross-domain model that does no
    better than this has transferred nothing but "what shared customers like". (ANCHORS,
    Beauty -> Toys cold-start users: 0.0337 NDCG@10 against 0.0172 for global popularity.)

    ``counts[j]`` = number of shared users with target training item ``j`` (each user counted
    once per item), taken from the DataModule's index in :meth:`bind_data`; ``n_shared`` is the
    number of shared users. Both are persistent buffers, so a checkpoint scores without the data.
    Needs a :class:`~crossrec_lit.data.CrossDomainDataModule` (any phase; one epoch suffices).

    Args:
        num_users / num_items: user index space and target catalogue size (from the DataModule).
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (ks, ...).
    """

    def __init__(self, num_users: int, num_items: int, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        self.save_hyperparameters()
        self.register_buffer("counts", torch.zeros(self.num_items, dtype=torch.float64))
        self.register_buffer("n_shared", torch.zeros((), dtype=torch.long))

    def bind_data(self, datamodule) -> None:
        source, target = _cross_domains(datamodule, self)
        idx = datamodule.index
        shared = shared_users(datamodule)
        if len(shared) == 0:
            raise CrossRecError(
                "no user has training interactions in both stores, so there is no shared customer to count",
                "use data with shared users (check the overlap report), or the global Popularity baseline",
            )
        t = idx.matrix(target, "train")[shared]
        counts = np.bincount(t.indices, minlength=self.num_items).astype(np.float64)
        self.counts.copy_(torch.from_numpy(counts))
        self.n_shared.fill_(len(shared))
        super().bind_data(datamodule)

    def popularity(self) -> torch.Tensor:
        """Share of the shared users who bought each target item (float64, in [0, 1])."""
        return self.counts / self.n_shared.clamp(min=1).to(self.counts.dtype)

    def score(self, users, items):
        return self.counts[items].float().expand(torch.broadcast_shapes(users.shape, items.shape))

    def full_scores(self, users):
        return self.counts.float().unsqueeze(0).expand(len(users), -1)


class CrossDomainCooccurrence(OverlapPopularity):
    """Item-to-item co-occurrence across stores: the classic personalised cross-domain baseline.

    Idea ("customers who bought source item i also bought target item j", the cross-store form of
    item-based collaborative filtering, Sarwar et al., WWW 2001; Linden et al., IEEE Internet
    Computing 2003): over the shared users S (training interactions in both stores)::

        C[i, j]  = |{u in S : u has source item i and target item j}|
        n_i      = |{u in S : u has source item i}|
        P[i, j]  = C[i, j] / n_i          (row-normalised: an estimate of P(j | i) among S)
        score(u, j) = sum over u's source training items i of P[i, j]
                      + popularity_weight * pop(j)

    where ``pop(j) = counts[j] / n_shared`` is the overlap popularity of
    :class:`OverlapPopularity`, in [0, 1]. The tiny default weight only breaks ties (mostly among
    items with no co-occurrence evidence), so they are ranked by overlap popularity. A user with
    no source training items scores ``pop(j)`` (weight 1): the overlap-popularity fallback.

    Row normalisation makes a popular source item (held by many shared users) one vote spread
    over its co-purchases instead of many votes. Scores are float64 so that the tie-break term
    survives next to sums of co-occurrence shares.

    Storage is sparse and fixed at bind time: P as CSR (``cooc_indptr`` [num_source_items + 1],
    ``cooc_items``, ``cooc_values``) and each user's source training items as CSR
    (``history_indptr`` [num_users + 1], ``history_items``). These are persistent buffers whose
    length depends on the data; loading a state dict resizes them first, so a checkpoint scores
    identically without the DataModule. :meth:`full_scores` is one vectorised sparse product
    (gather + ``index_put_``), chunked to bound memory; no loop over users.

    Args:
        num_users / num_items: user index space and target catalogue size (from the DataModule).
        num_source_items: source catalogue size (from the CrossDomainDataModule).
        popularity_weight: weight of the overlap-popularity term added to co-occurrence scores
            (>= 0; 0 = pure co-occurrence with ties left to item order).
        **kwargs: see :class:`~crossrec_lit.models.RecommenderModule` (ks, ...).
    """

    # entries expanded at once in full_scores (about 40 bytes each at peak)
    CHUNK_ENTRIES = 4_000_000
    _SIZED_BUFFERS = ("cooc_items", "cooc_values", "history_items")

    def __init__(self, num_users: int, num_items: int, num_source_items: int, popularity_weight: float = 1e-6, **kwargs):
        super().__init__(num_users, num_items, **kwargs)
        if int(num_source_items) < 1:
            raise CrossRecError(f"num_source_items={num_source_items} must be >= 1", "link it from a CrossDomainDataModule")
        if not np.isfinite(popularity_weight) or popularity_weight < 0:
            raise CrossRecError(f"popularity_weight must be a finite number >= 0, got {popularity_weight}", "use e.g. 1e-6 (tie-break only) or 0")
        self.save_hyperparameters()
        self.num_source_items = int(num_source_items)
        self.popularity_weight = float(popularity_weight)
        self.register_buffer("cooc_indptr", torch.zeros(self.num_source_items + 1, dtype=torch.long))
        self.register_buffer("cooc_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("cooc_values", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("history_indptr", torch.zeros(self.num_users + 1, dtype=torch.long))
        self.register_buffer("history_items", torch.zeros(0, dtype=torch.long))

    def bind_data(self, datamodule) -> None:
        super().bind_data(datamodule)  # overlap popularity, checks
        source, target = datamodule.source_domain, datamodule.target_domain
        idx = datamodule.index
        if idx.num_items(source) != self.num_source_items:
            raise CrossRecError(
                f"num_source_items={self.num_source_items} but the source store has {idx.num_items(source)} items",
                "link num_source_items from this CrossDomainDataModule",
            )
        history = idx.matrix(source, "train").astype(np.float64).tocsr()
        shared = shared_users(datamodule)
        s = history[shared]
        t = idx.matrix(target, "train")[shared].astype(np.float64)
        c = (s.T @ t).tocsr()
        n_i = np.asarray(s.sum(0)).ravel()
        p = (sp.diags(1.0 / np.maximum(n_i, 1.0)) @ c).tocsr()
        p.sum_duplicates()
        p.sort_indices()
        history.sort_indices()
        self.cooc_indptr = torch.from_numpy(p.indptr.astype(np.int64)).to(self.cooc_indptr.device)
        self.cooc_items = torch.from_numpy(p.indices.astype(np.int64)).to(self.cooc_indptr.device)
        self.cooc_values = torch.from_numpy(p.data.astype(np.float64)).to(self.cooc_indptr.device)
        self.history_indptr = torch.from_numpy(history.indptr.astype(np.int64)).to(self.cooc_indptr.device)
        self.history_items = torch.from_numpy(history.indices.astype(np.int64)).to(self.cooc_indptr.device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        take_saved_shapes(self, state_dict, prefix, self._SIZED_BUFFERS)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def full_scores(self, users):
        users = torch.as_tensor(users, dtype=torch.long, device=self.counts.device).reshape(-1)
        pop = self.popularity()
        out = (self.popularity_weight * pop).unsqueeze(0).repeat(len(users), 1)
        h_owner, h_pos = _csr_gather(self.history_indptr, users)
        src = self.history_items[h_pos]
        row_len = self.cooc_indptr[src + 1] - self.cooc_indptr[src]
        # chunk the history entries so the expansion stays below CHUNK_ENTRIES (one chunk usually)
        ends = torch.cumsum(row_len, 0)
        start, n = 0, len(src)
        while start < n:
            base = ends[start - 1] if start else ends.new_zeros(())
            stop = int(torch.searchsorted(ends, base + self.CHUNK_ENTRIES, right=True))
            stop = max(stop, start + 1)
            owner, pos = _csr_gather(self.cooc_indptr, src[start:stop])
            rows = h_owner[start:stop][owner]
            out.index_put_((rows, self.cooc_items[pos]), self.cooc_values[pos], accumulate=True)
            start = stop
        no_history = (self.history_indptr[users + 1] - self.history_indptr[users]) == 0
        if bool(no_history.any()):
            out[no_history] = pop.to(out.dtype)
        return out

    def score(self, users, items):
        users, items = torch.broadcast_tensors(torch.as_tensor(users), torch.as_tensor(items))
        unique, inverse = torch.unique(users.reshape(-1), return_inverse=True)
        full = self.full_scores(unique)
        return full[inverse, items.reshape(-1)].reshape(users.shape)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def shared_users(datamodule) -> np.ndarray:
    """Users with training interactions in both the source and the target store (sorted)."""
    idx = datamodule.index
    return np.intersect1d(idx.users_with(datamodule.source_domain, "train"), idx.users_with(datamodule.target_domain, "train"))


def take_saved_shapes(module: torch.nn.Module, state_dict: dict, prefix: str, names) -> None:
    """Resize ``module``'s buffers ``names`` to the shapes saved in ``state_dict``: buffers whose
    length depends on the data (sparse counts) must take the saved shape before the copy."""
    for name in names:
        saved = state_dict.get(prefix + name)
        if isinstance(saved, torch.Tensor):
            setattr(module, name, torch.empty_like(saved, device=getattr(module, name).device))


def _csr_gather(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR ``indptr`` and a vector of row indices: (position in ``rows`` of each stored entry,
    index of that entry in the CSR data), all rows' entries concatenated in order."""
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    total = int(lens.sum()) if len(lens) else 0
    owner = torch.repeat_interleave(torch.arange(len(rows), device=indptr.device), lens, output_size=total)
    offsets = torch.cumsum(lens, 0) - lens
    pos = torch.arange(total, device=indptr.device) - torch.repeat_interleave(offsets - starts, lens, output_size=total)
    return owner, pos


def _target_domain(datamodule, model) -> str:
    domain = getattr(datamodule, "target_domain", None)
    if domain is None or not hasattr(datamodule, "index"):
        raise CrossRecError(f"{type(model).__name__} needs a crossrec_lit DataModule", "train it with InteractionDataModule or CrossDomainDataModule")
    if datamodule.eval_domain != domain:
        raise CrossRecError(
            f"{type(model).__name__} ranks the target store, but the DataModule evaluates {datamodule.eval_domain!r}",
            "use eval_domain='target'",
        )
    if datamodule.num_items != model.num_items:
        raise CrossRecError(
            f"num_items={model.num_items} but the target store has {datamodule.num_items} items",
            "link num_items from this DataModule (model_arguments_for)",
        )
    return domain


def _cross_domains(datamodule, model) -> tuple[str, str]:
    if not hasattr(datamodule, "source_domain"):
        raise CrossRecError(f"{type(model).__name__} needs a CrossDomainDataModule", "train it with crossrec_lit.data.CrossDomainDataModule")
    return datamodule.source_domain, _target_domain(datamodule, model)
