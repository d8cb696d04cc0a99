"""The regression checker itself (tests/regress.py), with the chapter run replaced by a fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import regress


def fake_notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "source": ["seed = 0\n"]},
        {"cell_type": "code", "source": ["ndcg = evaluate(model)\n", "print(ndcg)\n"]},
        {"cell_type": "code", "source": ["record({'ndcg': ndcg, 'count': 3, 'fit_seconds': 9.0}, record_path)\n"]},
    ]
    path.write_text(json.dumps({"cells": cells}))


@pytest.fixture
def fake_chapter(monkeypatch, tmp_path):
    """A chapter 'demo' whose record is {'ndcg': values[seed], 'count': 3, 'fit_seconds': ...}."""
    values = {0: 0.30, 1: 0.32, 2: 0.28}
    state = {"ndcg": values}

    def run_chapter(name, out, parameters):
        assert out.is_dir(), "run_chapter writes into an existing folder, as pytest's tmp_path"
        fake_notebook(out / f"{name}.out.ipynb")
        seed = parameters["seed"]
        return {"ndcg": state["ndcg"][seed], "count": 3, "fit_seconds": 10.0 + seed, "cost": {"wall_min": 1.0 + seed}}, 0.0

    monkeypatch.setattr(regress, "run_chapter", run_chapter)
    monkeypatch.setattr(regress, "BASELINES", tmp_path / "baselines")
    return state


def test_timings_are_not_regressed() -> None:
    assert regress.is_timing("record.cost.source_seconds")
    assert regress.is_timing("record.protocols.P1.models.CMF.fit_seconds")
    assert regress.is_timing("record.experiment_min")
    assert not regress.is_timing("record.parameters.guard_min_epochs")
    assert not regress.is_timing("record.per_seed_ndcg@10.CMF[0]")


def test_update_stores_spread_and_check_passes_inside_the_band(fake_chapter) -> None:
    assert regress.update(["demo"], [0, 1, 2]) == 0
    baseline = json.loads((regress.BASELINES / "demo.json").read_text())
    assert set(baseline["metrics"]) == {"ndcg", "count"}  # the timings are left out
    ndcg = baseline["metrics"]["ndcg"]
    assert ndcg["value"] == 0.30 and ndcg["std"] == pytest.approx(0.02)
    assert ndcg["tolerance"] == pytest.approx(3 * 0.02)
    assert baseline["metrics"]["count"]["tolerance"] == pytest.approx(3e-6)  # constant: the relative floor
    assert regress.check(["demo"]) == 0


def test_check_names_chapter_metric_band_and_cell(fake_chapter, capsys) -> None:
    regress.update(["demo"], [0, 1, 2])
    fake_chapter["ndcg"] = {0: 0.50}  # a code change moved the book's number far outside its spread
    assert regress.check(["demo"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "demo: metric ndcg = 0.5" in line
    assert "expected 0.3 +/- 0.06" in line and "[0.24, 0.36]" in line
    assert "cell 1: ndcg = evaluate(model)" in line


def test_check_without_baseline_says_how_to_make_one(fake_chapter, capsys) -> None:
    assert regress.check(["demo"]) == 1
    assert "make regress-update" in capsys.readouterr().out
