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
    assert regress.is_machine_state("record.cost.source_seconds")
    assert regress.is_machine_state("record.protocols.P1.models.CMF.fit_seconds")
    assert regress.is_machine_state("record.experiment_min")
    assert not regress.is_machine_state("record.parameters.guard_min_epochs")
    assert not regress.is_machine_state("record.per_seed_ndcg@10.CMF[0]")


def test_cache_state_is_not_regressed() -> None:
    # a fresh machine encodes every title, one that built the book before none
    record = {"encoding": {"titles": 42382, "first_encoded": 42370, "cached_encoded": 0}}
    assert regress.flat(record) == {"encoding.titles": 42382.0, "encoding.cached_encoded": 0.0}
    assert regress.is_machine_state("record.encoding.first_encoded")
    assert not regress.is_machine_state("record.encoding.unique")


def test_update_stores_spread_and_check_passes_inside_the_band(fake_chapter) -> None:
    assert regress.update(["demo"], [0, 1, 2]) == 0
    baseline = json.loads((regress.BASELINES / "demo.json").read_text())
    assert set(baseline["metrics"]) == {"ndcg", "count"}  # the timings are left out
    ndcg = baseline["metrics"]["ndcg"]
    assert ndcg["value"] == 0.30 and ndcg["mean"] == pytest.approx(0.30) and ndcg["std"] == pytest.approx(0.02)
    # 3 x the spread of the difference of two runs: sqrt(2) x std / c4(3)
    assert ndcg["tolerance"] == pytest.approx(3 * 2**0.5 * 0.02 / 0.886227, rel=1e-5)
    assert baseline["metrics"]["count"]["tolerance"] == pytest.approx(3e-6)  # constant: the relative floor
    assert regress.check(["demo"]) == 0


def test_check_names_chapter_metric_band_and_cell(fake_chapter, capsys) -> None:
    regress.update(["demo"], [0, 1, 2])
    fake_chapter["ndcg"] = {0: 0.50}  # a code change moved the book's number far outside its spread
    assert regress.check(["demo"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "demo: metric ndcg = 0.5" in line
    assert "expected 0.3 +/- 0.0957" in line and "[0.204254, 0.395746]" in line
    assert "3 x the spread of a difference of two runs, from seed blocks [0, 1, 2]: 0.3, 0.32, 0.28" in line
    assert "cell 1: ndcg = evaluate(model)" in line


def test_check_without_baseline_says_how_to_make_one(fake_chapter, capsys) -> None:
    assert regress.check(["demo"]) == 1
    assert "make regress-update" in capsys.readouterr().out


def test_p_values_are_banded_on_the_log_scale(fake_chapter, monkeypatch, capsys) -> None:
    """A p-value that moves from 1e-10 to 1e-8 between seeds is inside its band at 1e-9; on the
    linear scale the band (3 x 5e-9) would have been a bitwise check of its tiny value."""
    ps = {0: 1e-10, 1: 1e-8, 2: 1e-12}
    original = regress.run_chapter

    def with_p(name, out, parameters):
        rec, elapsed = original(name, out, parameters)
        return {**rec, "paired": {"CMF": {"p_holm": ps[parameters["seed"]]}}}, elapsed

    monkeypatch.setattr(regress, "run_chapter", with_p)
    regress.update(["demo"], [0, 1, 2])
    entry = json.loads((regress.BASELINES / "demo.json").read_text())["metrics"]["paired.CMF.p_holm"]
    assert entry["scale"] == "log10" and entry["std"] == pytest.approx(2.0) and entry["value"] == 1e-10
    ps[0] = 1e-9
    assert regress.check(["demo"]) == 0
    ps[0] = 0.9  # a verdict that flipped: 9.95 orders of magnitude, beyond the band of 9.57
    assert regress.check(["demo"]) == 1
    assert "paired.CMF.p_holm = 0.9, expected log10 -10 +/- 9.57" in capsys.readouterr().out


def test_floor_counts_trained_metrics_without_spread(fake_chapter, capsys) -> None:
    fake_chapter["ndcg"] = {0: 0.3, 1: 0.3, 2: 0.3}  # a training that ignores the seed
    regress.update(["demo"], [0, 1, 2])
    assert regress.floor(["demo"]) == 0
    out = capsys.readouterr().out
    assert "demo: 1 of 1 trained-model metrics at the floor: ndcg" in out
    assert "all: 1 of 1 (100.0%)" in out


def test_update_names_verdicts_that_depend_on_the_seed(fake_chapter, monkeypatch, capsys) -> None:
    original = regress.run_chapter
    ps = {0: 0.5, 1: 0.001, 2: 0.01}

    def with_p(name, out, parameters):
        rec, elapsed = original(name, out, parameters)
        return {**rec, "vs": {"p_holm": ps[parameters["seed"]], "p_wilcoxon": 0.001}}, elapsed

    monkeypatch.setattr(regress, "run_chapter", with_p)
    regress.update(["demo"], [0, 1, 2])
    baseline = json.loads((regress.BASELINES / "demo.json").read_text())
    assert baseline["verdicts_that_flip"] == ["vs.p_holm"]  # p_wilcoxon is significant in every seed
    assert "verdict depends on the seed: vs.p_holm = 0.5, 0.001, 0.01" in capsys.readouterr().out


def test_a_verdict_that_changes_direction_flips_though_p_is_small_in_every_seed(fake_chapter, monkeypatch) -> None:
    original = regress.run_chapter
    signs = {0: 1.0, 1: 1.0, 2: -1.0}

    def with_test(name, out, parameters):
        rec, elapsed = original(name, out, parameters)
        s = signs[parameters["seed"]]
        steady = {"ci_low": 0.01, "ci_high": 0.02, "p_holm": 0.001 * (1 + parameters["seed"])}
        moving = {"ci_low": 0.01 if s > 0 else -0.02, "ci_high": 0.02 if s > 0 else -0.01, "p_holm": 0.001}
        return {**rec, "paired": {"steady": steady, "moving": moving}}, elapsed

    monkeypatch.setattr(regress, "run_chapter", with_test)
    regress.update(["demo"], [0, 1, 2])
    assert json.loads((regress.BASELINES / "demo.json").read_text())["verdicts_that_flip"] == ["paired.moving.p_holm"]


def test_every_exact_by_construction_rule_names_recorded_numbers_and_only_unspread_ones() -> None:
    # A rule that matches nothing has gone stale (a renamed number), and a rule that matches a number
    # with spread over the seeds calls a trained number exact: both would hide what `floor` counts.
    for chapter, pattern, why in regress.EXACT_BY_CONSTRUCTION:
        path = regress.BASELINES / f"{chapter}.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())["metrics"]
        matched = {name: m for name, m in metrics.items() if regress.exact_by_construction(chapter, name) == why}
        assert matched, f"{chapter}: {pattern!r} matches no recorded number"
        spread = [name for name, m in matched.items() if not regress.without_spread(name, m)]
        assert not spread, f"{chapter}: {pattern!r} calls numbers with spread over seeds exact: {spread[:3]}"


def test_c4_is_the_bias_of_the_sample_std() -> None:
    assert regress.c4(2) == pytest.approx(0.797885, rel=1e-5)  # sqrt(2 / pi)
    assert regress.c4(3) == pytest.approx(0.886227, rel=1e-5)  # sqrt(pi) / 2
    assert regress.c4(5) == pytest.approx(0.939986, rel=1e-5)


def entry(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return {"value": values[0], "mean": mean, "std": std, "values": values}


def test_fold_values_and_fold_std_take_the_spread_inside_the_blocks() -> None:
    """Three blocks of five seeds: the std over each block's seeds is about 0.004, but the blocks'
    fold std (and one fold's value) happen to agree closely. Their bands follow the 12-df spread
    inside the blocks; the mean over the seeds keeps its blocks' own spread."""
    metrics = {
        **{f"seeds[{i}]": entry([float(i)] * 3) for i in range(5)},
        "coldstart.CoNet.ndcg@10": entry([0.0289, 0.0313, 0.0292]),
        "coldstart.CoNet.ndcg@10_std": entry([0.0046, 0.0036, 0.0044]),
        "per_seed_ndcg@10.CoNet[2]": entry([0.0298, 0.0271, 0.0309]),
        "coldstart.Popularity.ndcg@10": entry([0.0164, 0.0164, 0.0164]),
        "coldstart.Popularity.ndcg@10_std": entry([0.003, 0.003, 0.003]),
    }
    assert regress.seeds_behind(metrics, "coldstart.CoNet.ndcg@10_std") == 5
    sigma = ((0.0046**2 + 0.0036**2 + 0.0044**2) / 3) ** 0.5
    widen = 3 * 2**0.5
    assert regress.tolerance(metrics, "per_seed_ndcg@10.CoNet[2]") == pytest.approx(widen * sigma)
    assert regress.tolerance(metrics, "coldstart.CoNet.ndcg@10_std") == pytest.approx(widen * sigma * (1 - regress.c4(5) ** 2) ** 0.5)
    mean = metrics["coldstart.CoNet.ndcg@10"]
    assert regress.tolerance(metrics, "coldstart.CoNet.ndcg@10") == pytest.approx(widen * mean["std"] / regress.c4(3))
    # numbers whose blocks agree exactly do not move with the seeds: they keep the exact floor
    assert regress.tolerance(metrics, "coldstart.Popularity.ndcg@10") == pytest.approx(1e-6)
    assert regress.tolerance(metrics, "coldstart.Popularity.ndcg@10_std") == pytest.approx(1e-6)


def test_the_count_of_seeds_is_the_nearest_table_s_own() -> None:
    metrics = {"parameters.seeds[0]": entry([0.0] * 3), "parameters.seeds[1]": entry([1.0] * 3),
               "protocols.P2.models.CMF.seeds": entry([5.0] * 3), "protocols.P2.models.CMF.ndcg@10_std": entry([0.01, 0.02, 0.03]),
               "other.CMF.ndcg@10_std": entry([0.01, 0.02, 0.03])}
    assert regress.seeds_behind(metrics, "protocols.P2.models.CMF.ndcg@10_std") == 5
    assert regress.seeds_behind(metrics, "other.CMF.ndcg@10_std") == 2
    assert regress.seeds_behind({}, "other.CMF.ndcg@10_std") is None


def test_reband_recomputes_the_bands_without_running_a_chapter(fake_chapter, monkeypatch) -> None:
    regress.update(["demo"], [0, 1, 2])
    path = regress.BASELINES / "demo.json"
    payload = json.loads(path.read_text())
    payload["metrics"]["ndcg"]["tolerance"] = 0.5
    path.write_text(json.dumps(payload))
    monkeypatch.setattr(regress, "run_chapter", lambda *a, **k: pytest.fail("reband ran a chapter"))
    assert regress.reband(["demo"]) == 0
    assert json.loads(path.read_text())["metrics"]["ndcg"]["tolerance"] == pytest.approx(0.0957, abs=1e-4)


def test_every_recorded_std_over_seeds_knows_how_many_seeds_it_spans() -> None:
    # The band of a fold std or a fold value uses the seeds per block (seeds_behind): a chapter that
    # renamed its `seeds` list would silently fall back on the blocks' own (2-df) spread.
    for path in sorted(regress.BASELINES.glob("*.json")):
        metrics = json.loads(path.read_text())["metrics"]
        moving = [n for n in metrics if n.endswith("_std") and not regress.without_spread(n, metrics[n])]
        lost = [n for n in moving if not regress.seeds_behind(metrics, n)]
        assert not lost, f"{path.name}: no seed count for {lost[:3]}"
        per_seed = [n for n in metrics if regress.PER_SEED.match(n) and not regress.without_spread(n, metrics[n])]
        orphans = [n for n in per_seed if regress.within_block_spread(metrics, n) == 0.0]
        assert not orphans, f"{path.name}: per-seed values without their std over seeds: {orphans[:3]}"
