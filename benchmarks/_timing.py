"""The one epoch timer every benchmark uses, so their seconds per epoch mean the same thing.

An epoch is timed from ``on_train_epoch_start`` to the end of its last training batch: validation,
checkpointing and the epoch-end hooks, which run after that batch, are left out, since the
benchmarks compare training throughput. Batch datasets that shuffle in ``__iter__`` do so after
the epoch starts, so the shuffle is inside the timer (the bare loops time theirs too).
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl


class EpochTimer(pl.Callback):
    """``seconds``: one entry per training epoch; ``last`` is the latest (raises before any)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = trainer.num_training_batches
        if self._start is not None and not math.isinf(last) and batch_idx + 1 >= last:
            self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # an epoch of unknown length (a loader without __len__) has no known last batch
        if self._start is not None:
            self._stop()

    def _stop(self) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self._start = None

    @property
    def last(self) -> float:
        if not self.seconds:
            raise RuntimeError("no training epoch was timed: did the fit run any training batch?")
        return self.seconds[-1]
