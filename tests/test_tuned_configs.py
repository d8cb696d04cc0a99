"""The tuned configs (every model searched on validation) in smoke mode, on a pair of stores taken
from the command line, and the command line's --pair / --models / --trials."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crossrec_lit import CrossRecError
from crossrec_lit.experiment import load_experiment, with_models, with_pair

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossrec_lit.experiment", *args, "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["case_study_coldstart.yaml", "warm_tuned.yaml"])
def test_tuned_config_smoke_on_a_pair_from_the_command_line(tmp_path, config):
    out = tmp_path / "out"
    proc = run_cli("--config", str(CONFIGS / config), "--smoke", "--seeds", "2", "--pair", "Toys:Beauty", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    exp = load_experiment(CONFIGS / config, smoke=True)
    assert set(results["model"]) == {m.name for m in exp.models}
    fit = results[(results["split"] == "fit") & (results["seed"] == 0)].pivot_table(index="model", columns="metric", values="value")
    for spec in exp.models:  # every searched model ran its study (the smoke budget) on the tuning seed
        if spec.search:
            assert fit.loc[spec.name, "search_trials"] + fit.loc[spec.name, "search_pruned"] == exp.trials
    summary = (out / "summary.md").read_text()
    assert "[Toys -> Beauty]" in summary and "Data diagnosis" in summary and "Toys -> Beauty, split" in summary
    assert "search: trials (pruned)" in summary and "Holm-corrected" in summary


def test_pair_and_model_selection():
    exp = load_experiment(CONFIGS / "case_study_coldstart.yaml")
    other = with_pair(exp, "Sports", "Beauty")
    args = other.data["init_args"]
    assert (args["source_domain"], args["target_domain"], args["source"]["init_args"]["domains"]) == ("Sports", "Beauty", ["Sports", "Beauty"])
    assert exp.data["init_args"]["source_domain"] == "Beauty"  # the original is untouched
    few = with_models(exp, ["Blend", "Popularity"])
    assert [m.name for m in few.models] == ["Popularity", "Blend"] and few.baselines == ["Popularity"]
    with pytest.raises(CrossRecError, match=r"unknown model\(s\) \['Blnd'\]"):
        with_models(exp, ["Blnd"])
    with pytest.raises(CrossRecError, match="two different stores"):
        with_pair(exp, "Toys", "Toys")
    with pytest.raises(CrossRecError, match="names no source_domain"):
        with_pair(load_experiment(CONFIGS / "synthetic_mf_experiment.yaml"), "A", "B")


def test_bad_pair_on_the_command_line_is_one_line(tmp_path):
    proc = run_cli("--config", str(CONFIGS / "case_study_coldstart.yaml"), "--pair", "Beauty-Toys", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "crossrec experiment: error: --pair 'Beauty-Toys' is not SOURCE:TARGET. Fix: write e.g. --pair Sports:Toys."
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_models_option_keeps_commas_inside_parentheses(tmp_path):
    # "Co-occurrence (b, Beauty)" is one name: the list splits on commas outside parentheses only
    out = tmp_path / "out"
    proc = run_cli("--config", str(CONFIGS / "case_study_text.yaml"), "--smoke", "--seeds", "1",
                   "--models", "Popularity (b, Beauty), Co-occurrence (b, Beauty)", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(pd.read_csv(out / "results.csv")["model"]) == {"Popularity (b, Beauty)", "Co-occurrence (b, Beauty)"}
