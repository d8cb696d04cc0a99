"""Several runner processes share one study through a PostgreSQL storage (Optuna's distributed
mode): every trial runs once, both tables are complete, and the trial of a process killed mid-fit
is failed by its stale heartbeat and run again by the other process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from pg_server import postgres_url  # noqa: F401  (a pytest fixture)
from test_search import BASE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def config(tmp_path: Path, name: str, trials: int, callbacks: list | None = None) -> Path:
    searched = {
        **BASE["models"][1],
        "search": {"lr": {"low": 1e-3, "high": 0.05, "log": True}, "embedding_dim": [8, 16, 32]},
        "trials": trials, "callbacks": callbacks or [],
    }
    # pruner null: every trial trains to the end, so the counts below are exact
    exp = {**BASE, "name": name, "pruner": None, "trainer": {"max_epochs": 3, "check_val_every_n_epoch": 1}, "models": [BASE["models"][0], searched]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def start(path: Path, out: Path, url: str) -> subprocess.Popen:
    env = dict(os.environ, CROSSREC_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    cmd = [sys.executable, "-m", "crossrec_lit.experiment", "--config", str(path), "--seeds", "1", "--out", str(out), "--storage", url, "--heartbeat", "1", "--quiet"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def study(url: str, name: str) -> optuna.Study:
    names = [s.study_name for s in optuna.get_all_study_summaries(url) if s.study_name.startswith(f"{name}|BPR-MF|")]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url)


def trained(out: Path) -> set[str]:
    """Keys of the BPR-MF trials this output folder trained to the end."""
    return {p.parent.name for p in (out / "trials" / "BPR-MF").glob("*/trial.json")}


def test_two_processes_split_one_study(tmp_path, postgres_url):
    path = config(tmp_path, "shared", trials=6)
    procs = [start(path, tmp_path / f"out{i}", postgres_url) for i in range(2)]
    for proc in procs:
        finish(proc)
    trials = study(postgres_url, "shared").trials
    live = [t for t in trials if t.state.name == "COMPLETE"]
    surplus = [t for t in trials if t.state.name == "FAIL"]
    assert len(live) == 6 and all(t.user_attrs.get("surplus") for t in surplus)
    # every trial ran once: no point twice, and each trained in exactly one of the processes
    keys = [t.user_attrs["trial"] for t in live]
    assert len(set(keys)) == 6
    a, b = trained(tmp_path / "out0"), trained(tmp_path / "out1")
    assert a and b, "one process did all the work: the study was not shared"
    # (the process that did not train the chosen trial trains it again for its table)
    assert len(set(keys) - (a | b)) == 0 and len((a & b) - {max(live, key=lambda t: (t.value, -t.number)).user_attrs["trial"]}) == 0
    # both tables are complete and agree
    tables = [pd.read_csv(tmp_path / f"out{i}" / "results.csv") for i in range(2)]
    tests = [t[t["split"] == "test"].drop(columns="trial").reset_index(drop=True) for t in tables]
    assert set(tests[0]["model"]) == {"Popularity", "BPR-MF"}
    pd.testing.assert_frame_equal(tests[0], tests[1])


def test_a_killed_process_leaves_a_failed_trial_that_is_retried(tmp_path, postgres_url):
    marker = tmp_path / "paused"
    pause = [{"class_path": "fit_counter.PauseOnce", "init_args": {"path": str(marker), "seconds": 300}}]
    path = config(tmp_path, "killed", trials=3, callbacks=pause)
    first = start(path, tmp_path / "out0", postgres_url)
    deadline = time.monotonic() + 300
    while not marker.exists():  # the first process is now inside its first trial's fit
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first process never reached its first epoch end"
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()  # reaps it and closes its pipes
    time.sleep(3)  # past the grace period (2 heartbeats of 1 s)
    finish(start(path, tmp_path / "out1", postgres_url))

    trials = study(postgres_url, "killed").trials
    failed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("surplus")]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(failed) == 1 and len(complete) == 3
    # the killed trial was queued again with its parameters and finished by the second process
    assert failed[0].params in [t.params for t in complete]
    assert trained(tmp_path / "out0") == set()
    assert len(pd.read_csv(tmp_path / "out1" / "results.csv").query("split == 'test'")["model"].unique()) == 2
