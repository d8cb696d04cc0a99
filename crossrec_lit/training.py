"""A Lightning Trainer set up for quiet CPU runs in notebooks, scripts and tests."""

from __future__ import annotations

from collections.abc import Iterable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

__all__ = ["quiet_trainer"]


def quiet_trainer(max_epochs: int | None = 1, callbacks: Iterable[Callback] = (), **kwargs) -> pl.Trainer:
    """A CPU :class:`~pytorch_lightning.Trainer` with no logger, progress bar, model summary or
    sanity validation.

    Checkpointing is on only when a :class:`~pytorch_lightning.callbacks.ModelCheckpoint` is among
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
    )
    settings.update(kwargs)
    return pl.Trainer(**settings)
