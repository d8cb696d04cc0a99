"""Regression checks of the book's numbers: `make regress` and `make regress-update`.

    python tests/regress.py check  [chapter ...]   # run chapters with the book's parameters, compare
    python tests/regress.py update [chapter ...]   # rewrite tests/baselines/<chapter>.json deliberately
    python tests/regress.py floor  [chapter ...]   # which trained-model metrics keep the exact floor
    python tests/regress.py reband [chapter ...]   # recompute the bands from the recorded values

`update` runs each chapter with the book's own parameters for several values of its `seed`
parameter and stores, for every number the chapter records, the value at the book's seed and its
spread over the seeds; the band of a metric is derived from that spread (see `tolerance`: 3 times
the spread of the difference of two runs, around the value at the book's seed, with a floor of
1e-6 relative for numbers that do not vary with the seed, such as counts or exact checks). A
chapter's `seed` moves everything it trains: the synthetic chapters seed their stores and models
with it, and the chapters that call the experiment runner run the block of experiment seeds
``seed * n .. seed * n + n - 1`` (search included), so the band of a trained number is the spread
of training, which is what another CPU or thread count moves.
p-values are compared on the log10 scale, where their spread over seeds is comparable from 1e-12 to
1. `check` runs each chapter once with the book's parameters and reports every number outside its
band, naming the chapter, the metric, the expected band and the cell that produced it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINES = HERE / "baselines"
sys.path.insert(0, str(HERE))

from chapter_runner import numbers, run_chapter, toc_chapters  # noqa: E402

from crossrec_lit.reporting import block_verdicts  # noqa: E402

SIGMAS = 3.0
REL_FLOOR = 1e-6
ALPHA = 0.05  # the chapters' significance level


# Timings are measurements of the machine, not of the book: they vary with load and with what the
# experiment runner had cached, so no band over seeds would describe them. They are left out.
TIMING = re.compile(r"seconds|per_second|(^|_)min$|minutes|elapsed|wall")


# Counts of what a cache already held when the chapter ran are machine state too: the pretrained
# chapter's first encoding call encodes every title on a fresh machine (42,370) and none where
# the book was built before (the recorded 0), so an empty-cache `make regress` failed on it.
CACHE_STATE = re.compile(r"^first_encoded$")


def is_machine_state(where: str) -> bool:
    """Timings and cache-state counts: what the machine did, left out of the baselines."""
    return any(TIMING.search(part) or CACHE_STATE.search(part) for part in re.split(r"[.\[\]]", where) if part)


def flat(record: dict) -> dict[str, float]:
    return {where.removeprefix("record."): float(v) for where, v in numbers(record) if not is_machine_state(where)}


def c4(n: int) -> float:
    """E[s] / sigma for the sample standard deviation (ddof=1) of n normal draws: s / c4(n) is the
    unbiased estimate of sigma that Shewhart charts use. c4(3) = 0.886: three blocks' std
    underestimates the spread by 11% on average."""
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def seeds_behind(metrics: dict, name: str) -> int | None:
    """How many experiment seeds a mean over seeds (and its ``_std``) averages: the nearest
    ``<parent>.seeds`` count (the benchmark's tables), else the length of the record's ``seeds``
    or ``parameters.seeds`` list."""
    parent = name.rpartition(".")[0]
    while parent:
        if f"{parent}.seeds" in metrics:
            return int(metrics[f"{parent}.seeds"]["value"])
        parent = parent.rpartition(".")[0]
    for prefix in ("seeds", "parameters.seeds"):
        n = sum(1 for other in metrics if re.fullmatch(rf"{re.escape(prefix)}\[\d+\]", other))
        if n:
            return n
    return None


PER_SEED = re.compile(r"^per_seed_(?P<metric>[^.]+)\.(?P<model>.+)\[\d+\]$")


def within_block_spread(metrics: dict, name: str) -> float:
    """The spread of one run of ``name`` that follows from the seed-to-seed spread inside each block,
    for the numbers whose spread it determines: a std over a block's n seeds (``<m>_std``, recorded
    beside the mean ``<m>``) and one seed's value of such a mean (``per_seed_<metric>.<model>[i]``).
    Each block's std has n - 1 degrees of freedom, so the B blocks together estimate the one-seed
    spread sigma with B (n - 1) of them, where the number's own spread over the blocks has B - 1;
    with three blocks that df = 2 estimate is below half the true spread one time in five, and a band
    built on it alone failed CoNet's fold values and fold std on an AVX2 CPU. sigma is the root mean
    square of the blocks' stds (unbiased for sigma^2); one seed's value spreads as sigma, a std over
    n seeds as sigma sqrt(1 - c4(n)^2).

    The mean itself is left to its blocks' spread: where a block's seeds are folds that partition
    the same customers (the cold-start protocol), their differences cancel in the mean, and
    sigma / sqrt(n) overstated the mean's spread up to 13-fold (popularity's NDCG@10). 0.0 where
    the record has no such std."""
    per_seed = PER_SEED.match(name)
    if per_seed:
        suffix = f".{per_seed['model']}.{per_seed['metric']}_std"
        tables = [other for other in metrics if other.endswith(suffix)]
        std_name = tables[0] if len(tables) == 1 else None  # two tables of the model: which one is ambiguous
    elif name.endswith("_std"):
        std_name = name
    else:
        return 0.0
    n = seeds_behind(metrics, std_name) if std_name else None
    if not n or n < 2:
        return 0.0
    stds = metrics[std_name]["values"]
    sigma = math.sqrt(sum(s * s for s in stds) / len(stds))
    return sigma if per_seed else sigma * math.sqrt(1.0 - c4(n) ** 2)


def tolerance(metrics: dict, name: str) -> float:
    """Half-width of the band of ``name`` around its recorded value at the book's seed (on its scale).

    A check draws one new run (another CPU's kernels, another thread count or an emptied cache
    retrain from the same seeds along another float path, which is another draw of training), and
    compares it with the recorded run: their difference spreads as sigma sqrt(2). (Centring on the
    blocks' mean would narrow that to sigma sqrt(1 + 1/B), but then the band of a number would no
    longer contain the one it had before this rule, and the machine that recorded the book
    reproduces the book-seed value exactly, which stays the band's centre.) sigma is the
    larger of two estimates of one run's spread: the blocks' std unbiased by c4(B), and the spread
    that follows from the seed-to-seed std inside each block where the record has one
    (:func:`within_block_spread`, many more degrees of freedom). A number without spread over
    the blocks (:func:`without_spread`, the rule `floor` counts by) keeps the exact floor. The
    band is SIGMAS of that spread: 0.27% per number if sigma were known; with a df = 2 estimate
    alone (p-values, paired differences) a moved run still falls outside about one time in
    thirteen, which only more recorded blocks would lower."""
    entry = metrics[name]
    blocks = len(entry["values"])
    floor_ = REL_FLOOR * max(1.0, abs(on_scale(name, entry["value"])))
    if blocks < 2 or without_spread(name, entry):
        return floor_
    sigma = max(entry["std"] / c4(blocks), within_block_spread(metrics, name))
    return max(SIGMAS * math.sqrt(2.0) * sigma, floor_)


# p-values of the paired tests: the last part of their name is p, p_<test> or p_holm...
P_VALUE = re.compile(r"^p(_|$)")
# metrics of trained models (what `floor` counts): ranking and rating metrics and losses
TRAINED = re.compile(r"ndcg|recall|hit|mrr|precision|auc|rmse|mae|loss|r2")


# Metrics named like trained ones that no training produces: exact on every CPU, so the floor is
# their right band. (chapter, regex on the name, why)
SETTING_C_POPULARITY = "popularity counted on Toys' training part; setting (c)'s split (leave-one-out, shared customers removed from Sports) draws nothing: no training, no seed"
TOYS_LOO_POPULARITY = "popularity counted on Toys' leave-one-out training part (split by sequence order): no training, no seed"
EXACT_BY_CONSTRUCTION = [
    ("background", r"^popularity_test\.", "popularity counted on the real stores: no training"),
    ("background", r"^random_hit$", "k / candidates: arithmetic"),
    ("core_concepts", r"^toy_(hand|package)\.", "metrics of a hand-written toy ranking: no training"),
    ("derivation", r"^checks\.", "loss by hand vs the package's on fixed tensors: closed form"),
    ("benchmark", r"^protocols\.P1-[^.]*\.models\.[^.]+\.[a-z]+@\d+_std$", "P1 runs one experiment seed per block: a std over one seed is 0 by definition"),
    ("benchmark", r"^protocols\.P1-[^.]*\.models\.(Co-occurrence|Popularity)\.(ndcg|recall)@\d+(_std)?$", "counts on the leave-one-out training part: no training, no seed"),
    ("benchmark", r"^protocols\.P3 \(c\)[^.]*\.models\.Popularity \(c\)\.(ndcg|recall)@\d+(_std)?$", SETTING_C_POPULARITY),
    ("benchmark", r"^sampled\.models\.(Co-occurrence|Popularity)\.",
     "counts on P1's leave-one-out training part, ranked against sampled negatives that the evaluator draws with its fixed seed: no training, no seed"),
    ("case_study", r"^warm\.Popularity\.", TOYS_LOO_POPULARITY),
    ("sequential", r"^(recipe|merged)\.Popularity\.", TOYS_LOO_POPULARITY),
    ("pretrained", r"^test\.c\.Popularity \(c\)\.", SETTING_C_POPULARITY),
]


def exact_by_construction(chapter: str, where: str) -> str | None:
    """Why a metric is exact by construction, or None when it comes from training."""
    return next((why for ch, pattern, why in EXACT_BY_CONSTRUCTION if ch == chapter and re.search(pattern, where)), None)


def last_part(where: str) -> str:
    return [p for p in re.split(r"[.\[\]]", where) if p][-1]


def is_p_value(where: str) -> bool:
    return bool(P_VALUE.match(last_part(where)))


def on_scale(where: str, value: float) -> float:
    """The value on the scale its band lives on: log10 for p-values (floored at 1e-300), else itself."""
    return math.log10(max(value, 1e-300)) if is_p_value(where) else value


def without_spread(where: str, entry: dict) -> bool:
    """Whether a recorded number has no spread over the seeds beyond float noise (std ~1e-18 from
    summing in another order), so that its band is the 1e-6 floor."""
    return SIGMAS * entry["std"] <= REL_FLOOR * max(1.0, abs(on_scale(where, entry["value"])))


def verdicts_that_flip(metrics: dict) -> dict[str, list[str] | None]:
    """The tests whose verdict differs between the blocks of seeds: their verdict is the seed's, and
    the chapter may not state one side as the result. A test recorded with its interval and Holm p
    (``<test>.ci_low``, ``.ci_high``, ``.p_holm``) is judged by the chapters' own rule
    (:func:`crossrec_lit.reporting.block_verdicts`), so "better" in one block and "worse" in another
    counts even where p is small in both; it is named by its ``p_holm`` and comes with each block's
    verdict. A p-value recorded without an interval flips when it falls on both sides of 0.05 (no
    verdicts). Sorted by name."""
    flips, judged = {}, set()
    for name in metrics:
        if last_part(name) == "p_holm":
            test = name.removesuffix(".p_holm")
            verdicts = block_verdicts(metrics, test)
            if verdicts is not None:
                judged.add(test)
                if len(set(verdicts)) > 1:
                    flips[name] = verdicts
    for name, entry in metrics.items():
        if is_p_value(name) and name.rpartition(".")[0] not in judged and min(entry["values"]) < ALPHA <= max(entry["values"]):
            flips[name] = None
    return dict(sorted(flips.items()))


def producing_cell(executed: Path, metric: str) -> str:
    """The code cell that computed a recorded number: the first cell (before the record cell)
    that names the metric's top-level key or its last part; else the record cell itself."""
    nb = json.loads(executed.read_text())
    cells = [(i, "".join(c["source"])) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    parts = [p for p in re.split(r"[.\[\]]", metric) if p]
    for needle in (parts[0], parts[-1]):
        pattern = re.compile(rf"""(["']{re.escape(needle)}["']|\b{re.escape(needle)}\s*=)""")
        for index, source in cells[1:-1]:
            if pattern.search(source):
                return f"cell {index}: {source.strip().splitlines()[0][:100]}"
    index, source = cells[-1]
    return f"cell {index} (the record cell): {source.strip().splitlines()[0][:100]}"


def update(chapters: list[str], seeds: list[int]) -> int:
    BASELINES.mkdir(exist_ok=True)
    for chapter in chapters:
        started = time.perf_counter()
        runs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                out = Path(tmp) / f"s{seed}"
                out.mkdir()
                rec, _ = run_chapter(chapter, out, {"seed": seed})
                runs[seed] = flat(rec)
        book_seed = seeds[0]
        metrics = {}
        for name, value in runs[book_seed].items():
            values = [runs[s][name] for s in seeds if name in runs[s]]
            scaled = [on_scale(name, v) for v in values]
            mean = sum(scaled) / len(scaled)
            std = math.sqrt(sum((v - mean) ** 2 for v in scaled) / (len(scaled) - 1)) if len(scaled) > 1 else 0.0
            entry = {"value": value, "mean": mean, "std": std, "values": values}
            if is_p_value(name):
                entry["scale"] = "log10"  # mean, std and tolerance are in log10 units
            metrics[name] = entry
        for name in metrics:
            metrics[name]["tolerance"] = tolerance(metrics, name)
        flips = verdicts_that_flip(metrics)
        payload = {"chapter": chapter, "seeds": seeds, "book_seed": book_seed, "sigmas": SIGMAS, "metrics": metrics, "verdicts_that_flip": list(flips)}
        write_baseline(chapter, payload)
        print(f"{chapter}: {len(metrics)} numbers over seeds {seeds} ({time.perf_counter() - started:.0f}s)")
        for name, blocks in flips.items():
            said = f" ({', '.join(blocks)})" if blocks else ""
            print(f"  verdict depends on the seed: {name} = {', '.join(f'{v:.3g}' for v in metrics[name]['values'])}{said}")
    return 0


def write_baseline(chapter: str, payload: dict) -> None:
    (BASELINES / f"{chapter}.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


def reband(chapters: list[str]) -> int:
    """Recompute every band of the recorded baselines with :func:`tolerance` from the values they
    hold, without running a chapter: for a change of the band's rule, not of the book's numbers."""
    for chapter in chapters:
        path = BASELINES / f"{chapter}.json"
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        metrics = payload["metrics"]
        before = {name: entry["tolerance"] for name, entry in metrics.items()}
        for name in metrics:
            metrics[name]["tolerance"] = tolerance(metrics, name)
        wider = sorted(metrics[n]["tolerance"] / before[n] for n in metrics if before[n] > 0 and not without_spread(n, metrics[n]))
        write_baseline(chapter, payload)
        if wider:
            print(f"{chapter}: {len(wider)} bands with spread, new / old width: median {wider[len(wider) // 2]:.2f}, "
                  f"range {wider[0]:.2f} to {wider[-1]:.2f}")
    return 0


def check(chapters: list[str]) -> int:
    failures = []
    for chapter in chapters:
        path = BASELINES / f"{chapter}.json"
        if not path.exists():
            failures.append(f"{chapter}: no baseline {os.path.relpath(path, ROOT)}; run `make regress-update` deliberately")
            continue
        baseline = json.loads(path.read_text())
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            rec, _ = run_chapter(chapter, Path(tmp), {"seed": baseline["book_seed"]})
            got = flat(rec)
            executed = Path(tmp) / f"{chapter}.out.ipynb"
            bad = 0
            for name, ref in baseline["metrics"].items():
                if name not in got:
                    failures.append(f"{chapter}: metric {name} is no longer recorded (expected {ref['value']:.6g})")
                    bad += 1
                    continue
                log = ref.get("scale") == "log10"
                centre = on_scale(name, ref["value"])  # the book-seed value, on the number's scale
                low, high = centre - ref["tolerance"], centre + ref["tolerance"]
                if not low <= on_scale(name, got[name]) <= high:
                    band = (f"log10 {centre:.3g} +/- {ref['tolerance']:.3g} [{10 ** low:.3g}, {10 ** high:.3g}]" if log
                            else f"{ref['value']:.6g} +/- {ref['tolerance']:.3g} [{low:.6g}, {high:.6g}]")
                    failures.append(
                        f"{chapter}: metric {name} = {got[name]:.6g}, expected {band} "
                        f"({baseline['sigmas']:g} x the spread of a difference of two runs, from seed blocks {baseline['seeds']}: "
                        f"{', '.join(f'{v:.4g}' for v in ref['values'])}); "
                        f"produced in {producing_cell(executed, name)}"
                    )
                    bad += 1
            new = sorted(set(got) - set(baseline["metrics"]))
        status = "ok" if not bad else f"{bad} outside their band"
        print(f"{chapter}: {len(baseline['metrics'])} numbers checked, {status}" + (f"; {len(new)} new, not in the baseline" if new else "") + f" ({time.perf_counter() - started:.0f}s)")
    for line in failures:
        print("FAIL " + line)
    return 1 if failures else 0


def floor(chapters: list[str]) -> int:
    """Print, per chapter, the trained-model metrics whose baseline band is the exact floor (no
    spread over the recorded seeds): numbers a CPU or thread change would fail on. Returns 0."""
    total = at_floor = 0
    for chapter in chapters:
        path = BASELINES / f"{chapter}.json"
        if not path.exists():
            print(f"{chapter}: no baseline")
            continue
        metrics = json.loads(path.read_text())["metrics"]
        why = {n: exact_by_construction(chapter, n) for n in metrics if TRAINED.search(last_part(n)) and not n.endswith("n_users")}
        trained = [n for n, reason in why.items() if reason is None]
        exact = sorted(n for n in trained if without_spread(n, metrics[n]))
        total, at_floor = total + len(trained), at_floor + len(exact)
        print(f"{chapter}: {len(exact)} of {len(trained)} trained-model metrics at the floor" + (f": {', '.join(exact[:8])}" + (" ..." if len(exact) > 8 else "") if exact else ""))
        for reason in sorted(set(why.values()) - {None}):
            print(f"  exact by construction, not counted: {sum(r == reason for r in why.values())} ({reason})")
    print(f"all: {at_floor} of {total} ({at_floor / max(total, 1):.1%}) trained-model metrics at the floor")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "update", "floor", "reband"])
    parser.add_argument("chapters", nargs="*", help="default: every chapter in _toc.yml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for update (the first is the book's)")
    args = parser.parse_args(argv)
    chapters = args.chapters or toc_chapters()
    unknown = [c for c in chapters if c not in toc_chapters()]
    if unknown:
        print(f"error: unknown chapter(s) {unknown}; the book has {toc_chapters()}", file=sys.stderr)
        return 2
    if args.action == "floor":
        return floor(chapters)
    if args.action == "reband":
        return reband(chapters)
    return update(chapters, args.seeds) if args.action == "update" else check(chapters)


if __name__ == "__main__":
    sys.exit(main())
