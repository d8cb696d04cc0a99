"""The benchmark scripts still run end to end (tiny sizes, no figure asserted: speed is measured
in benchmarks/, never in tests). A script that rots is found here, not by the next person who
needs its numbers."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run(script: str, *args: str, tmp_path: Path) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CROSSREC_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def test_scaling_ends_with_the_per_million_cost_ratio(tmp_path):
    out = run("scaling.py", "--sizes", "2000", "20000", "--dense-max", "2000", "--skip-large-catalogue", "--timed-interactions", "6000", "--out", str(tmp_path), tmp_path=tmp_path)
    # the labels are the sizes after duplicate pairs are dropped, to one significant digit
    assert re.fullmatch(r"per-million cost ratio 0\.0\d+M/0\.00\dM: \d+\.\d\d", out.strip().splitlines()[-1]), out
    # the machine's own growth over the same sizes, measured in the same run, just before it
    assert re.fullmatch(r"bare-loop floor per-million cost ratio 0\.0\d+M/0\.00\dM: \d+\.\d\d", out.strip().splitlines()[-2]), out
    # and what the package adds over that floor, where it adds anything at the smallest size
    assert any(re.fullmatch(r"package's added per-million cost ratio 0\.0\d+M/0\.00\dM: -?\d+\.\d\d", line) for line in out.splitlines()[-3:]), out
    # the step taken apart at the smallest and largest size, and how much each phase grew
    lines = out.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("# BPR-MF step by phase")))
    assert lines[head + 1].split() == ["interactions", "batch", "forward", "backward", "optimiser", "total"], out
    assert lines[head + 4].split()[0] == "ratio" and all(re.fullmatch(r"\d+\.\d\d", v) for v in lines[head + 4].split()[1:]), out
    assert (tmp_path / "scaling.csv").exists() and (tmp_path / "scaling.png").exists()


def test_scaling_children_get_the_malloc_and_huge_page_settings_asked_for(monkeypatch):
    spec = importlib.util.spec_from_file_location("scaling", BENCH / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    fixed = scaling.allocator.environment()
    # whatever this process inherited, each child gets exactly the settings of its run
    for name, value in {**fixed, "THP_MEM_ALLOC_ENABLE": "1"}.items():
        monkeypatch.setenv(name, value)
    adaptive = scaling.child_env(thp=False, malloc="adaptive")
    assert not set(fixed) & set(adaptive) and "THP_MEM_ALLOC_ENABLE" not in adaptive
    settled = scaling.child_env(thp=True, malloc="settled")
    assert {k: settled[k] for k in fixed} == fixed and settled["THP_MEM_ALLOC_ENABLE"] == "1"


def test_train_throughput_prints_the_ratio_per_side(tmp_path):
    out = run("train_throughput.py", "--interactions", "20000", "--users", "500", "--items", "300", "--rounds", "1", "--catalogue-sizes", tmp_path=tmp_path)
    for side in ("bare loop", "package", "package, negatives exclude positives"):
        assert any(line.startswith(side) and line.split()[-1].replace(".", "").isdigit() for line in out.splitlines()), out


def test_step_profile_prints_every_phase_and_the_empty_step_costs(tmp_path):
    out = run("step_profile.py", "--interactions", "20000", "--users", "500", "--items", "300", "--rounds", "1", "--epochs", "1", tmp_path=tmp_path)
    for phase in ("training step", "zero grad", "backward", "optimiser step", "between batches", "total",
                  "Lightning, automatic optimisation", "Lightning, manual optimisation", "bare loop"):  # fmt: skip
        assert any(line.startswith(phase) for line in out.splitlines()), (phase, out)


@pytest.mark.parametrize("script", ["peer_recbole.py", "peer_recbole_sasrec.py", "sasrec_loss.py", "eval_throughput.py", "encode_items.py"])
def test_the_other_scripts_at_least_parse_their_arguments(script, tmp_path):
    # these need the Amazon files, RecBole's venv or minutes of CPU: their --help must still work
    assert "usage:" in run(script, "--help", tmp_path=tmp_path)


def test_peer_benchmarks_fix_both_malloc_thresholds_in_both_processes():
    spec = importlib.util.spec_from_file_location("peer_recbole", BENCH / "peer_recbole.py")
    peer_recbole = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer_recbole)
    allocator = peer_recbole.allocator
    # one threshold alone stops glibc adapting the other (measured slower than neither), so the
    # child's environment always carries both, and this process gets the same through mallopt
    env = peer_recbole.side_env()
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(allocator.MMAP_THRESHOLD)
    assert env["MALLOC_TRIM_THRESHOLD_"] == str(allocator.TRIM_THRESHOLD)
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        # in a child, so this test process keeps its own allocator settings
        done = subprocess.run([sys.executable, "-c", "import _allocator; raise SystemExit(0 if _allocator.settle_here() else 1)"], cwd=BENCH)
        assert done.returncode == 0, "glibc refused the malloc thresholds"


def test_peer_benchmark_ceiling_runs_the_package_kernels_and_prints_its_ratio(capsys):
    from crossrec_lit.data import InteractionDataModule, Synthetic

    spec = importlib.util.spec_from_file_location("peer_recbole", BENCH / "peer_recbole.py")
    peer_recbole = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer_recbole)
    dm = InteractionDataModule(Synthetic(n_users=300, n_items=(120, 100), seed=1), "B", split="leave_one_out", batch_size=256, num_negatives=1)
    dm.setup()
    runs = {side: [peer_recbole.train_bare(dm, seed=0, epochs=2, dim=8, lr=1e-3, batch=256, test=False, kernels=kernels)]
            for side, kernels in (("bare loop, plain Adam", "plain"), ("crossrec_lit", "plain"), (peer_recbole.CEILING, "package"))}  # fmt: skip
    assert all(len(infos[0]["epoch_seconds"]) == 2 for infos in runs.values())
    peer_recbole.summarise(runs, "bare loop, plain Adam", with_metrics=False)
    out = capsys.readouterr().out
    assert re.search(r"^ceiling: the package's kernels in a bare loop / bare loop, plain Adam: \d+\.\d\dx; crossrec_lit reaches \d+\.\d\d of it$", out, re.M), out
