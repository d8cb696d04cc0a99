"""A training run killed mid-epoch (a real SIGKILL) and resumed from its last checkpoint ends
with exactly the metrics of an uninterrupted run.

This holds because every epoch's batches are a pure function of (seed, epoch, batch): the
resumed run repeats the interrupted epoch with the same shuffling and negatives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "resume_worker.py"
pytestmark = pytest.mark.slow


def run(out: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(WORKER), str(out), *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    reference = run(tmp_path / "reference")

    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(killed), "--stall-at", "2", "3"], stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not (killed / "stalled").exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the worker never reached the stall point"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # killed in epoch 2: the last checkpoint is from the end of epoch 1, and no partial file is left
    assert (killed / "last.ckpt").exists()
    assert not [p for p in killed.iterdir() if p.suffix not in (".ckpt", "") or p.name.endswith(".tmp")]

    resumed = run(killed, "--resume")
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == value, key
