"""The rating task through the experiment runner (configs/rating_coldstart.yaml, smoke): error
metrics chosen with mode min, a pretrain entry chosen on its own metric, per-user MAE/RMSE in the
paired tests, and marks that read a smaller error as the better model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from crossrec_lit import CrossRecError
from crossrec_lit.experiment import _slug, load_experiment, run_experiment

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rating_coldstart.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rating")
    results = run_experiment(CONFIG, seeds=2, out=out, smoke=True, progress=False, workers=1)
    return out, results


def test_rating_models_are_chosen_on_validation_rmse(run):
    out, results = run
    exp = load_experiment(CONFIG, smoke=True)
    assert (exp.monitor, exp.mode) == ("val/rmse", "min")
    test = results[(results["split"] == "test")]
    assert {"mae", "rmse"} <= set(test["metric"])
    for spec in exp.models:  # the chosen trial is the one with the smallest validation RMSE of its study
        records = [json.loads(p.read_text()) for p in (out / "trials").glob(f"{_slug(spec.name)}/*/trial.json")]
        records = [r for r in records if r["seed"] == 0 and not r.get("pruned")]
        assert records, spec.name
        chosen = results[(results["model"] == spec.name) & (results["seed"] == 0) & (results["split"] == "valid") & (results["metric"] == "rmse")]["value"].iloc[0]
        assert chosen == pytest.approx(min(r["val"]["rmse"] for r in records))


def test_the_source_model_is_chosen_on_its_own_ranking_metric(run):
    out, _ = run
    (record,) = [json.loads(p.read_text()) for p in (out / "trials" / "source_mf").glob("*/trial.json") if json.loads(p.read_text())["seed"] == 0]
    # a BPR model of store A has no ratings to be scored on: its checkpoint follows val/ndcg@10
    assert "rmse" not in record["val"]
    assert record["best_score"] == pytest.approx(record["val"]["ndcg@10"])


def test_summary_tests_per_user_errors_with_smaller_is_better(run):
    out, _ = run
    per_user = pd.read_csv(out / "per_user.csv.gz")
    assert {"mae", "rmse"} <= set(per_user.columns) and per_user["rmse"].notna().any()
    summary = (out / "summary.md").read_text()
    assert "| model | rmse | mae |" in summary and "lower is better for rmse, mae" in summary
    assert "rmse vs Target only (item means)" in summary


def test_a_bad_mode_on_a_model_is_refused(tmp_path):
    text = CONFIG.read_text().replace("    monitor: val/ndcg@10\n    mode: max", "    monitor: val/ndcg@10\n    mode: maximum")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(CrossRecError, match="mode must be max or min"):
        load_experiment(bad)
