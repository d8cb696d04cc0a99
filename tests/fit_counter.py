"""Callbacks that tests hand to the runner by class path (its workers and other processes import them)."""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback


class CountFits(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_fit_start(self, trainer, pl_module) -> None:
        with open(self.path, "a") as fh:  # one short append per fit: atomic enough across processes
            fh.write(f"{type(pl_module).__name__}\n")


class PauseOnce(Callback):
    """Stops the first fit that reaches an epoch end for ``seconds``, once across processes (the
    marker file says it happened): a test kills the process while it waits."""

    def __init__(self, path: str, seconds: float = 120.0):
        self.path = path
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import os
        import time

        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        time.sleep(self.seconds)
