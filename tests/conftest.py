"""Shared fixtures. Threads are pinned to one: on the shared 2-core machines torch's default
pool was measured 17x slower per step under load, and one thread makes runs repeatable."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from crossrec_lit.data import Synthetic
from crossrec_lit.data.sources import default_data_root

torch.set_num_threads(int(os.environ.get("CROSSREC_NUM_THREADS", "1")))
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
logging.getLogger("lightning_fabric").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny_source() -> Synthetic:
    """Two small synthetic stores (A: source, B: target) with strong shared structure."""
    return Synthetic(n_users=600, n_items=(200, 150), overlap=0.6, dim=8, interactions_per_user=(10, 8), seed=3)


@pytest.fixture(scope="session")
def data_root():
    """The real Amazon P5 folder, or skip with the reason."""
    root = default_data_root()
    if root is None or not (root / "Toys_user_sequence.txt.gz").exists():
        pytest.skip("real Amazon P5 data not found: set CROSSREC_DATA or place it in ../shared/data/amazon_p5")
    return root


def quiet_trainer(**kwargs):
    import pytorch_lightning as pl

    defaults = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, num_sanity_val_steps=0, deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)
