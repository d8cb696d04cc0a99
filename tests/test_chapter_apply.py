"""Chapter "Apply it to your stores": smoke run on synthetic stores written to CSV and read back.

``smoke = True`` makes the chapter export the case study's small synthetic stores (named Sports and
Beauty) with ``write_interactions``, read them back through ``InteractionFile`` as a user's file,
write its own YAML config around that file, run the first look (counting baselines and the blend)
and the rating task, each in ``tmp_path``. The book build runs it on the Amazon files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import smoke
from crossrec_lit.diagnosis import VERDICTS

pytestmark = pytest.mark.chapter
SMOKE = {"smoke": True, "seeds": 2, "trials": 2, "rating_seeds": 2}
FIRST_LOOK = ["Popularity", "Overlap popularity", "Co-occurrence", "Blend"]
RATING = ["Target only (item means)", "CMF", "EMCDR", "PTUPCDR"]


def check_apply(rec: dict, params: dict) -> None:
    expected = {
        "data", "smoke", "stores", "files_ok", "csv_rows", "n_shared", "diagnosis_verdict", "models", "seeds", "ndcg@10",
        "recall@10", "strongest_baseline", "vs_strongest", "rating", "rating_vs_base", "rating_better", "rating_worse",
        "verdicts_changed", "rating_verdicts_changed",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    assert rec["stores"] == ["Sports", "Beauty"]
    assert rec["csv_rows"] > 0 and rec["n_shared"] > 0
    assert rec["diagnosis_verdict"] in VERDICTS
    assert sorted(rec["models"]) == sorted(FIRST_LOOK) and rec["seeds"] == list(range(params["seeds"]))
    for model in FIRST_LOOK:
        _assert_metric(rec["ndcg@10"][model], f"ndcg@10[{model}]")
    # the strongest baseline is the best baseline by test NDCG@10, and every other model is tested against it
    baselines = ["Popularity", "Overlap popularity", "Co-occurrence"]
    assert rec["strongest_baseline"] == max(baselines, key=lambda b: rec["ndcg@10"][b])
    assert set(rec["vs_strongest"]) == set(FIRST_LOOK) - {rec["strongest_baseline"]}
    for model, test in rec["vs_strongest"].items():
        assert test["ci_low"] <= test["mean_diff"] <= test["ci_high"]
        assert test["mean_diff"] == pytest.approx(rec["ndcg@10"][model] - rec["ndcg@10"][rec["strongest_baseline"]], abs=1e-6)
        if test["verdict"] == "better":
            assert test["p_holm"] < 0.05 and test["ci_low"] > 0
        elif test["verdict"] == "worse":
            assert test["p_holm"] < 0.05 and test["ci_high"] < 0
    # the rating task: errors in stars, a lower one is better, and the glued lists follow the tests
    assert set(rec["rating"]) == set(RATING)
    for model, row in rec["rating"].items():
        assert 0.0 < row["mae"] <= row["rmse"] < 4.0, model  # RMSE >= MAE always; stars are 1-5
    for model, test in rec["rating_vs_base"].items():
        lower = test["p_holm"] < 0.05 and test["ci_high"] < 0
        higher = test["p_holm"] < 0.05 and test["ci_low"] > 0
        assert (model in rec["rating_better"]) == lower and (model in rec["rating_worse"]) == higher
        assert not math.isnan(test["mean_diff"])
    # the lists of the model the page ships: five products of store B for each customer named
    shipped = rec["shipped"]
    winners = [m for m, test in rec["vs_strongest"].items() if test["verdict"] == "better"]
    assert shipped["model"] == (max(winners, key=lambda m: rec["ndcg@10"][m]) if winners else rec["strongest_baseline"])
    assert list(shipped["items"]) == shipped["users"] and len(shipped["users"]) == 3
    assert all(len(items) == len(set(items)) == 5 for items in shipped["items"].values())
    # the second block of seeds: the verdicts that changed are among those tested
    assert set(rec["verdicts_changed"]) <= set(rec["vs_strongest"])
    assert set(rec["rating_verdicts_changed"]) <= set(rec["rating_vs_base"])


def test_smoke(tmp_path: Path) -> None:
    rec = smoke("apply", tmp_path, {**SMOKE, "runs_dir": str(tmp_path / "runs")})
    check_apply(rec, SMOKE)
    assert rec["data"] == "synthetic" and rec["smoke"] is True
    # the exported file and the config written around it are the user's: both are on disk
    assert (tmp_path / "runs" / "my_stores.csv.gz").is_file() and (tmp_path / "runs" / "my_stores.yaml").is_file()
