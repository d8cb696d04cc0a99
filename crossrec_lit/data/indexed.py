"""Integer view of a split table: what models and samplers consume.

Users share ONE index space across domains, so a user who shops in both stores has the same
index in each: this is what lets a cross-domain model share or map user parameters. Items are
indexed per domain (stores have separate catalogues). The catalogue of a domain is every item
seen in any split part, so full ranking is over all items, as in the protocol.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from crossrec_lit.data.interactions import SPLIT_VALUES, InteractionTable, Vocab
from crossrec_lit.errors import CrossRecError


class IndexedInteractions:
    """Arrays and sparse matrices of a split :class:`InteractionTable`."""

    def __init__(self, table: InteractionTable):
        if not table.has_split:
            raise CrossRecError("IndexedInteractions needs a split table", "split the table first (crossrec_lit.data.split)")
        self.table = table
        frame = table.frame
        self.user_vocab = Vocab(frame["user"].unique())
        self.item_vocabs = {d: Vocab(frame.loc[frame["domain"] == d, "item"].unique()) for d in table.domains}
        self._users = self.user_vocab.encode(frame["user"].to_numpy(), what="user")
        self._items = np.empty(len(frame), dtype=np.int64)
        self._masks: dict[tuple[str, str], np.ndarray] = {}
        for d, vocab in self.item_vocabs.items():
            in_d = (frame["domain"] == d).to_numpy()
            self._items[in_d] = vocab.encode(frame.loc[in_d, "item"].to_numpy(), what="item")
            for part in SPLIT_VALUES:
                self._masks[(d, part)] = in_d & (frame["split"] == part).to_numpy()
        self._ratings = frame["rating"].to_numpy(np.float32) if table.has_ratings else None
        self._positions = frame["position"].to_numpy(np.int64)
        self._matrix_cache: dict[tuple[str, tuple[str, ...]], sp.csr_matrix] = {}

    @property
    def domains(self) -> list[str]:
        return list(self.item_vocabs)

    @property
    def num_users(self) -> int:
        return len(self.user_vocab)

    def num_items(self, domain: str) -> int:
        self._check(domain)
        return len(self.item_vocabs[domain])

    def arrays(self, domain: str, parts: str | tuple[str, ...] = "train") -> dict[str, np.ndarray]:
        """users, items (and ratings, positions) of one domain's split part(s), in table order."""
        mask = self._mask(domain, parts)
        out = {"users": self._users[mask], "items": self._items[mask], "positions": self._positions[mask]}
        if self._ratings is not None:
            out["ratings"] = self._ratings[mask]
        return out

    def matrix(self, domain: str, parts: str | tuple[str, ...] = "train") -> sp.csr_matrix:
        """Binary user x item CSR matrix of one domain's split part(s)."""
        key = (domain, (parts,) if isinstance(parts, str) else tuple(parts))
        if key not in self._matrix_cache:
            a = self.arrays(domain, parts)
            data = np.ones(len(a["users"]), dtype=np.bool_)
            m = sp.csr_matrix((data, (a["users"], a["items"])), shape=(self.num_users, self.num_items(domain)))
            m.sum_duplicates()
            m.sort_indices()
            self._matrix_cache[key] = m
        return self._matrix_cache[key]

    def users_with(self, domain: str, parts: str | tuple[str, ...]) -> np.ndarray:
        """Sorted indices of users who have at least one interaction in ``parts`` of ``domain``."""
        return np.unique(self.arrays(domain, parts)["users"])

    def item_counts(self, domain: str, parts: str | tuple[str, ...] = "train") -> np.ndarray:
        return np.bincount(self.arrays(domain, parts)["items"], minlength=self.num_items(domain))

    def _mask(self, domain: str, parts) -> np.ndarray:
        self._check(domain)
        parts = (parts,) if isinstance(parts, str) else tuple(parts)
        bad = [p for p in parts if p not in SPLIT_VALUES]
        if bad:
            raise CrossRecError(f"unknown split part(s) {bad}", f"use {list(SPLIT_VALUES)}")
        mask = np.zeros(len(self._users), dtype=bool)
        for p in parts:
            mask |= self._masks[(domain, p)]
        return mask

    def _check(self, domain: str) -> None:
        if domain not in self.item_vocabs:
            raise CrossRecError(f"unknown domain {domain!r}; the data has {self.domains}", f"use one of {self.domains}")
