"""SASRec's training cost per epoch: full softmax, sampled softmax and BCE, with and without
batches bucketed by history length.

    python benchmarks/sasrec_loss.py [--data-root PATH] [--rounds 3]

One epoch of SASRec (2 blocks, 2 heads, 64-d, 50 positions, batch 256 customers) on Amazon Toys
(P5 5-core, leave-one-out) when the files are found, else on synthetic stores of a similar shape.
Every variant trains the same epoch through the same DataModule and Trainer; rounds are
interleaved so that load from other processes hits all variants alike, and the median seconds
per epoch are printed with the ratio to the full softmax with bucketing. What this measures is
cost only; which loss reaches which NDCG@10 is the job of configs/toys_sequential.yaml.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import pytorch_lightning as pl

from crossrec_lit import set_num_threads
from crossrec_lit.data import AmazonP5, InteractionDataModule, Synthetic
from crossrec_lit.data.sources import available_p5_domains, default_data_root
from crossrec_lit.models import SASRec
from crossrec_lit.training import quiet_trainer

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*no `val_dataloader`.*")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

VARIANTS = {  # name -> (loss, bucketed batches)
    "full softmax, bucketed": ("ce", True),
    "full softmax, 50 columns": ("ce", False),
    "sampled softmax (1024 shared), bucketed": ("sampled", True),
    "sampled softmax (1024 shared), 50 columns": ("sampled", False),
    "BCE (1 negative), bucketed": ("bce", True),
}


def datamodule(root):
    if root is not None and "Toys" in available_p5_domains(root):
        source, domain, what = AmazonP5(root=root, domains=["Toys"]), "Toys", "Amazon Toys (P5 5-core)"
    else:
        source, domain, what = Synthetic(n_users=20000, n_items=(1000, 12000), interactions_per_user=(8, 8), seed=0), "B", "synthetic stand-in (no Toys file)"
    dm = InteractionDataModule(source, domain, split="leave_one_out", batch_size=256, sequence_len=50, seed=0)
    dm.setup()
    return dm, what


def one_epoch(dm, loss: str, bucket: bool) -> float:
    loader = dm.train_dataloader()
    loader.dataset.bucket = bucket
    pl.seed_everything(0, verbose=False)
    model = SASRec(**dm.model_arguments_for(SASRec), max_len=50, embedding_dim=64, num_blocks=2, num_heads=2, ffn_dim=256, dropout=0.5, loss=loss, num_sampled=1024)
    trainer = quiet_trainer(1, limit_val_batches=0, num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="folder with the P5 files (default: $CROSSREC_DATA or ../shared/data/amazon_p5)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_num_threads(args.threads)
    dm, what = datamodule(args.data_root or default_data_root())
    print(f"{what}: {dm.num_users:,} customers, {dm.num_items:,} items; {args.threads} thread(s), {args.rounds} rounds")
    seconds = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (loss, bucket) in VARIANTS.items():
            seconds[name].append(one_epoch(dm, loss, bucket))
    reference = statistics.median(seconds["full softmax, bucketed"])
    print(f"{'variant':44s} {'s/epoch':>8s} {'x full softmax, bucketed':>26s}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:44s} {median:8.1f} {median / reference:26.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
