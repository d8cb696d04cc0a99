"""Where a training step's time goes: the package's BPR-MF step taken apart, and Lightning's own
per-step cost measured on a step that does no work.

    python benchmarks/step_profile.py [--interactions 500000 --users 10000 --items 5000] [--epochs 3]

Part 1 times the phases of each step of a Lightning epoch (the data of ``train_throughput.py``)
with a callback's hooks: the training step (forward, loss, Lightning's closure around it), zero
grad, backward, the optimiser step, and the gap between one batch's end and the next batch's
start (fetching the batch plus the loop's bookkeeping). The same model and batches in a bare loop
give the same phases without Lightning. Part 2 trains a one-parameter model on ready-made batches,
so each step is almost all framework: automatic optimisation, manual optimisation and a bare loop.
Medians over epochs; ms per step; one thread.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from crossrec_lit import set_num_threads
from crossrec_lit.data import InteractionDataModule, TableSource
from crossrec_lit.models import BPRMF
from crossrec_lit.training import quiet_trainer
from train_throughput import make_data

warnings.filterwarnings("ignore")
for _name in ("pytorch_lightning", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)

PHASES = ("training step", "zero grad", "backward", "optimiser step", "between batches")


class PhaseTimer(pl.Callback):
    """Adds up the time between consecutive per-step hooks, by phase."""

    def __init__(self):
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.steps = 0
        self._last = None

    def _mark(self, phase: str | None) -> None:
        """Charge the time since the previous hook to ``phase`` (None: charge nothing)."""
        now = time.perf_counter()
        if self._last is not None and phase is not None:
            self.totals[phase] += now - self._last
        self._last = now

    def on_train_epoch_start(self, trainer, pl_module):
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._mark("between batches" if self._last is not None else None)
        self.steps += 1

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        self._mark("training step")

    def on_before_backward(self, trainer, pl_module, loss):
        self._mark("zero grad")

    def on_after_backward(self, trainer, pl_module):
        self._mark("backward")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mark("optimiser step")


def lightning_phases(dm, epochs: int) -> dict[str, float]:
    timer = PhaseTimer()
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=64, lr=1e-3)
    trainer = quiet_trainer(epochs, [timer], limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return {phase: total / timer.steps * 1e3 for phase, total in timer.totals.items()}


def bare_phases(dm, epochs: int) -> dict[str, float]:
    """The same model, loss and batches (the DataModule's loader), stepped by hand."""
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=64, lr=1e-3)
    optimizer = model.configure_optimizers()
    totals, steps = dict.fromkeys(PHASES, 0.0), 0
    for epoch in range(epochs):
        loader = dm.train_dataloader()
        loader.dataset.set_epoch(epoch)
        last = None
        for batch in loader:
            t0 = time.perf_counter()
            if last is not None:
                totals["between batches"] += t0 - last
            loss = model.loss(batch)
            t1 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            last = time.perf_counter()
            for phase, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, last - t3)):
                totals[phase] += seconds
            steps += 1
    return {phase: total / steps * 1e3 for phase, total in totals.items()}


class _Ready(IterableDataset):
    def __init__(self, n: int):
        self.n, self.batch = n, {"users": torch.zeros(4, dtype=torch.long)}

    def __len__(self):
        return self.n

    def __iter__(self):
        return (self.batch for _ in range(self.n))


class _OneParameter(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _OneParameterManual(_OneParameter):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(self.w.sum())
        optimizer.step()


def framework_us(kind: str, steps: int = 2000) -> float:
    """Microseconds per step of a step that does (almost) nothing."""
    if kind == "bare loop":
        model = _OneParameter()
        optimizer = model.configure_optimizers()
        start = time.perf_counter()
        for batch in DataLoader(_Ready(steps), batch_size=None):
            optimizer.zero_grad()
            model.w.sum().backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps * 1e6
    model = _OneParameter() if kind == "Lightning, automatic optimisation" else _OneParameterManual()
    trainer = quiet_trainer(1, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=DataLoader(_Ready(steps), batch_size=None))
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interactions", type=int, default=500_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    set_num_threads(args.threads)
    dm = InteractionDataModule(TableSource(make_data(args.interactions, args.users, args.items)), batch_size=4096, num_negatives=1, exclude_positives=False)
    dm.setup("fit")

    runs = {"Lightning": [], "bare loop": []}
    for _ in range(args.rounds):  # interleaved, so load from other processes hits both alike
        runs["Lightning"].append(lightning_phases(dm, args.epochs))
        runs["bare loop"].append(bare_phases(dm, args.epochs))
    print(f"# BPR-MF step phases, ms per step (median of {args.rounds} interleaved rounds of {args.epochs} epochs), {args.threads} thread(s)")
    print(f"{'phase':18s} {'Lightning':>10s} {'bare loop':>10s} {'difference':>11s}")
    med = {side: {phase: statistics.median(r[phase] for r in rs) for phase in PHASES} for side, rs in runs.items()}
    for phase in PHASES + ("total",):
        a = sum(med["Lightning"].values()) if phase == "total" else med["Lightning"][phase]
        b = sum(med["bare loop"].values()) if phase == "total" else med["bare loop"][phase]
        print(f"{phase:18s} {a:10.3f} {b:10.3f} {a - b:+11.3f}")

    print("\n# a step that does no work: microseconds per step (median of rounds)")
    kinds = ("Lightning, automatic optimisation", "Lightning, manual optimisation", "bare loop")
    cost = {kind: statistics.median(framework_us(kind) for _ in range(args.rounds)) for kind in kinds}
    for kind in kinds:
        print(f"{kind:36s} {cost[kind]:8.0f}")


if __name__ == "__main__":
    main()
