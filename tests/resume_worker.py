"""Training process for tests/test_resume.py: fit BPR-MF, optionally stall mid-epoch to be killed.

    python tests/resume_worker.py OUT_DIR [--stall-at EPOCH BATCH] [--resume]

Checkpoints every epoch (last.ckpt) under OUT_DIR; with --stall-at it writes OUT_DIR/stalled
at that batch and sleeps until the test kills it with SIGKILL; with --resume it continues from
last.ckpt. It prints the final validation metrics as JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from crossrec_lit.data import InteractionDataModule, Synthetic
from crossrec_lit.models import BPRMF

warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning_fabric").setLevel(logging.ERROR)


class Stall(pl.Callback):
    def __init__(self, epoch: int, batch: int, marker: Path):
        self.epoch, self.batch, self.marker = epoch, batch, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.marker.write_text("stalled")
            time.sleep(600)  # the test kills us here, mid-epoch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--stall-at", type=int, nargs=2)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    dm = InteractionDataModule(Synthetic(n_users=600, n_items=(200, 150), seed=2), "B", batch_size=128, seed=0)
    pl.seed_everything(0, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=8, lr=0.01)
    callbacks = [ModelCheckpoint(dirpath=out, save_last=True, save_top_k=1, every_n_epochs=1)]
    if args.stall_at:
        callbacks.append(Stall(*args.stall_at, out / "stalled"))
    trainer = pl.Trainer(
        max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True, callbacks=callbacks,
    )
    trainer.fit(model, dm, ckpt_path=str(out / "last.ckpt") if args.resume else None)
    print(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}))


if __name__ == "__main__":
    sys.exit(main())
