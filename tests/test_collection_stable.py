"""Test ids must be the same on every collection.

pytest-xdist has each worker collect the suite and refuses to run when the ids differ ("Different
tests were collected between gw0 and gw1"). A parameter that embeds the time (gzip's header), a
random value or the order of a set makes that happen by the clock, so `make test` would pass or fail
by chance. Collecting twice, a little more than a second apart, catches all three.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _collect() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return sorted(line for line in proc.stdout.splitlines() if "::" in line)


@pytest.mark.slow
def test_two_collections_give_the_same_ids():
    first = _collect()
    time.sleep(1.5)  # crosses a second boundary, where a time-stamped parameter changes
    second = _collect()
    assert len(first) > 100
    changed = sorted(set(first) ^ set(second))
    assert not changed, f"test ids differ between two collections (fix the parameter or give it ids=): {changed[:6]}"
