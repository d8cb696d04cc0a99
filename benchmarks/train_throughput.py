"""Training throughput: the package's Lightning BPR-MF against a bare PyTorch loop, same work.

    python benchmarks/train_throughput.py [--interactions 500000 --users 10000 --items 5000]

Both sides train BPR-MF (dim 64, batch 4096, one uniform negative per positive, the same
optimiser) for one epoch over the same interactions; the bare loop walks pre-shuffled index
tensors, the package goes through InteractionDataModule -> TrainBatches -> Trainer. Rounds are
interleaved so that load from other processes hits both sides alike; the median per side is
reported, with the ratio package / bare (target: >= 0.9). A second table shows why the default
optimiser is fused Adam and when to switch to sparse (lazy) Adam: dense Adam touches every row of both
tables at every step, so its cost grows with the catalogue, not the batch.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from _timing import EpochTimer
from crossrec_lit import set_num_threads
from crossrec_lit.data import InteractionDataModule, InteractionTable, TableSource
from crossrec_lit.models import BPRMF
from crossrec_lit.models.embedding import Embedding
from crossrec_lit.optim import LazyAdam
from crossrec_lit.training import quiet_trainer

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning_fabric").setLevel(logging.ERROR)


def make_data(n: int, users: int, items: int, seed: int = 0) -> InteractionTable:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    # a Zipf-like item popularity, as in real catalogues
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    i = rng.choice(items, size=n, p=weights / weights.sum())
    frame = pd.DataFrame({"user": u.astype(str), "item": i.astype(str)}).drop_duplicates()
    return InteractionTable.from_frame(frame, domain="bench")


def bare_epoch(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int, optimizer: str, dim: int, batch: int, seed: int) -> float:
    """One epoch of a hand-written loop; returns samples/s."""
    torch.manual_seed(seed)
    sparse = optimizer == "sparse_adam"
    # the package's Embedding (torch's, with a faster CPU backward): the same kernels on both sides,
    # so the ratio measures what Lightning and the batch datasets add, nothing else
    user_emb = Embedding(num_users, dim, sparse=sparse)
    item_emb = Embedding(num_items, dim, sparse=sparse)
    torch.nn.init.xavier_normal_(user_emb.weight)
    torch.nn.init.xavier_normal_(item_emb.weight)
    params = list(user_emb.parameters()) + list(item_emb.parameters())
    opt = LazyAdam(params, lr=1e-3) if sparse else torch.optim.Adam(params, lr=1e-3, fused=optimizer == "adam")
    g = torch.Generator().manual_seed(seed)
    # the shuffle is timed: the package's epoch shuffles and gathers its columns inside its timer too
    start = time.perf_counter()
    order = torch.randperm(len(users), generator=g)
    u_all, i_all = users[order], items[order]
    for s in range(0, len(users), batch):
        u, i = u_all[s : s + batch], i_all[s : s + batch]
        j = torch.randint(num_items, (len(u), 1), generator=g)
        uv = user_emb(u)
        diff = (uv * item_emb(i)).sum(-1, keepdim=True) - (uv.unsqueeze(1) * item_emb(j)).sum(-1)
        loss = -F.logsigmoid(diff).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(users) / (time.perf_counter() - start)


def package_epoch(dm: InteractionDataModule, optimizer: str, dim: int, seed: int) -> float:
    pl.seed_everything(seed, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=dim, lr=1e-3, optimizer=optimizer)
    timer = EpochTimer()
    trainer = quiet_trainer(1, [timer], limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return len(dm.index.arrays(dm.target_domain, "train")["users"]) / timer.last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interactions", type=int, default=500_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--catalogue-sizes", type=int, nargs="*", default=[10_000, 1_000_000], help="table rows for the optimiser table")
    args = p.parse_args()
    set_num_threads(args.threads)

    table = make_data(args.interactions, args.users, args.items)
    dm = InteractionDataModule(TableSource(table), batch_size=args.batch, num_negatives=1, exclude_positives=False)
    dm_excl = InteractionDataModule(TableSource(table), batch_size=args.batch, num_negatives=1, exclude_positives=True)
    train = dm.index.arrays(dm.target_domain, "train")
    users, items = torch.from_numpy(train["users"]), torch.from_numpy(train["items"])
    dm_excl.setup()
    print(f"# BPR-MF one epoch: {len(users):,} training interactions, {dm.num_users:,} users, {dm.num_items:,} items, "
          f"dim {args.dim}, batch {args.batch}, {args.threads} thread(s), {args.rounds} interleaved rounds (median)")

    results = {"bare loop": [], "package": [], "package, negatives exclude positives": []}
    for r in range(args.rounds):
        results["bare loop"].append(bare_epoch(users, items, dm.num_users, dm.num_items, "adam", args.dim, args.batch, r))
        results["package"].append(package_epoch(dm, "adam", args.dim, r))
        results["package, negatives exclude positives"].append(package_epoch(dm_excl, "adam", args.dim, r))
    bare = statistics.median(results["bare loop"])
    print(f"{'side':40s} {'samples/s':>12s} {'ratio to bare':>14s}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:40s} {med:12,.0f} {med / bare:14.2f}")

    print("\n# Optimiser cost vs catalogue size (bare loop, one epoch of the same interactions; "
          "user and item tables both padded to N rows)")
    print(f"{'rows N':>10s} {'Adam':>12s} {'Adam fused':>12s} {'LazyAdam':>12s}   samples/s")
    for n_rows in args.catalogue_sizes:
        n_rows = max(n_rows, dm.num_users, dm.num_items)
        sub_u, sub_i = users[:200_000], items[:200_000]
        row = [bare_epoch(sub_u, sub_i, n_rows, n_rows, opt, args.dim, args.batch, 0) for opt in ("adam_foreach", "adam", "sparse_adam")]
        print(f"{n_rows:>10,d} {row[0]:12,.0f} {row[1]:12,.0f} {row[2]:12,.0f}")


if __name__ == "__main__":
    main()
