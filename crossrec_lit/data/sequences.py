"""Customers' purchase sequences as fixed-width arrays, and training batches of whole sequences.

A sequence model reads each customer's items in the order they were bought. Here a sequence is a
row of a ``[num_users, length]`` array of item indices shifted by one (0 is padding), aligned to
the right: the last column holds the most recent purchase, and a history longer than ``length``
keeps its most recent ``length`` items (left truncation). Right alignment keeps the most recent
item in a fixed column, which is where a causal model reads the customer's state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import IterableDataset

from crossrec_lit.data.sampling import _worker_slice, derive_seed
from crossrec_lit.errors import CrossRecError

PAD = 0  # padding index of a sequence array; item i is stored as i + 1


def padded_sequences(users: np.ndarray, items: np.ndarray, positions: np.ndarray, num_users: int, length: int) -> np.ndarray:
    """``[num_users, length]`` int64: each user's items ordered by ``positions``, shifted by one,
    right-aligned and left-truncated, 0 where the user has fewer items (all 0 for none)."""
    if length < 1:
        raise CrossRecError(f"sequence length must be >= 1, got {length}", "use e.g. 50")
    users, items, positions = (np.asarray(a, dtype=np.int64) for a in (users, items, positions))
    out = np.zeros((num_users, length), dtype=np.int64)
    if len(users) == 0:
        return out
    order = np.lexsort((-positions, users))  # per user, most recent first
    users, items = users[order], items[order]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    back = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))  # 0 = most recent
    keep = back < length
    out[users[keep], length - 1 - back[keep]] = items[keep] + 1
    return out


class SequenceBatches(IterableDataset):
    """One epoch of shuffled batches of customers' training sequences.

    A batch is ``users`` [B], ``inputs`` [B, L] and ``targets`` [B, L]: the target at position t is
    the item bought after the input at t (next-item prediction at every position; 0 where there is
    none). Each customer with at least two training items appears once per epoch. ``sequences`` is
    a :func:`padded_sequences` array of width L + 1.

    With ``bucket`` (default), a batch holds customers of similar history length and is cut to the
    longest of them: on Amazon stores most histories are a few items long, so batches of 50
    columns would be mostly padding. The batches' order is shuffled, and ties in length are
    broken at random, so every epoch still sees different batches.
    """

    def __init__(self, sequences: np.ndarray, *, batch_size: int = 256, seed: int = 0, shuffle: bool = True, bucket: bool = True):
        super().__init__()
        if sequences.ndim != 2 or sequences.shape[1] < 2:
            raise CrossRecError(f"sequences must be [users, length + 1] with length >= 1, got shape {sequences.shape}", "build them with padded_sequences")
        if batch_size < 1:
            raise CrossRecError(f"batch_size must be >= 1, got {batch_size}", "use a positive batch size such as 256")
        self.sequences = torch.as_tensor(sequences, dtype=torch.long)
        # a customer needs an input and a later target
        lengths = (self.sequences != PAD).sum(1)
        self.users = torch.nonzero(lengths >= 2).flatten()
        self.lengths = lengths[self.users]
        if len(self.users) == 0:
            raise CrossRecError("no customer has two training items in sequence", "check the split and the data: sequence models learn from what follows what")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.bucket = bucket
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch_size)

    def __iter__(self):
        worker, n_workers = _worker_slice()
        n = len(self.users)
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        batches = torch.arange(len(self))
        if self.bucket:
            # stable sort by length keeps the random order within a length
            order = order[torch.sort(self.lengths[order], stable=True).indices]
            if self.shuffle:
                batches = torch.randperm(len(self), generator=g)
        for i, b in enumerate(batches.tolist()):
            if i % n_workers != worker:
                continue
            chosen = order[b * self.batch_size : (b + 1) * self.batch_size]
            users = self.users[chosen]
            rows = self.sequences[users]
            if self.bucket:
                rows = rows[:, -int(self.lengths[chosen].max()) :]
            yield {"users": users, "inputs": rows[:, :-1], "targets": rows[:, 1:]}
