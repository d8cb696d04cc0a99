"""Regression checks of the book's numbers: `make regress` and `make regress-update`.

    python tests/regress.py check  [chapter ...]   # run chapters with the book's parameters, compare
    python tests/regress.py update [chapter ...]   # rewrite tests/baselines/<chapter>.json deliberately

`update` runs each chapter with the book's own parameters for several seeds and stores, for every
number the chapter records, the value at the book's seed and its spread over the seeds; the
tolerance of a metric is derived from that spread (3 standard deviations, with a floor of 1e-6
relative for numbers that do not vary with the seed, such as counts or exact checks). `check`
runs each chapter once with the book's parameters and reports every number outside its band,
naming the chapter, the metric, the expected band and the cell that produced it.
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

SIGMAS = 3.0
REL_FLOOR = 1e-6


# Timings are measurements of the machine, not of the book: they vary with load and with what the
# experiment runner had cached, so no band over seeds would describe them. They are left out.
TIMING = re.compile(r"seconds|per_second|(^|_)min$|minutes|elapsed|wall")


def is_timing(where: str) -> bool:
    return any(TIMING.search(part) for part in re.split(r"[.\[\]]", where) if part)


def flat(record: dict) -> dict[str, float]:
    return {where.removeprefix("record."): float(v) for where, v in numbers(record) if not is_timing(where)}


def tolerance(std: float, value: float) -> float:
    return max(SIGMAS * std, REL_FLOOR * max(1.0, abs(value)))


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
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            metrics[name] = {"value": value, "mean": mean, "std": std, "tolerance": tolerance(std, value), "values": values}
        payload = {"chapter": chapter, "seeds": seeds, "book_seed": book_seed, "sigmas": SIGMAS, "metrics": metrics}
        (BASELINES / f"{chapter}.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        print(f"{chapter}: {len(metrics)} numbers over seeds {seeds} ({time.perf_counter() - started:.0f}s)")
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
                low, high = ref["value"] - ref["tolerance"], ref["value"] + ref["tolerance"]
                if not low <= got[name] <= high:
                    failures.append(
                        f"{chapter}: metric {name} = {got[name]:.6g}, expected {ref['value']:.6g} +/- {ref['tolerance']:.3g} "
                        f"[{low:.6g}, {high:.6g}] ({baseline['sigmas']:g} x std over seeds {baseline['seeds']}); "
                        f"produced in {producing_cell(executed, name)}"
                    )
                    bad += 1
            new = sorted(set(got) - set(baseline["metrics"]))
        status = "ok" if not bad else f"{bad} outside their band"
        print(f"{chapter}: {len(baseline['metrics'])} numbers checked, {status}" + (f"; {len(new)} new, not in the baseline" if new else "") + f" ({time.perf_counter() - started:.0f}s)")
    for line in failures:
        print("FAIL " + line)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["check", "update"])
    parser.add_argument("chapters", nargs="*", help="default: every chapter in _toc.yml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for update (the first is the book's)")
    args = parser.parse_args(argv)
    chapters = args.chapters or toc_chapters()
    unknown = [c for c in chapters if c not in toc_chapters()]
    if unknown:
        print(f"error: unknown chapter(s) {unknown}; the book has {toc_chapters()}", file=sys.stderr)
        return 2
    return update(chapters, args.seeds) if args.action == "update" else check(chapters)


if __name__ == "__main__":
    sys.exit(main())
