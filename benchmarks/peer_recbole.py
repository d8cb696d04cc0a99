"""Peer comparison with RecBole 1.2.1: BPR-MF on Amazon Toys, same split, same settings, same protocol.

    python benchmarks/peer_recbole.py [--recbole-venv .venv-recbole] [--epochs 200] [--seeds 3]
    python benchmarks/peer_recbole.py --quick         # throughput only: a few epochs, no evaluation
    python benchmarks/peer_recbole.py --crosscheck    # evaluator cross-check only (seconds)
    python benchmarks/peer_recbole.py --quick --ceiling   # plus the package's kernels in a bare loop

What it does:

1. RecBole lives in its OWN venv (default ``.venv-recbole`` at the repository root, or the python
   named by ``CROSSREC_RECBOLE_PYTHON``), created on first use from
   ``benchmarks/recbole_requirements.txt`` (torch first, so pip takes the same CPU build). The
   package never imports recbole: ``benchmarks/_recbole_side.py`` runs in that venv as a
   subprocess and everything crosses through files in a temporary folder.
2. The Toys interactions are split ONCE by ``InteractionDataModule(AmazonP5(["Toys"]), "Toys")``
   (leave-one-out: last item test, second-to-last validation) and written as RecBole atomic files
   ``Toys.{train,valid,test}.inter`` read with ``benchmark_filename``: both libraries train and
   evaluate on the identical interactions (the RecBole side reports its counts; they are checked).
3. BPR-MF in both: embedding size 64, batch 4096, Adam lr 1e-3 (RecBole: torch's default Adam;
   crossrec_lit: its default fused Adam), xavier-normal init, one uniform negative per positive
   that is never one of the user's training items (RecBole's sampler does the same), one thread.
   Epochs: up to ``--epochs``; validation NDCG@10 every ``--eval-step`` epochs; training stops
   after ``--stopping-step`` + 1 checks without improvement (RecBole's rule, Lightning's
   EarlyStopping patience = stopping_step + 1); the best validation epoch is tested. Seeds run
   interleaved (R,O / O,R / ...), so load from other processes hits both sides alike.
4. Throughput = training interactions / training-epoch seconds (batch building, negative
   sampling, forward, backward, optimiser step; never evaluation), median epoch per run, median
   over seeds; ratio ours / RecBole (the goal is >= 3x). Both sides run with glibc's malloc
   thresholds fixed (``benchmarks/_allocator.py``): otherwise RecBole's first 5-10 epochs are
   slowed by the allocator's warm-up, and the 5 epochs of ``--quick`` measured 2.95x where the full
   mode measured 1.98x (with the settings: 2.19x quick).
5. Test NDCG@10 / Recall@10 / MRR@10 of each, each by its own full-ranking evaluator (train and
   validation items masked at test), and RecBole's best model scored once more by crossrec_lit's
   evaluator: same model, same split, so the two evaluators must agree on it too.
6. Evaluator cross-check: one random score matrix (continuous, no ties) with truth and masked
   items, evaluated by RecBole's Collector/Evaluator and metric classes and by
   ``crossrec_lit.evaluation.full_ranking``: max |difference| of the per-user and mean values.

7. ``--ceiling``: the package's step (its Embedding, fused Adam and negative sampler) in a hand-written
   loop, timed in the same rounds: what any training loop around the same kernels reaches against
   RecBole, and the share of it the package's Lightning loop keeps. Measured 2026-12-07, quick mode,
   5 rounds, one thread: RecBole 0.756 s per epoch, crossrec_lit 0.339 s (2.23x), the bare loop
   0.303 s (2.49x); full mode, 3 seeds: RecBole 0.704 s, crossrec_lit 0.366 s (1.92x, test
   NDCG@10 0.0181 against 0.0191), the bare loop 0.322 s (2.19x). The package keeps about 0.9 of
   the ceiling, so 3x at RecBole's algorithm needs faster kernels, not a faster loop: of a bare
   step's ~10 ms, fused Adam over both whole tables takes 2.5 ms, zeroing the dense gradient
   tables 1.4 ms, and the three lookups' index_select and index_add 1.8 ms (torch profiler).

If RecBole cannot be installed or run, the reason is printed and the comparison falls back to a
bare PyTorch loop (plain Adam, as RecBole uses) against the package.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' helpers, when loaded by path (tests)
import _allocator as allocator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "_recbole_side.py"
REQUIREMENTS = Path(__file__).resolve().parent / "recbole_requirements.txt"
DEFAULT_VENV = ROOT / ".venv-recbole"
ENV_PYTHON = "CROSSREC_RECBOLE_PYTHON"
CROSSCHECK_KS = (1, 5, 10, 20)
CROSSCHECK_METRICS = ("ndcg", "recall", "mrr", "hit", "precision")
# the side that runs the package's step in a hand-written loop (--ceiling)
CEILING = "bare loop, package kernels"



class RecBoleUnavailable(RuntimeError):
    """RecBole's venv could not be found, created or run; the message says why."""


# ---------------------------------------------------------------------------------- RecBole venv
def find_recbole_python(venv: str | Path | None = None) -> Path | None:
    """The python of an existing RecBole venv: ``CROSSREC_RECBOLE_PYTHON``, else ``<venv>/bin/python``."""
    env = os.environ.get(ENV_PYTHON)
    if env:
        return Path(env) if Path(env).exists() else None
    python = Path(venv or DEFAULT_VENV) / "bin" / "python"
    return python if python.exists() else None


def side_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env.update(
        # RecBole 1.2.1 torch.load()s its own checkpoints, which torch >= 2.6 refuses by default
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
        CROSSREC_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        PYTHONWARNINGS="ignore",
        **allocator.environment(),
    )
    return env


def ensure_recbole(venv: str | Path | None = None, create: bool = True) -> Path:
    """Python of a working RecBole venv, creating ``venv`` when missing; raises RecBoleUnavailable."""
    python = find_recbole_python(venv)
    if python is None and os.environ.get(ENV_PYTHON):
        raise RecBoleUnavailable(f"{ENV_PYTHON}={os.environ[ENV_PYTHON]} does not exist")
    if python is None:
        if not create:
            raise RecBoleUnavailable(f"no RecBole venv at {venv or DEFAULT_VENV}")
        venv = Path(venv or DEFAULT_VENV)
        print(f"# creating RecBole's venv at {venv} (once; a few minutes)", flush=True)
        pins = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
        torch_pin = [p for p in pins if p.startswith("torch")]
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            # torch first, alone: pip then takes the local CPU build, never a CUDA one
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *torch_pin],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        ]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
                raise RecBoleUnavailable(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n" + "\n".join(tail))
        python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import recbole, torch; print(recbole.__version__, torch.__version__)"],
        capture_output=True, text=True, env=side_env(),
    )
    if probe.returncode != 0:
        raise RecBoleUnavailable(f"{python} cannot import recbole:\n" + "\n".join(probe.stderr.strip().splitlines()[-10:]))
    return python


def run_side(python: Path, args: list[str], cwd: str, threads: int = 1) -> None:
    """Run _recbole_side.py in RecBole's venv (cwd: a temp folder, where RecBole writes its logs)."""
    done = subprocess.run([str(python), str(SIDE), *args], cwd=cwd, capture_output=True, text=True, env=side_env(threads))
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-25:])
        raise RecBoleUnavailable(f"the RecBole side failed (exit {done.returncode}):\n{tail}")


# ---------------------------------------------------------------------------------- cross-check
def make_crosscheck_data(n_users: int = 500, n_items: int = 2000, seed: int = 0) -> dict:
    """Continuous random scores (no ties) with truth sets of 1 to 15 items and 0 to 30 masked items.

    Truth and masked items get boosted scores, so hits land at every rank of the top 20 and the
    masking decides which: an evaluator that ignored the mask, misplaced the ideal DCG (users with
    more relevant items than K) or divided Recall by K instead of |R| would disagree.
    """
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n_users, n_items))
    t_rows, t_cols, e_rows, e_cols = [], [], [], []
    for u in range(n_users):
        n_rel = int(rng.choice([1, 1, 1, 1, 2, 3, 5, 15]))
        n_exc = int(rng.integers(0, 31))
        chosen = rng.choice(n_items, size=n_rel + n_exc, replace=False)
        truth, masked = chosen[:n_rel], chosen[n_rel:]
        scores[u, truth] += rng.uniform(0.5, 3.5, n_rel)
        scores[u, masked] += rng.uniform(1.0, 4.0, n_exc)
        t_rows += [u] * n_rel
        t_cols += truth.tolist()
        e_rows += [u] * n_exc
        e_cols += masked.tolist()
    for row in scores:
        assert len(np.unique(row)) == n_items, "tie in the random scores"
    return {
        "scores": scores,
        "truth_rows": np.asarray(t_rows, dtype=np.int64),
        "truth_cols": np.asarray(t_cols, dtype=np.int64),
        "exclude_rows": np.asarray(e_rows, dtype=np.int64),
        "exclude_cols": np.asarray(e_cols, dtype=np.int64),
        "ks": np.asarray(CROSSCHECK_KS, dtype=np.int64),
        "batch_users": np.int64(128),
    }


def ours_on_crosscheck(data: dict) -> dict[str, np.ndarray]:
    from crossrec_lit.evaluation import full_ranking

    scores = torch.from_numpy(data["scores"])
    truth = torch.from_numpy(np.stack([data["truth_rows"], data["truth_cols"]]))
    exclude = torch.from_numpy(np.stack([data["exclude_rows"], data["exclude_cols"]]))
    values, valid = full_ranking(scores, truth, exclude, CROSSCHECK_KS)
    assert bool(valid.all()), "every cross-check user has a relevant item"
    return {k: v.double().numpy() for k, v in values.items()}


def run_crosscheck(python: Path, n_users: int = 500, n_items: int = 2000, seed: int = 0) -> dict:
    """Evaluate one random score matrix with RecBole's evaluator and ours; per-metric comparison.

    Returns ``{"rows": [(metric, recbole_mean, ours_mean, max_abs_mean_diff, max_abs_user_diff)],
    "max_abs_diff": float, "users": n_users, "items": n_items}``.
    """
    data = make_crosscheck_data(n_users, n_items, seed)
    with tempfile.TemporaryDirectory(prefix="crossrec-recbole-cc-") as tmp:
        path_in, path_out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(path_in, **data)
        run_side(python, ["crosscheck", path_in, path_out], cwd=tmp)
        with np.load(path_out) as f:
            theirs = {k: f[k] for k in f.files}
    ours = ours_on_crosscheck(data)
    rows = []
    for name in CROSSCHECK_METRICS:
        for k in CROSSCHECK_KS:
            key = f"{name}@{k}"
            r_mean, o_mean = float(theirs[f"mean_{key}"]), float(ours[key].mean())
            user_diff = float(np.abs(theirs[key] - ours[key]).max())
            rows.append((key, r_mean, o_mean, abs(r_mean - o_mean), user_diff))
    return {"rows": rows, "max_abs_diff": max(max(r[3], r[4]) for r in rows), "users": n_users, "items": n_items}


def print_crosscheck(result: dict) -> None:
    print(f"\n# Evaluator cross-check: one random score matrix ({result['users']} users x {result['items']} items, "
          "continuous scores, 1-15 relevant and 0-30 masked items per user), RecBole 1.2.1's "
          "Collector/Evaluator vs crossrec_lit.evaluation.full_ranking")
    print(f"{'metric':14s} {'RecBole':>12s} {'crossrec_lit':>14s} {'|mean diff|':>12s} {'max |user diff|':>16s}")
    for key, r_mean, o_mean, d_mean, d_user in result["rows"]:
        print(f"{key:14s} {r_mean:12.8f} {o_mean:14.8f} {d_mean:12.2e} {d_user:16.2e}")
    verdict = "agree" if result["max_abs_diff"] <= 1e-6 else "DISAGREE"
    print(f"max abs difference: {result['max_abs_diff']:.2e} (tolerance 1e-6): the evaluators {verdict}")


# ---------------------------------------------------------------------------------- data
def load_toys(batch_size: int):
    from crossrec_lit.data import AmazonP5, InteractionDataModule

    dm = InteractionDataModule(AmazonP5(["Toys"]), "Toys", split="leave_one_out", batch_size=batch_size, num_negatives=1, exclude_positives=True)
    dm.setup()
    return dm


def write_atomic_files(dm, folder: str, name: str = "Toys") -> dict[str, int]:
    """RecBole atomic files ``<folder>/<name>/<name>.{train,valid,test}.inter``: our split, original ids."""
    frame = dm.table.frame
    frame = frame[frame["domain"] == dm.target_domain]
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for part in ("train", "valid", "test"):
        rows = frame.loc[frame["split"] == part, ["user", "item"]]
        with open(out / f"{name}.{part}.inter", "w") as f:
            f.write("user_id:token\titem_id:token\n")
            rows.to_csv(f, sep="\t", header=False, index=False)
        counts[part] = len(rows)
    return counts


# ---------------------------------------------------------------------------------- our side
def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_ours(dm, *, seed: int, epochs: int, eval_step: int, stopping_step: int, dim: int, lr: float, workdir: str, optimizer: str = "adam") -> dict:
    """The package path: InteractionDataModule -> BPRMF -> Lightning Trainer; eval_step 0 = train only.
    ``optimizer`` is the package's (``adam``: dense Adam as RecBole's; ``sparse_adam``: lazy Adam that
    updates only the rows of each batch, a different algorithm, so its NDCG must be checked)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping

    from crossrec_lit.models import BPRMF
    from crossrec_lit.training import best_checkpoint, quiet_trainer

    from _timing import EpochTimer

    _quiet_lightning()
    dm.seed = seed
    pl.seed_everything(seed, verbose=False)
    model = BPRMF(dm.num_users, dm.num_items, embedding_dim=dim, lr=lr, ks=(10,), optimizer=optimizer)
    timer = EpochTimer()
    callbacks: list = [timer]
    validate = eval_step > 0
    if validate:
        ckpt = best_checkpoint(os.path.join(workdir, f"ours-seed{seed}"))
        callbacks += [EarlyStopping(monitor="val/ndcg@10", mode="max", patience=stopping_step + 1), ckpt]
    trainer = quiet_trainer(epochs, callbacks, check_val_every_n_epoch=eval_step if validate else 1, limit_val_batches=None if validate else 0)
    trainer.fit(model, datamodule=dm)
    info = {"epoch_seconds": timer.seconds, "epochs_run": len(timer.seconds), "samples_per_epoch": int(len(dm.index.arrays(dm.target_domain, "train")["users"]))}
    if validate:
        info["best_epoch"] = int(torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)["epoch"]) + 1
        info["best_valid"] = {"ndcg@10": float(ckpt.best_model_score)}
        start = time.perf_counter()
        result = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)[0]
        info["test_seconds"] = time.perf_counter() - start
        info["test"] = {k.removeprefix("test/"): float(v) for k, v in result.items()}
    return info


class _Factors:
    """A scorer from exported user/item factor tables (for crossrec_lit's ``evaluate``)."""

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor):
        self.user_emb, self.item_t = user_emb, item_emb.T.contiguous()

    def full_scores(self, users):
        return self.user_emb[users] @ self.item_t


def recbole_model_by_ours(dm, npz_path: str) -> dict[str, float]:
    """RecBole's best model, mapped onto our indices by id, scored by crossrec_lit's test evaluator."""
    from crossrec_lit.evaluation import evaluate

    with np.load(npz_path) as f:
        user_emb, item_emb, user_tok, item_tok = f["user_emb"], f["item_emb"], f["user_tokens"], f["item_tokens"]
    users = np.zeros((dm.num_users, user_emb.shape[1]), dtype=np.float32)
    items = np.zeros((dm.num_items, item_emb.shape[1]), dtype=np.float32)
    users[dm.user_vocab.encode(user_tok[1:], what="user")] = user_emb[1:]  # row 0 is RecBole's padding
    items[dm.item_vocab.encode(item_tok[1:], what="item")] = item_emb[1:]
    means, _ = evaluate(_Factors(torch.from_numpy(users), torch.from_numpy(items)), dm.test_dataloader(), ks=(10,))
    return means


# ---------------------------------------------------------------------------------- bare fallback
def train_bare(dm, *, seed: int, epochs: int, dim: int, lr: float, batch: int, test: bool = True, kernels: str = "plain") -> dict:
    """A hand-written loop over the package's negative sampler, no Lightning.

    ``kernels="plain"``: torch's Embedding and plain (for-each) Adam, RecBole's optimiser: the
    fallback reference. ``"package"``: the package's Embedding and its default fused Adam, i.e. the
    package's step without Lightning and its batch datasets: the ceiling of the comparison (what
    any training loop around these kernels could reach against RecBole).
    """
    import torch.nn.functional as F

    from crossrec_lit.data.sampling import NegativeSampler
    from crossrec_lit.evaluation import evaluate
    from crossrec_lit.models.embedding import Embedding

    torch.manual_seed(seed)
    arrays = dm.index.arrays(dm.target_domain, "train")
    u_all, i_all = torch.from_numpy(arrays["users"]), torch.from_numpy(arrays["items"])
    sampler = NegativeSampler(dm.num_items, dm.index.matrix(dm.target_domain, "train"))
    table = Embedding if kernels == "package" else torch.nn.Embedding
    user_emb, item_emb = table(dm.num_users, dim), table(dm.num_items, dim)
    torch.nn.init.xavier_normal_(user_emb.weight)
    torch.nn.init.xavier_normal_(item_emb.weight)
    opt = torch.optim.Adam([user_emb.weight, item_emb.weight], lr=lr, fused=kernels == "package")
    g = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(u_all), generator=g)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            u, i = u_all[idx], i_all[idx]
            j = sampler.sample(u, 1, g)
            uv = user_emb(u)
            diff = (uv * item_emb(i)).sum(-1, keepdim=True) - (uv.unsqueeze(1) * item_emb(j)).sum(-1)
            loss = -F.logsigmoid(diff).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    info = {"epoch_seconds": seconds, "epochs_run": epochs, "samples_per_epoch": len(u_all)}
    if test:
        with torch.no_grad():
            info["test"], _ = evaluate(_Factors(user_emb.weight.detach(), item_emb.weight.detach()), dm.test_dataloader(), ks=(10,))
        info["best_epoch"] = epochs
    return info


# ---------------------------------------------------------------------------------- reporting
def rate(info: dict) -> float:
    """Samples/s of one run: training interactions / median training-epoch seconds."""
    return info["samples_per_epoch"] / statistics.median(info["epoch_seconds"])


def _fmt_metrics(test: dict | None) -> str:
    if not test:
        return f"{'-':>9s} {'-':>9s} {'-':>9s}"
    return f"{test['ndcg@10']:9.4f} {test['recall@10']:9.4f} {test['mrr@10']:9.4f}"


def print_run(seed: int, side: str, info: dict) -> None:
    best = info.get("best_epoch", "-")
    print(f"{seed:>4d}  {side:26s} {info['epochs_run']:>6d} {best!s:>5s} {statistics.median(info['epoch_seconds']):10.3f} "
          f"{rate(info):12,.0f}  {_fmt_metrics(info.get('test'))}", flush=True)


def summarise(runs: dict[str, list[dict]], reference: str, with_metrics: bool) -> None:
    print(f"\n{'side':26s} {'samples/s':>12s} {'s/epoch':>8s} {'ratio':>6s}" + ("  NDCG@10 Recall@10    MRR@10  (median of seeds)" if with_metrics else ""))
    ref_rate = statistics.median(rate(i) for i in runs[reference])
    for side, infos in runs.items():
        r = statistics.median(rate(i) for i in infos)
        sec = statistics.median(statistics.median(i["epoch_seconds"]) for i in infos)
        line = f"{side:26s} {r:12,.0f} {sec:8.3f} {r / ref_rate:6.2f}"
        if with_metrics and all("test" in i for i in infos):
            med = {m: statistics.median(i["test"][m] for i in infos) for m in ("ndcg@10", "recall@10", "mrr@10")}
            line += f"  {_fmt_metrics(med)}"
        print(line)
    ours = statistics.median(rate(i) for i in runs["crossrec_lit"])
    goal = "met" if ours / ref_rate >= 3 else "NOT met"
    # the two runs of a round ran back to back, so their ratio is less exposed to load drift
    paired = [rate(o) / rate(r) for o, r in zip(runs["crossrec_lit"], runs[reference])]
    print(f"throughput ratio crossrec_lit / {reference}: {ours / ref_rate:.2f}x (goal >= 3x: {goal}); "
          f"median of the per-round ratios {statistics.median(paired):.2f}x {[round(x, 2) for x in paired]}")
    if CEILING in runs:
        top = statistics.median(rate(i) for i in runs[CEILING])
        print(f"ceiling: the package's kernels in a bare loop / {reference}: {top / ref_rate:.2f}x; "
              f"crossrec_lit reaches {ours / top:.2f} of it")
    if with_metrics:
        for m in ("ndcg@10", "recall@10"):
            o = statistics.median(i["test"][m] for i in runs["crossrec_lit"])
            r = statistics.median(i["test"][m] for i in runs[reference])
            print(f"test {m}: crossrec_lit {o:.4f}, {reference} {r:.4f}, difference (ours - theirs) {o - r:+.4f} ({(o - r) / r:+.1%})")


# ---------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recbole-venv", default=str(DEFAULT_VENV), help="RecBole's own venv (created when missing)")
    p.add_argument("--epochs", type=int, default=None, help="most epochs per run (default 200; 5 with --quick)")
    p.add_argument("--seeds", type=int, default=3, help="runs per side (with --quick: interleaved rounds)")
    p.add_argument("--eval-step", type=int, default=10, help="validate every N epochs")
    p.add_argument("--stopping-step", type=int, default=2, help="stop after this many + 1 validations without improvement")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sparse_adam"),
                   help="crossrec_lit's optimiser: adam (dense, RecBole's algorithm) or sparse_adam (lazy rows; equal NDCG must be shown)")
    p.add_argument("--quick", action="store_true", help="throughput only: a few epochs per side, no evaluation, no cross-check")
    p.add_argument("--ceiling", action="store_true",
                   help="with RecBole: also time the package's embedding, fused Adam and sampler in a bare loop (no Lightning, "
                        "throughput only: the quick mode's epochs, 10 in full mode): how far any loop around the same kernels gets against RecBole")
    p.add_argument("--crosscheck", action="store_true", help="only the evaluator cross-check")
    p.add_argument("--no-crosscheck", action="store_true", help="skip the evaluator cross-check")
    p.add_argument("--no-create", action="store_true", help="do not create RecBole's venv when missing")
    args = p.parse_args()
    for message in (r".*LeafSpec.*", r".*does not have many workers.*", r".*is smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=message)
    epochs = args.epochs or (5 if args.quick else 200)

    from crossrec_lit import set_num_threads

    set_num_threads(args.threads)
    # both sides time few epochs in quick mode: malloc starts where a long run ends up (see _allocator)
    settled = allocator.settle_here()
    t0 = time.perf_counter()
    python, why = None, None
    try:
        python = ensure_recbole(args.recbole_venv, create=not args.no_create)
    except RecBoleUnavailable as err:
        why = str(err)
    if why:
        print(f"# RecBole is not available: {why}\n# falling back to a bare PyTorch loop (plain Adam, as RecBole uses) as the reference")

    if args.crosscheck:
        if python is None:
            sys.exit("crosscheck needs RecBole")
        print_crosscheck(run_crosscheck(python))
        return

    dm = load_toys(args.batch)
    counts = {part: len(dm.index.arrays(dm.target_domain, part)["users"]) for part in ("train", "valid", "test")}
    print(f"# Amazon Toys (P5 5-core), leave-one-out: {dm.num_users:,} users, {dm.num_items:,} items; train {counts['train']:,} / "
          f"valid {counts['valid']:,} / test {counts['test']:,} interactions")
    print(f"# BPR-MF dim {args.dim}, batch {args.batch}, Adam lr {args.lr:g} (crossrec_lit: {args.optimizer}), 1 negative per positive (never a training item of the user), "
          f"{args.threads} thread(s), torch {torch.__version__}")
    if args.quick:
        print(f"# throughput only: {epochs} epochs per run, {args.seeds} interleaved rounds, no evaluation")
    else:
        print(f"# up to {epochs} epochs; validation NDCG@10 every {args.eval_step}; stop after {args.stopping_step + 1} checks "
              "without improvement; the best validation epoch is tested (train+valid items masked), full ranking")
    print("# glibc malloc thresholds fixed on both sides (benchmarks/_allocator.py)" if settled else
          "# malloc thresholds NOT fixed (not glibc): short runs may time the allocator's warm-up")

    reference = "RecBole 1.2.1 BPR" if python is not None else "bare loop, plain Adam"
    runs: dict[str, list[dict]] = {reference: [], "crossrec_lit": []}
    eval_step = 0 if args.quick else args.eval_step
    agreement = []
    with tempfile.TemporaryDirectory(prefix="crossrec-recbole-") as tmp:
        if python is not None:
            written = write_atomic_files(dm, tmp)
        print(f"\n{'seed':>4s}  {'side':26s} {'epochs':>6s} {'best':>5s} {'s/epoch':>10s} {'samples/s':>12s}  {'NDCG@10':>9s} {'Recall@10':>9s} {'MRR@10':>9s}")
        for seed in range(args.seeds):
            order = ["theirs", "ours"] if seed % 2 == 0 else ["ours", "theirs"]
            if python is None:
                order = ["ours", "theirs"]  # the bare loop trains as many epochs as ours selected
            for side in order:
                if side == "ours":
                    info = train_ours(dm, seed=seed, epochs=epochs, eval_step=eval_step, stopping_step=args.stopping_step, dim=args.dim, lr=args.lr, workdir=tmp, optimizer=args.optimizer)
                    runs["crossrec_lit"].append(info)
                    print_run(seed, "crossrec_lit", info)
                    continue
                if python is None:
                    info = train_bare(dm, seed=seed, epochs=runs["crossrec_lit"][-1].get("best_epoch", epochs), dim=args.dim, lr=args.lr, batch=args.batch, test=not args.quick)
                    runs[reference].append(info)
                    print_run(seed, reference, info)
                    continue
                out = os.path.join(tmp, f"recbole-seed{seed}.json")
                run_side(python, [
                    "train", "--data-path", tmp, "--dataset", "Toys", "--num-items", str(dm.num_items), "--seed", str(seed),
                    "--epochs", str(epochs), "--eval-step", str(eval_step), "--stopping-step", str(args.stopping_step),
                    "--dim", str(args.dim), "--batch-size", str(args.batch), "--lr", str(args.lr), "--out", out,
                ], cwd=tmp, threads=args.threads)
                with open(out) as f:
                    info = json.load(f)
                seen = info["counts"]
                expected = {"users": dm.num_users, "items": dm.num_items, **written}
                if seen != expected:
                    raise SystemExit(f"RecBole read different data: {seen} vs ours {expected}")
                runs[reference].append(info)
                print_run(seed, reference, info)
                if args.ceiling:
                    # throughput only: a median epoch needs no early-stopped run
                    top = train_bare(dm, seed=seed, epochs=epochs if args.quick else 10, dim=args.dim, lr=args.lr, batch=args.batch, test=False, kernels="package")
                    runs.setdefault(CEILING, []).append(top)
                    print_run(seed, CEILING, top)
                if "test" in info:
                    mine = recbole_model_by_ours(dm, os.path.splitext(out)[0] + ".npz")
                    agreement.append((seed, info["test"], mine))
    summarise(runs, reference, with_metrics=not args.quick)
    if agreement:
        print("\n# RecBole's best model scored by both evaluators (same model, same split, test, train+valid masked)")
        print(f"{'seed':>4s}  {'metric':10s} {'RecBole eval':>13s} {'crossrec_lit eval':>18s} {'|diff|':>9s}")
        for seed, theirs, mine in agreement:
            for m in ("ndcg@10", "recall@10", "mrr@10"):
                print(f"{seed:>4d}  {m:10s} {theirs[m]:13.6f} {mine[m]:18.6f} {abs(theirs[m] - mine[m]):9.1e}")
    if python is not None and not (args.no_crosscheck or args.quick):
        print_crosscheck(run_crosscheck(python))
    print(f"\n# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
