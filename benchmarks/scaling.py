"""Scaling: a training epoch of BPR-MF and of the joint model at growing data sizes.

    python benchmarks/scaling.py [--sizes 100000 1000000 10000000] [--dense-max 1000000] [--threads 1] [--thp] [--malloc settled|adaptive] [--out benchmarks/out]

Each (model, size) runs in its own process, so its peak memory (max RSS) is its own. Users and
items grow with the data (10 interactions per user, 20 per item; the joint model splits the
interactions between two stores sharing the users). The epoch goes through the package's batch
datasets and a Lightning Trainer, with negatives that exclude each user's positives. It prints
seconds, samples/s, peak RSS and the cost per million interactions (constant if the cost grows
linearly), writes a CSV and a figure, runs the large-catalogue check (BPR-MF with SparseAdam on
1M users x 1M items, where a dense optimiser would touch 2M rows every step), and ends with the
per-million cost ratio of the largest size to the smallest, after the same ratio for a bare torch
loop on the same table shapes (the memory floor: what random rows in tables larger than the
caches cost on this machine, with no package code in the way). Before those, a BPR-MF step with
the sparse optimiser is taken apart by phase (batch building with negative exclusion, forward,
backward, optimiser step) at the smallest and largest size, so the growth is charged to a phase.

A 0.1M epoch is about 25 steps and 0.2 s, short enough for one scheduler hiccup to move the ratio
by a tenth, and its first steps (allocating the optimiser's moments) weigh in it: sizes below
``--timed-interactions`` train several epochs, and every size trains at least two: the first epoch
is left out of the median. It is the warm-up (the optimiser's moment tables, about 770 MB at 10M,
are faulted in page by page as rows are first touched): measured 2026-12-07 at 10M, 47.5 s for the
first epoch against 42.6 and 43.2 s for the next two, where the smallest size's median of ten
epochs already left its warm-up out, so a one-epoch 10M row overstated the ratio by a tenth.
The headline ratio comes from three runs of its own, smallest / largest / smallest again, with the
mean of the two small ones as the denominator: the box's speed drifts over minutes, and a ratio of
two runs minutes apart measured the drift as much as the growth.
``--thp`` asks torch's allocator for transparent huge pages; at 10M the tables (about 1 GB with
the optimiser's moments) are read at random rows, and 4 KB pages make most of those reads a TLB
miss as well as a cache miss.
``--malloc settled`` (the default) starts every child with glibc's malloc thresholds where a long
run ends up (``_allocator.py``), as the peer benchmarks do; ``adaptive`` is glibc's own behaviour.
The suspicion was that the 0.2 s epochs of the smallest size time part of the allocator's warm-up
(it moved RecBole's first epochs by a third). Measured on 2026-12-07, two runs of each, alternated:
per-million ratio 1.55 and 1.46 settled, 1.57 and 1.33 adaptive; no difference beyond the noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers, when loaded by path (tests)
import _allocator as allocator  # noqa: E402

HERE = Path(__file__).resolve().parent


def shapes(n: int) -> tuple[int, int]:
    """Users and items at ``n`` interactions: 10 interactions per user, 20 per item."""
    return max(n // 10, 100), max(n // 20, 100)


def make_store(size: int, seed: int, n_users: int, n_items: int):
    """``size`` random (user, item) pairs, duplicates dropped: users uniform, items Zipf-like."""
    import numpy as np

    from crossrec_lit.data.pairset import sorted_unique

    r = np.random.default_rng(seed)
    u = r.integers(0, n_users, size)
    # Zipf-like item popularity, as in real catalogues
    i = np.minimum((r.pareto(1.2, size) * n_items / 50).astype(np.int64), n_items - 1)
    keys = sorted_unique(np.sort(u * n_items + i))  # np.unique took 11 s of the 10M setup
    return keys // n_items, keys % n_items


def train_batches(u, i, n_users: int, n_items: int, seed: int):
    """The package's batch dataset over a store: batch 4096, one negative that is never a positive."""
    import numpy as np
    import scipy.sparse as sp

    from crossrec_lit.data import TrainBatches

    positives = sp.csr_matrix((np.ones(len(u), dtype=bool), (u, i)), shape=(n_users, n_items))
    return TrainBatches(u, i, num_items=n_items, batch_size=4096, num_negatives=1, positives=positives, seed=seed)


def child(model: str, n: int, threads: int, optimizer: str, users: int | None, items: int | None, limit: int = 0, epochs: int = 1) -> dict:
    """Runs in the subprocess: build the data, train ``epochs`` epochs, report the median epoch."""
    import logging
    import statistics
    import warnings

    import numpy as np
    import torch
    from pytorch_lightning.utilities import CombinedLoader
    from torch.utils.data import DataLoader

    from _timing import EpochTimer
    from crossrec_lit import set_num_threads
    from crossrec_lit.models import BPRMF, SharedUserMF
    from crossrec_lit.training import quiet_trainer

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    set_num_threads(threads)
    rng = np.random.default_rng(0)
    n_users, n_items = shapes(n)
    n_users, n_items = users or n_users, items or n_items
    started = time.perf_counter()

    def store(size: int, seed: int):
        return make_store(size, seed, n_users, n_items)

    def batches(u, i, seed):
        return DataLoader(train_batches(u, i, n_users, n_items, seed), batch_size=None)

    if model == "bpr":
        u, i = store(n, 1)
        loader = batches(u, i, 0)
        net = BPRMF(n_users, n_items, embedding_dim=64, lr=1e-3, optimizer=optimizer)
        interactions = len(u)
    else:
        su, si = store(n // 2, 2)
        tu, ti = store(n - n // 2, 3)
        loader = CombinedLoader({"source": batches(su, si, 0), "target": batches(tu, ti, 1)}, mode="max_size_cycle")
        net = SharedUserMF(n_users, n_items, n_items, embedding_dim=64, lr=1e-3, optimizer=optimizer)
        interactions = len(su) + len(tu)
    setup_s = time.perf_counter() - started
    del rng

    timer = EpochTimer()
    trainer = quiet_trainer(epochs, [timer], limit_val_batches=0, limit_train_batches=limit or 1.0)
    trainer.fit(net, train_dataloaders=loader)
    # the joint model's epoch cycles the smaller store, so it processes about 2x its larger side
    processed = interactions if model == "bpr" else 2 * max(len(su), len(tu))
    if limit:
        processed = min(processed, limit * 4096 * (1 if model == "bpr" else 2))
    # the first epoch is the warm-up (see the module docstring); a single epoch is all there is
    epoch_s = statistics.median(timer.seconds[1:] or timer.seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"model": model, "optimizer": optimizer, "interactions": interactions, "users": n_users, "items": n_items,
            "setup_s": setup_s, "epochs": epochs, "epoch_s": epoch_s, "samples_per_s": processed / epoch_s, "peak_rss_mib": peak}


def floor_child(n: int, threads: int, steps: int = 200) -> dict:
    """The memory floor at size ``n``: a bare torch BPR step on tables of the benchmark's shapes.

    Uniform batches, no negative exclusion, no Lightning, no sparse gradients, and plain SGD
    written as ``index_add_``: one read and one write of each batch row, the fewest table accesses
    a BPR step can make. Once the tables outgrow the caches those rows are cache and TLB misses,
    so how much this step's cost per interaction grows from the smallest to the largest size is
    what the machine itself adds, whatever the package does.
    """
    import torch

    torch.set_num_threads(threads)
    (n_users, n_items), dim, batch = shapes(n), 64, 4096
    g = torch.Generator().manual_seed(0)
    users_emb = torch.randn(n_users, dim, generator=g) * 0.01
    items_emb = torch.randn(n_items, dim, generator=g) * 0.01
    users = torch.randint(0, n_users, (steps, batch), generator=g)
    pos = torch.randint(0, n_items, (steps, batch), generator=g)
    neg = torch.randint(0, n_items, (steps, batch), generator=g)

    def step(k: int, lr: float = 0.01) -> None:
        u, i, j = users_emb[users[k]], items_emb[pos[k]], items_emb[neg[k]]
        weight = torch.sigmoid(-(u * (i - j)).sum(1)).unsqueeze(1) * lr
        users_emb.index_add_(0, users[k], weight * (i - j))
        items_emb.index_add_(0, pos[k], weight * u)
        items_emb.index_add_(0, neg[k], -weight * u)

    warm = steps // 10
    for k in range(warm):
        step(k)
    started = time.perf_counter()
    for k in range(warm, steps):
        step(k)
    seconds = (time.perf_counter() - started) / (steps - warm)
    return {"interactions": n, "step_ms": seconds * 1e3, "s_per_million": seconds / batch * 1e6}


PHASE_NAMES = ("batch", "forward", "backward", "optimiser")


def phases_child(n: int, threads: int, steps: int = 300) -> dict:
    """Where a BPR-MF step with the sparse optimiser spends its time at size ``n``.

    The package's own pieces (TrainBatches with negatives that exclude positives, BPRMF.loss,
    LazyAdam), stepped by hand so each phase can be timed on its own: building the batch (shuffled
    slice, negative draws and the positives check), forward and loss, backward, optimiser step
    (which includes coalescing the sparse gradients). Lightning's loop is left out: its cost per
    step does not depend on the data. Mean ms per step after the first fifth of the steps.
    """
    from crossrec_lit import set_num_threads
    from crossrec_lit.models import BPRMF

    set_num_threads(threads)
    n_users, n_items = shapes(n)
    # the same store as the BPR-MF rows of the table (seed 1)
    u, i = make_store(n, 1, n_users, n_items)
    batches = train_batches(u, i, n_users, n_items, 0)
    net = BPRMF(n_users, n_items, embedding_dim=64, lr=1e-3, optimizer="sparse_adam")
    opt = net.configure_optimizers()
    totals = dict.fromkeys(PHASE_NAMES, 0.0)
    stream, skip = iter(batches), steps // 5
    for k in range(steps):
        t0 = time.perf_counter()
        batch = next(stream, None)
        if batch is None:
            batches.set_epoch(batches.epoch + 1)
            stream = iter(batches)
            batch = next(stream)
        t1 = time.perf_counter()
        loss = net.loss(batch)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if k >= skip:
            for name, seconds in zip(PHASE_NAMES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[name] += seconds
    return {"interactions": len(u), **{name: total / (steps - skip) * 1e3 for name, total in totals.items()}}


def warm_epochs(n: int, timed_interactions: int) -> int:
    """Epochs a size trains: enough to time about ``timed_interactions``, plus the warm-up epoch."""
    return max(math.ceil(timed_interactions / n), 1) + 1


def run(model: str, n: int, threads: int, optimizer: str = "adam", users=None, items=None, limit: int = 0, epochs: int = 1, thp: bool = False,
        malloc: str = "settled") -> dict:
    args = ["--child", model, str(n), str(threads), optimizer, str(users or 0), str(items or 0), str(limit), str(epochs)]
    return _in_fresh_process(args, thp, malloc, f"{model} at {n:,}")


def run_floor(n: int, threads: int, thp: bool = False, malloc: str = "settled") -> dict:
    return _in_fresh_process(["--floor", str(n), str(threads)], thp, malloc, f"the memory floor at {n:,}")


def run_phases(n: int, threads: int, thp: bool = False, malloc: str = "settled") -> dict:
    return _in_fresh_process(["--phases", str(n), str(threads)], thp, malloc, f"the step phases at {n:,}")


def child_env(thp: bool, malloc: str) -> dict[str, str]:
    """The environment of a child: torch's allocator reads THP_MEM_ALLOC_ENABLE and glibc its
    MALLOC_* variables once, at the process's first allocation, so only a fresh process can switch
    them; each is set or removed, never inherited by chance."""
    fixed = allocator.environment()
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE" and k not in fixed}
    if thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    if malloc == "settled":
        env.update(fixed)
    return env


def _in_fresh_process(args: list[str], thp: bool, malloc: str, what: str) -> dict:
    """This script's ``args`` mode in a process of its own; its last stdout line, read as JSON."""
    env = child_env(thp, malloc)
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--floor":
        print(json.dumps(floor_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--phases":
        print(json.dumps(phases_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, n, threads, optimizer, users, items, limit, epochs = sys.argv[2:10]
        print(json.dumps(child(model, int(n), int(threads), optimizer, int(users) or None, int(items) or None, int(limit), int(epochs))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--dense-max", type=int, default=1_000_000,
                   help="largest size run with dense Adam (its epoch grows quadratically: 10M takes tens of minutes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--skip-large-catalogue", action="store_true")
    p.add_argument("--timed-interactions", type=int, default=1_000_000,
                   help="a size below this trains several epochs (their median is reported), so every row times about this many interactions")
    p.add_argument("--thp", action="store_true",
                   help="back tensors of 2 MB and more with transparent huge pages (THP_MEM_ALLOC_ENABLE=1, read by torch's CPU allocator)")
    p.add_argument("--malloc", choices=["settled", "adaptive"], default="settled",
                   help="settled: glibc's malloc thresholds fixed from each child's start (benchmarks/_allocator.py); adaptive: glibc's default")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    print(f"# median epoch per row (sizes under {args.timed_interactions:,} interactions train several epochs), {args.threads} thread(s), dim 64, batch 4096, "
          f"negatives exclude positives, transparent huge pages {'on' if args.thp else 'off'}, malloc {args.malloc}")
    print(f"{'model/optimizer':18s} {'interactions':>13s} {'users':>10s} {'items':>10s} {'epoch s':>9s} {'samples/s':>11s} {'s per 1M':>9s} {'peak RSS MiB':>13s}")
    # SparseAdam updates only the rows a batch touches, so a step costs O(batch); dense Adam steps
    # every row, so with a catalogue that grows with the data its epoch grows quadratically
    for optimizer in ("sparse_adam", "adam"):
        for model in ("bpr", "joint"):
            for n in args.sizes:
                if optimizer == "adam" and n > args.dense_max:
                    continue
                r = run(model, n, args.threads, optimizer, epochs=warm_epochs(n, args.timed_interactions), thp=args.thp, malloc=args.malloc)
                rows.append(r)
                per_million = r["epoch_s"] / (r["interactions"] / 1e6)
                print(f"{model + '/' + optimizer:18s} {r['interactions']:13,d} {r['users']:10,d} {r['items']:10,d} {r['epoch_s']:9.2f} {r['samples_per_s']:11,.0f} {per_million:9.2f} {r['peak_rss_mib']:13,.0f}", flush=True)
    for model, optimizer in (("bpr", "sparse_adam"), ("joint", "sparse_adam"), ("bpr", "adam"), ("joint", "adam")):
        mine = [r for r in rows if r["model"] == model and r["optimizer"] == optimizer]
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            growth = (last["epoch_s"] / first["epoch_s"]) / (last["interactions"] / first["interactions"])
            print(f"{model}/{optimizer}: time grew {last['epoch_s'] / first['epoch_s']:.1f}x for {last['interactions'] / first['interactions']:.0f}x the data "
                  f"(1.0 = linear; measured {growth:.2f})")

    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(out / "scaling.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (model, optimizer), group in frame.groupby(["model", "optimizer"]):
        axes[0].loglog(group["interactions"], group["epoch_s"], "o-", label=f"{model}, {optimizer}")
        axes[1].loglog(group["interactions"], group["peak_rss_mib"], "o-", label=f"{model}, {optimizer}")
    axes[0].set(xlabel="training interactions", ylabel="seconds per epoch", title="Time per epoch")
    axes[1].set(xlabel="training interactions", ylabel="peak RSS (MiB)", title="Peak memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)
    print(f"wrote {out / 'scaling.csv'} and {out / 'scaling.png'}")

    if not args.skip_large_catalogue:
        print("\n# large catalogue: 1,000,000 users x 1,000,000 items, 2,000,000 interactions, BPR-MF, one epoch")
        # dense Adam steps every row of both 1M-row tables per batch: time 20 batches, not the epoch
        for optimizer, limit in (("sparse_adam", 0), ("adam", 20)):
            r = run("bpr", 2_000_000, args.threads, optimizer, users=1_000_000, items=1_000_000, limit=limit, thp=args.thp, malloc=args.malloc)
            print(f"{optimizer:12s} {r['samples_per_s']:11,.0f} samples/s   peak RSS {r['peak_rss_mib']:,.0f} MiB" + ("   (first 20 batches)" if limit else "   (target: > 150,000)"), flush=True)

    # the headline, last: BPR-MF with the sparse optimiser, the setting meant for big catalogues,
    # next to the memory floor of the same two sizes measured in this run
    if len(args.sizes) > 1:
        # its own three runs, smallest / largest / smallest again: this box's speed drifts by a
        # fifth over minutes (the same 10M epoch took 43 s and 53 s in two runs an hour apart), and
        # the table's 0.1M row ran minutes before its 10M row; the two small runs bracket the large
        # one, and their mean is the denominator
        small, large = args.sizes[0], args.sizes[-1]
        timed = [run("bpr", n, args.threads, "sparse_adam", epochs=warm_epochs(n, args.timed_interactions), thp=args.thp, malloc=args.malloc)
                 for n in (small, large, small)]
        first, last = timed[0], timed[1]
        costs = [r["epoch_s"] / (r["interactions"] / 1e6) for r in timed]
        per_million = [(costs[0] + costs[2]) / 2, costs[1]]
        label = f"{_size(last['interactions'])}/{_size(first['interactions'])}"
        print(f"\n# headline runs, BPR-MF with the sparse optimiser: s per 1M {costs[0]:.2f} at {_size(small)} before, "
              f"{costs[1]:.2f} at {_size(large)}, {costs[2]:.2f} at {_size(small)} after")
        # which phase of the step grows: the batch building (negative exclusion included) or the
        # reads and writes of table rows in the forward, backward and optimiser step
        phases = [run_phases(n, args.threads, thp=args.thp, malloc=args.malloc) for n in (small, large)]
        print(f"\n# BPR-MF step by phase, sparse optimiser, no Lightning (ms per step of 4,096 interactions)")
        print(f"{'interactions':>13s} " + " ".join(f"{name:>10s}" for name in PHASE_NAMES) + f" {'total':>10s}")
        for row in phases:
            row["total"] = sum(row[name] for name in PHASE_NAMES)
            print(f"{row['interactions']:13,d} " + " ".join(f"{row[name]:10.2f}" for name in (*PHASE_NAMES, "total")))
        print(f"{'ratio':>13s} " + " ".join(f"{phases[1][name] / phases[0][name]:10.2f}" for name in (*PHASE_NAMES, "total")))
        # the same huge-page and malloc settings as the package's rows, so the two stay side by side
        floors = [run_floor(n, args.threads, thp=args.thp, malloc=args.malloc) for n in (small, large)]
        # what the package adds over the floor, per million interactions: the part of the cost that
        # its sampling, batching and Lightning's loop own, where the memory system's growth is not
        added = [cost - floor["s_per_million"] for cost, floor in zip(per_million, floors)]
        print(f"\n# memory floor (bare torch BPR step, plain SGD by index_add_, no sampling): "
              f"{floors[0]['s_per_million']:.2f} s per 1M at {_size(first['interactions'])}, {floors[1]['s_per_million']:.2f} at {_size(last['interactions'])}; "
              f"the package adds {added[0]:.2f} and {added[1]:.2f}")
        if added[0] > 0:
            print(f"package's added per-million cost ratio {label}: {added[1] / added[0]:.2f}")
        print(f"bare-loop floor per-million cost ratio {label}: {floors[1]['s_per_million'] / floors[0]['s_per_million']:.2f}")
        print(f"per-million cost ratio {label}: {per_million[1] / per_million[0]:.2f}")


def _size(n: int) -> str:
    """0.1M, 1M, 10M: the interaction count (a little under the size asked for, after removing
    duplicate pairs) to one significant digit."""
    return f"{float(f'{n / 1e6:.1g}'):g}M"


if __name__ == "__main__":
    main()
