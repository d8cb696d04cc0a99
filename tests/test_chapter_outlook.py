"""Chapter "Applications and outlook": the zero-overlap pitfall (negative transfer is measured in
the algorithm chapter, experiment (c), which this chapter points to)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chapter_runner import BOOK, smoke

pytestmark = pytest.mark.chapter
SMOKE = {"n_users": 600}


def test_smoke(tmp_path: Path) -> None:
    rec = smoke("outlook", tmp_path, SMOKE)
    expected = {"data", "zero_overlap_after_swap", "zero_overlap_refused", "n_users", "seed"}
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    assert rec["data"] == "synthetic" and rec["n_users"] == SMOKE["n_users"]
    # the swapped-columns example: zero overlap, and the DataModule refuses to train on it
    assert rec["zero_overlap_after_swap"] == 0
    assert rec["zero_overlap_refused"] is True


def test_negative_transfer_has_one_home() -> None:
    """The demonstration lives in the algorithm chapter; the outlook and the benchmark point to it
    and train nothing of their own for it."""
    outlook = (BOOK / "outlook.md").read_text()
    assert "{doc}`algorithm`" in outlook and "fig-negative-transfer" in outlook
    for chapter in ("outlook", "benchmark"):
        text = (BOOK / f"{chapter}.md").read_text()
        assert 'domain_shift="independent"' not in text.replace("`", ""), chapter
        assert "SharedUserMF(" not in text, chapter
    assert ":name: fig-negative-transfer" in (BOOK / "algorithm.md").read_text()
