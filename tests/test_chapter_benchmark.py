"""Chapter "Benchmark": smoke run (no Amazon files) and the claims its prose makes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import smoke

pytestmark = pytest.mark.chapter
# One seed per protocol on the configs' synthetic smoke: sections.
# smoke=True on its own (as tests/site_build.py runs it) writes to runs/*_synthetic, as case_study does.
SMOKE = {
    "smoke": True,
    "seeds_p1": 1,
    "seeds_p2": 1,
    "seeds_p3": 1,
    "trials_p2": 2,
}
MARKS = {"", "▲", "▼", "●"}
# every model each config's smoke section trains (P3's four settings carry their own labels)
P1_MODELS = {"Popularity", "Co-occurrence", "Target-only MF", "Joint (shared users)", "CMF", "DTCDR"}
P2_MODELS = {"Popularity", "Overlap popularity", "Co-occurrence", "Target-only MF", "Joint (shared users)", "CMF", "EMCDR", "PTUPCDR", "Pretrain + fine-tune", "CoNet", "DTCDR", "Blend"}


def check_benchmark(rec: dict, params: dict) -> None:
    expected = {"smoke", "families", "protocols", "leaderboard_order", "sampled", "seconds", "parameters", "seed"}
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"

    # the table: all three protocol families, every model with finite metrics in [0, 1]
    assert rec["families"] == ["P1", "P2", "P3"]
    protocols = rec["protocols"]
    by_family = {f: [p for p, v in protocols.items() if v["family"] == f] for f in ("P1", "P2", "P3")}
    assert len(by_family["P1"]) == 1 and len(by_family["P2"]) == 1
    assert len(by_family["P3"]) == 4  # (a) new items, (b) from Beauty, (b) from Sports, (c) no shared customers
    assert set(protocols[by_family["P1"][0]]["models"]) == P1_MODELS
    assert set(protocols[by_family["P2"][0]]["models"]) == P2_MODELS
    for protocol, entry in protocols.items():
        models = entry["models"]
        assert entry["strongest_baseline"] in models and models[entry["strongest_baseline"]]["baseline"]
        seeds = params[f"seeds_{entry['family'].lower()}"]
        strongest = models[entry["strongest_baseline"]]["ndcg@10"]
        for model, row in models.items():
            for metric in ("ndcg@10", "recall@10"):
                _assert_metric(row[metric], f"{protocol}/{model}/{metric}")
                assert row[f"{metric}_mark"] in MARKS
            assert row["seeds"] == seeds
            assert row["fit_seconds"] > 0 and row["best_epoch"] >= 0 and row["parameters"] >= 0
            # the strongest baseline is the named baseline with the best mean NDCG@10, and the only ●
            if row["baseline"]:
                assert row["ndcg@10"] <= strongest
            assert (row["ndcg@10_mark"] == "●") == (model == entry["strongest_baseline"])
            # a mark's direction agrees with the sign of the difference
            if row["ndcg@10_mark"] == "▲":
                assert row["ndcg@10_diff_vs_strongest"] > 0
            if row["ndcg@10_mark"] == "▼":
                assert row["ndcg@10_diff_vs_strongest"] < 0
    # counting baselines learn nothing; factor models do
    p1 = protocols[by_family["P1"][0]]["models"]
    assert p1["Popularity"]["parameters"] == 0
    assert p1["Target-only MF"]["parameters"] > 0
    assert p1["Joint (shared users)"]["parameters"] > p1["Target-only MF"]["parameters"]  # plus the source item table

    # sampled against full ranking: the full numbers are the runner's (checked inside the chapter);
    # sampled metrics are never below full ones for the same model (fewer competitors per test item)
    sampled = rec["sampled"]
    assert set(sampled["models"]) == P1_MODELS
    for model, row in sampled["models"].items():
        for key in ("ndcg@10", "sampled_ndcg@10", "hit@10", "sampled_hit@10"):
            _assert_metric(row[key], f"sampled/{model}/{key}")
        assert row["sampled_hit@10"] >= row["hit@10"] - 1e-6
    assert math.isfinite(sampled["kendall_tau"]) and -1 <= sampled["kendall_tau"] <= 1

    assert rec["smoke"] is True


def test_smoke(tmp_path: Path) -> None:
    """Without the Amazon files (a data_root that does not exist) the chapter falls back to the smoke stores."""
    params = {**SMOKE, "smoke": None, "runs_dir": str(tmp_path / "runs"), "data_root": str(tmp_path / "no_data")}
    check_benchmark(smoke("benchmark", tmp_path, params), params)
