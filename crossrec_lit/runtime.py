"""Process-level settings that make runs repeatable and fast on shared CPUs."""

from __future__ import annotations

import os

import torch

from crossrec_lit.errors import CrossRecError


def set_num_threads(num_threads: int | None) -> None:
    """Pin torch's intra-op thread pool.

    On a busy 2-core machine the default OpenMP pool was measured 17x slower per training step than
    one thread (threads spin waiting for a core), so benchmarks and tests pin it. ``None`` keeps
    torch's default.
    """
    if num_threads is None:
        return
    if int(num_threads) < 1:
        raise CrossRecError(f"num_threads must be >= 1, got {num_threads}", "pass 1 or more, or None for torch's default")
    torch.set_num_threads(int(num_threads))


def threads_from_env(default: int | None = None) -> int | None:
    """Thread count from ``CROSSREC_NUM_THREADS`` (set by the Makefile for tests and benchmarks)."""
    value = os.environ.get("CROSSREC_NUM_THREADS")
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise CrossRecError(f"CROSSREC_NUM_THREADS={value!r} is not an integer", "set it to a whole number such as 1") from None


# Warnings that say nothing a user of this package can act on; one list, used by the experiment
# runner, its worker processes and the book's chapters (pyproject.toml's pytest filters mirror it).
KNOWN_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    # Lightning 2.6 calls torch 2.13's deprecated pytree LeafSpec inside fit
    (r".*LeafSpec.*", FutureWarning),
    # advice to add DataLoader workers: our loaders yield whole, vectorised batches
    (r".*does not have many workers.*", UserWarning),
    (r".*`?IterableDataset`? has `__len__` defined.*", UserWarning),
    # epochs of a few batches on small data are shorter than Lightning's logging interval
    (r".*smaller than the logging interval.*", UserWarning),
)


def filter_known_warnings() -> None:
    """Silence :data:`KNOWN_NOISE` for the rest of the process (use ``warnings.catch_warnings()``
    around the call to scope it)."""
    import warnings

    for message, category in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_lightning_logs() -> None:
    """Lightning's start-up banners (GPU available, TPU cores...) are INFO log lines; keep warnings."""
    import logging

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
