"""Full-ranking evaluation throughput: the package path against its limit and a naive loop.

Random user/item factors; every user has 1 random test item and ``--exclude`` random training
items (disjoint from the test item) that must be left out of the ranking. Three ways to evaluate
all users at NDCG@K & co:

(a) package  -- EvalBatches over scipy CSR matrices + RankingAccumulator.update, one matmul per batch
(b) limit    -- one matmul + torch.topk per batch, nothing else (no masking, no metrics)
(c) per-user -- a Python loop: one mat-vec per user, mask, topk, NDCG; timed on a subset and
                extrapolated

Run:  .venv/bin/python benchmarks/eval_throughput.py [--users 20000 --items 12000 ...]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import scipy.sparse as sp
import torch

from crossrec_lit.data.sampling import EvalBatches
from crossrec_lit.evaluation.protocol import RankingAccumulator


def make_data(users: int, items: int, dim: int, n_exclude: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    item_f = torch.randn((items, dim), generator=g)
    rng = np.random.default_rng(seed)
    test_item = rng.integers(0, items, size=users)
    # n_exclude distinct training items per user, none equal to the test item
    excl = np.empty((users, n_exclude), dtype=np.int64)
    for u in range(users):
        pool = rng.choice(items - 1, size=n_exclude, replace=False)
        excl[u] = pool + (pool >= test_item[u])  # skip over the test item
    # a user vector that points at its test item and at two of its training items, plus noise:
    # the test item often ranks high (non-trivial NDCG) and the masking of training items matters
    like = torch.from_numpy(np.concatenate([test_item[:, None], excl[:, :2]], axis=1))
    user_f = item_f[like].sum(1) + 1.2 * torch.randn((users, dim), generator=g)
    user_f /= math.sqrt(dim)
    truth = sp.csr_matrix((np.ones(users, dtype=np.float32), (np.arange(users), test_item)), shape=(users, items))
    rows = np.repeat(np.arange(users), n_exclude)
    exclude = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, excl.ravel())), shape=(users, items))
    return user_f, item_f, truth, exclude


def quantise(scores: torch.Tensor, levels: int) -> torch.Tensor:
    """With ``--tie-levels L``, round scores to a grid of L steps per unit: many exact ties."""
    return scores if levels <= 0 else torch.round(scores * levels)


def run_package(user_f, item_f, truth, exclude, users, k, batch, levels=0, keep_per_user=False):
    acc = RankingAccumulator((k,), keep_per_user=keep_per_user)
    item_t = item_f.T.contiguous()
    for b in EvalBatches(users, truth, exclude, batch_size=batch):
        acc.update(quantise(user_f[b["users"]] @ item_t, levels), b)
    return acc


def run_limit(user_f, item_f, k, batch, levels=0):
    item_t = item_f.T.contiguous()
    checksum = 0
    for start in range(0, user_f.shape[0], batch):
        top = torch.topk(quantise(user_f[start : start + batch] @ item_t, levels), k, dim=1).indices
        checksum += int(top[0, 0])
    return checksum


def run_per_user(user_f, item_f, truth, exclude, users, k, levels=0):
    """Naive loop; returns per-user NDCG@k (ties broken by the lower index, like the package)."""
    discount = [1.0 / math.log2(r + 2) for r in range(k)]
    ndcg = []
    for u in users:
        scores = quantise(item_f @ user_f[u], levels)
        ex = exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]
        scores[torch.from_numpy(ex.astype(np.int64))] = float("-inf")
        if levels > 0:  # ties: a stable sort keeps tied items in index order
            top = torch.sort(scores, descending=True, stable=True).indices[:k].tolist()
        else:
            top = torch.topk(scores, k).indices.tolist()
        rel = set(truth.indices[truth.indptr[u] : truth.indptr[u + 1]].tolist())
        dcg = sum(discount[r] for r, i in enumerate(top) if i in rel)
        idcg = sum(discount[: min(len(rel), k)])
        ndcg.append(dcg / idcg)
    return ndcg


def best_of_interleaved(fns, repeats):
    """Best wall time of each function, alternating them so load changes hit all alike."""
    best = [float("inf")] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=12000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--exclude", type=int, default=8, help="training items excluded per user")
    p.add_argument("--loop-users", type=int, default=500, help="users timed in the per-user loop")
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs for (a) and (b)")
    p.add_argument("--tie-levels", type=int, default=0,
                   help="round scores to this many steps per unit to create ties (0: continuous scores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    user_f, item_f, truth, exclude = make_data(args.users, args.items, args.dim, args.exclude, args.seed)
    all_users = np.arange(args.users)
    n_loop = min(args.loop_users, args.users)
    subset = all_users[:n_loop]
    setup_s = time.perf_counter() - t0

    print(f"settings: users={args.users} items={args.items} dim={args.dim} k={args.k} batch={args.batch} "
          f"threads={torch.get_num_threads()} exclude/user={args.exclude} loop-users={n_loop} repeats={args.repeats} "
          f"tie-levels={args.tie_levels}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, data setup {setup_s:.2f}s")

    # warm-up (allocator, kernels) on one batch each
    lv = args.tie_levels
    run_package(user_f, item_f, truth, exclude, all_users[: args.batch], args.k, args.batch, lv)
    run_limit(user_f[: args.batch], item_f, args.k, args.batch, lv)

    (t_pkg, t_lim), (acc, _) = best_of_interleaved(
        [
            lambda: run_package(user_f, item_f, truth, exclude, all_users, args.k, args.batch, lv),
            lambda: run_limit(user_f, item_f, args.k, args.batch, lv),
        ],
        args.repeats,
    )
    (t_loop,), (loop_ndcg,) = best_of_interleaved([lambda: run_per_user(user_f, item_f, truth, exclude, subset, args.k, lv)], 1)

    ups_pkg = args.users / t_pkg
    ups_lim = args.users / t_lim
    ups_loop = n_loop / t_loop
    print()
    print(f"{'path':<34}{'seconds':>10}{'users/s':>14}")
    print(f"{'(a) package (RankingAccumulator)':<34}{t_pkg:>10.3f}{ups_pkg:>14,.0f}")
    print(f"{'(b) limit (matmul + topk)':<34}{t_lim:>10.3f}{ups_lim:>14,.0f}")
    print(f"{'(c) per-user loop (extrapolated)':<34}{t_loop * args.users / n_loop:>10.3f}{ups_loop:>14,.0f}   ({n_loop} users in {t_loop:.3f}s)")
    print()
    print(f"ratio package / limit          = {ups_pkg / ups_lim:.3f}")
    print(f"ratio package / per-user loop  = {ups_pkg / ups_loop:.1f}x")
    print(f"full-run ndcg@{args.k} (package)      = {acc.compute()[f'ndcg@{args.k}'].item():.6f}")

    # correctness: per-user NDCG of (a) and (c) on the common subset (untimed package pass)
    sub_acc = run_package(user_f, item_f, truth, exclude, subset, args.k, args.batch, lv, keep_per_user=True)
    frame = sub_acc.per_user()
    pkg_sub = frame[f"ndcg@{args.k}"].to_numpy()
    loop_sub = np.asarray(loop_ndcg)
    max_diff = float(np.abs(pkg_sub - loop_sub).max()) if len(loop_sub) else 0.0
    same = len(pkg_sub) == len(loop_sub) and max_diff < 1e-6
    print(f"ndcg@{args.k} on the {n_loop}-user subset: package {pkg_sub.mean():.6f}  per-user loop {loop_sub.mean():.6f}  "
          f"max |diff| per user {max_diff:.2e}  -> {'EQUAL' if same else 'DIFFERENT'}")
    print(f"total runtime {time.perf_counter() - t0:.1f}s")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
