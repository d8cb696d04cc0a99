"""Peer comparison with RecBole 1.2.1's SASRec on Amazon Toys: same architecture, loss, protocol.

    python benchmarks/peer_recbole_sasrec.py [--seeds 3] [--epochs 200]   # NDCG parity and speed (hours on CPU)
    python benchmarks/peer_recbole_sasrec.py --quick                      # speed only: 2 epochs a side

RecBole runs in its own venv, as for ``peer_recbole.py`` (created on first use; the package never
imports recbole). Both sides:

- read the same Toys purchases: RecBole gets ``Toys.inter`` with each purchase's position in the
  customer's history as its timestamp and splits it itself, leave-one-out in time order (last
  purchase test, the one before validation), which is the package's ``leave_one_out`` split;
- train SASRec with 2 blocks, 2 heads, width 64, feed-forward 256, dropout 0.5, GELU, positions
  counted from the start of the (last 50 items of the) history, full-softmax cross-entropy over
  all 11,924 items, Adam lr 1e-3, one thread;
- validate NDCG@10 every ``--eval-step`` epochs, stop after ``--stopping-step`` + 1 checks without
  improvement, and test the best epoch with full ranking. RecBole masks no item when it ranks for
  a sequential model; the package masks what the customer bought before. The parity is taken on
  RecBole's terms: the package's best model is scored once more with nothing masked (both figures
  are printed).

They differ in what a training example is, and that is the point of the speed ratio: RecBole
trains on every prefix of a history as its own row (a 2048-row batch is 2048 targets, each a full
pass of the transformer over up to 50 items), the package on whole histories with the loss at
every position (a 256-history batch is all their targets, one pass per history). Speed is
therefore compared in **training targets per second** (next-item predictions the loss sees per
epoch / median epoch seconds), each side counting its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _allocator as allocator  # noqa: E402
from peer_recbole import DEFAULT_VENV, RecBoleUnavailable, _quiet_lightning, ensure_recbole, run_side  # noqa: E402


def load_toys(max_len: int, batch_size: int):
    from crossrec_lit.data import AmazonP5, InteractionDataModule

    dm = InteractionDataModule(AmazonP5(["Toys"]), "Toys", split="leave_one_out", sequence_len=max_len, batch_size=batch_size, eval_batch_size=1024)
    dm.setup()
    return dm


def write_inter(dm, folder: str, name: str = "Toys") -> int:
    """``<folder>/<name>/<name>.inter``: user, item, and the purchase's position as its timestamp."""
    frame = dm.table.frame
    frame = frame[frame["domain"] == dm.target_domain]
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        frame[["user", "item", "position"]].to_csv(f, sep="\t", header=False, index=False)
    return len(frame)


def train_ours(dm, *, seed: int, args, workdir: str) -> dict:
    import numpy as np
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping

    from _timing import EpochTimer
    from crossrec_lit.models import SASRec
    from crossrec_lit.training import best_checkpoint, quiet_trainer

    _quiet_lightning()
    dm.seed = seed
    pl.seed_everything(seed, verbose=False)
    model = SASRec(dm.num_users, dm.num_items, max_len=args.max_len, embedding_dim=64, num_blocks=2, num_heads=2, ffn_dim=256,
                   dropout=0.5, loss="ce", positions="from_start", lr=args.lr, ks=(10,))  # fmt: skip
    timer = EpochTimer()
    validate = args.eval_step > 0
    callbacks: list = [timer]
    if validate:
        ckpt = best_checkpoint(os.path.join(workdir, f"ours-seed{seed}"))
        callbacks += [EarlyStopping(monitor="val/ndcg@10", mode="max", patience=args.stopping_step + 1), ckpt]
    trainer = quiet_trainer(args.epochs, callbacks, check_val_every_n_epoch=max(args.eval_step, 1), limit_val_batches=None if validate else 0)
    trainer.fit(model, datamodule=dm)
    sequences = dm.training_sequences(args.max_len + 1)
    info = {"epoch_seconds": timer.seconds, "epochs_run": len(timer.seconds), "targets_per_epoch": int(np.count_nonzero(sequences[:, 1:]))}
    if validate:
        info["best_epoch"] = int(torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)["epoch"]) + 1
        result = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)[0]  # loads the best weights
        info["test_masked"] = {k.removeprefix("test/"): float(v) for k, v in result.items()}
        info["test"] = unmasked_test(model, dm)
    return info


def unmasked_test(model, dm) -> dict[str, float]:
    """Test metrics with no item masked, as RecBole ranks for sequential models."""
    from torch.utils.data import DataLoader

    from crossrec_lit.data import EvalBatches
    from crossrec_lit.evaluation import evaluate

    idx, domain = dm.index, dm.eval_domain
    batches = EvalBatches(idx.users_with(domain, "test"), idx.matrix(domain, "test"), None, batch_size=1024)
    model.eval()
    with torch.no_grad():
        means, _ = evaluate(model, DataLoader(batches, batch_size=None), ks=(10,))
    return {k: float(v) for k, v in means.items()}


def rate(info: dict) -> float:
    return info["targets_per_epoch"] / statistics.median(info["epoch_seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recbole-venv", default=str(DEFAULT_VENV))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="most epochs per run (default 200; 2 with --quick)")
    p.add_argument("--eval-step", type=int, default=5)
    p.add_argument("--stopping-step", type=int, default=5)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=256, help="histories per batch (the package)")
    p.add_argument("--recbole-batch", type=int, default=2048, help="prefixes per batch (RecBole; its default)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="speed only: a few epochs a side, no evaluation")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    args.epochs = args.epochs or (2 if args.quick else 200)
    if args.quick:
        args.eval_step = 0
    from crossrec_lit import set_num_threads

    set_num_threads(args.threads)
    allocator.settle_here()  # RecBole's side gets the same settings through run_side's environment
    try:
        python = ensure_recbole(args.recbole_venv)
    except RecBoleUnavailable as err:
        sys.exit(f"RecBole is not available: {err}")
    t0 = time.perf_counter()
    dm = load_toys(args.max_len, args.batch)
    print(f"# Amazon Toys (P5 5-core), leave-one-out: {dm.num_users:,} users, {dm.num_items:,} items; SASRec 2x2 heads, width 64, "
          f"ffn 256, dropout 0.5, full-softmax CE, max_len {args.max_len}, Adam lr {args.lr:g}, {args.threads} thread(s)")
    print("# " + ("speed only: " + f"{args.epochs} epochs a side, no evaluation" if args.quick else
                  f"up to {args.epochs} epochs, validation every {args.eval_step}, stop after {args.stopping_step + 1} checks without improvement"))
    runs = {"RecBole 1.2.1 SASRec": [], "crossrec_lit SASRec": []}
    print(f"\n{'seed':>4s}  {'side':22s} {'epochs':>6s} {'best':>5s} {'s/epoch':>9s} {'targets/epoch':>14s} {'targets/s':>10s}  {'NDCG@10':>8s} {'Recall@10':>9s}")
    with tempfile.TemporaryDirectory(prefix="crossrec-recbole-sasrec-") as tmp:
        n_rows = write_inter(dm, tmp)
        for seed in range(args.seeds):
            for side in (["theirs", "ours"] if seed % 2 == 0 else ["ours", "theirs"]):
                if side == "ours":
                    name, info = "crossrec_lit SASRec", train_ours(dm, seed=seed, args=args, workdir=tmp)
                else:
                    out = os.path.join(tmp, f"recbole-sasrec-seed{seed}.json")
                    run_side(python, [
                        "train-sasrec", "--data-path", tmp, "--dataset", "Toys", "--seed", str(seed), "--epochs", str(args.epochs),
                        "--eval-step", str(args.eval_step), "--stopping-step", str(args.stopping_step), "--max-len", str(args.max_len),
                        "--batch-size", str(args.recbole_batch), "--lr", str(args.lr), "--out", out,
                    ], cwd=tmp, threads=args.threads)  # fmt: skip
                    with open(out) as f:
                        name, info = "RecBole 1.2.1 SASRec", json.load(f)
                    expected = {"users": dm.num_users, "items": dm.num_items, "valid": dm.num_users, "test": dm.num_users}
                    if info["counts"] != expected:
                        raise SystemExit(f"RecBole read different data: {info['counts']} vs {expected} ({n_rows:,} rows written)")
                runs[name].append(info)
                test = info.get("test", {})
                print(f"{seed:>4d}  {name:22s} {info['epochs_run']:>6d} {info.get('best_epoch', '-')!s:>5s} {statistics.median(info['epoch_seconds']):9.2f} "
                      f"{info['targets_per_epoch']:14,d} {rate(info):10,.0f}  {test.get('ndcg@10', float('nan')):8.4f} {test.get('recall@10', float('nan')):9.4f}", flush=True)
    theirs, ours = (statistics.median(rate(i) for i in runs[k]) for k in runs)
    paired = [rate(o) / rate(r) for o, r in zip(runs["crossrec_lit SASRec"], runs["RecBole 1.2.1 SASRec"])]
    print(f"\ntraining targets per second: crossrec_lit / RecBole {ours / theirs:.2f}x (median of the per-round ratios {statistics.median(paired):.2f}x)")
    print(f"seconds per epoch on {args.threads} thread(s): crossrec_lit {statistics.median(statistics.median(i['epoch_seconds']) for i in runs['crossrec_lit SASRec']):.1f}, "
          f"RecBole {statistics.median(statistics.median(i['epoch_seconds']) for i in runs['RecBole 1.2.1 SASRec']):.1f}")
    if not args.quick:
        o = statistics.median(i["test"]["ndcg@10"] for i in runs["crossrec_lit SASRec"])
        r = statistics.median(i["test"]["ndcg@10"] for i in runs["RecBole 1.2.1 SASRec"])
        masked = statistics.median(i["test_masked"]["ndcg@10"] for i in runs["crossrec_lit SASRec"])
        print(f"test NDCG@10 (median of seeds, nothing masked): crossrec_lit {o:.4f}, RecBole {r:.4f}, difference {o - r:+.4f} (goal: within 0.002); "
              f"crossrec_lit with earlier purchases masked (the book's protocol) {masked:.4f}")
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
