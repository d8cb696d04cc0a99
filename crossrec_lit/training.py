"""A Lightning Trainer set up for quiet CPU runs in notebooks, scripts and tests, and the three
steps around it that every hand-run fit repeats: keep the best validation epoch, say which epoch
that was, and test those weights once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler

__all__ = ["NoProfiler", "best_checkpoint", "checkpoint_epoch", "evaluate_test", "quiet_trainer"]


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler, which records nothing, without its per-call cost.

    The Trainer wraps every hook it calls (about 30 per training step) in ``profiler.profile()``,
    a generator-based context manager that the pass-through profiler builds anew each time only
    to do nothing. This one hands out one shared no-op context instead.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._nothing


def quiet_trainer(max_epochs: int | None = 1, callbacks: Iterable[Callback] = (), **kwargs) -> pl.Trainer:
    """A CPU :class:`~pytorch_lightning.Trainer` with no logger, progress bar, model summary or
    sanity validation.

    Hooks are not profiled (:class:`NoProfiler`; pass ``profiler=`` to profile). Checkpointing is
    on only when a :class:`~pytorch_lightning.callbacks.ModelCheckpoint` is among
    ``callbacks`` (Lightning would otherwise add its own and write ``lightning_logs/`` into the
    working folder). ``max_epochs=None`` is Lightning's own default (bounded by ``max_steps`` when
    given). ``kwargs`` go to the Trainer and override every default above.
    """
    callbacks = list(callbacks)
    settings = dict(
        max_epochs=None if max_epochs is None else int(max_epochs),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        profiler=NoProfiler(),
    )
    settings.update(kwargs)
    return pl.Trainer(**settings)


def best_checkpoint(dirpath: str | os.PathLike, monitor: str = "val/ndcg@10", mode: str = "max") -> ModelCheckpoint:
    """A :class:`~pytorch_lightning.callbacks.ModelCheckpoint` that keeps only the weights of the
    best validation epoch, as ``<dirpath>/best.ckpt`` (one folder per model: a second fit into the
    same folder would replace it)."""
    # weights only: nothing resumes an optimiser from it (the runner, evaluate_test, load_trained and
    # LoadSourceWeights read state_dict and epoch), and Adam's two moments would triple its size
    return ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1, enable_version_counter=False, save_weights_only=True)


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """Epochs of training behind a checkpoint that ModelCheckpoint saved after a validation."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def evaluate_test(model: pl.LightningModule, datamodule: pl.LightningDataModule, ckpt_path: str | os.PathLike | None = None) -> dict[str, float]:
    """Test ``model`` once on ``datamodule`` and return its metrics without the ``test/`` prefix.

    With ``ckpt_path`` the checkpoint's weights are loaded into ``model`` first (in place, so the
    model keeps them afterwards, e.g. to recommend). The package's models also leave each test
    user's values in ``model.test_per_user``.
    """
    if ckpt_path is not None:
        model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"])
    result = quiet_trainer(1).test(model, datamodule=datamodule, verbose=False)[0]
    return {key.removeprefix("test/"): float(value) for key, value in result.items()}
