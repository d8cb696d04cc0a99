"""The crossrec command line and the multi-seed experiment runner, end to end on synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crossrec_lit import CrossRecError
from crossrec_lit.experiment import load_experiment, run_experiment

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def test_cli_fit_runs_offline(tmp_path):
    cfg = yaml.safe_load((CONFIGS / "mf_synthetic.yaml").read_text())
    cfg["trainer"].update(max_epochs=2, default_root_dir=str(tmp_path), enable_progress_bar=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    cfg["data"]["init_args"]["source"]["init_args"]["n_users"] = 400
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "crossrec_lit.cli", "fit", "--config", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.rglob("best.ckpt"))
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert metrics["val/ndcg@10"].notna().any()


def test_cli_reports_bad_input_in_one_line(tmp_path):
    cfg = yaml.safe_load((CONFIGS / "mf_synthetic.yaml").read_text())
    cfg["data"]["init_args"]["domain"] = "Z"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "crossrec_lit.cli", "fit", "--config", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("crossrec: error: unknown domain") and "Fix:" in last


@pytest.mark.parametrize("option", [["--config"], ["-c"], []])
def test_cli_fit_given_an_experiment_config_names_the_command_that_runs_it(capsys, option):
    from crossrec_lit.cli import main

    path = str(CONFIGS / "toys_mf.yaml")
    args = ["fit", *option, path] if option else ["fit", f"--config={path}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"crossrec: error: {path} is an experiment config") and f"Fix: run it with `crossrec experiment --config {path}" in err


def test_experiment_smoke_writes_results_summary_and_per_user(tmp_path):
    results = run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 2, tmp_path, smoke=True, progress=False)
    assert {"model", "protocol", "split", "metric", "k", "seed", "value"} <= set(results.columns)
    test = results[(results["split"] == "test") & (results["metric"] == "ndcg") & (results["k"] == 10)]
    assert sorted(test["model"].unique()) == ["BPR-MF", "MF", "Popularity"]
    assert sorted(test["seed"].unique()) == [0, 1]
    assert test["value"].between(0, 1).all()
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert len(on_disk) == len(results)
    summary = (tmp_path / "summary.md").read_text()
    assert "| Popularity |" in summary and "p Wilcoxon" in summary
    # and it ends with the command that turns a row of the table into lists
    assert summary.rstrip().splitlines()[-1].endswith(f"`crossrec recommend --config <this experiment's config> --out {tmp_path} --model <name> --k 10 --output recommendations.csv`")
    per_user = pd.read_csv(tmp_path / "per_user.csv.gz", dtype={"user": str})
    assert per_user["user"].str.startswith("u").all()
    # per-user means reproduce the reported test means
    for model, group in per_user.groupby("model"):
        reported = test[test["model"] == model].set_index("seed")["value"]
        assert group.groupby("seed")["ndcg@10"].mean().round(5).to_dict() == reported.round(5).to_dict()


def test_experiment_reuses_cached_trials(tmp_path):
    run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 1, tmp_path, smoke=True, progress=False)
    trials = sorted(tmp_path.glob("trials/*/*/trial.json"))
    stamps = [p.stat().st_mtime_ns for p in trials]
    again = run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 1, tmp_path, smoke=True, progress=False)
    assert [p.stat().st_mtime_ns for p in trials] == stamps
    assert json.loads(trials[0].read_text())["key"] in str(trials[0])
    assert len(again) > 0


def test_first_seed_runs_a_later_block_of_seeds(tmp_path):
    """A second block of seeds (what the regression check runs for chapter seed 1) is a repetition
    with its own search: the seeds are 3 and 4, and nothing is read from block 0's runs."""
    results = run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 2, tmp_path, smoke=True, progress=False, first_seed=3)
    assert sorted(results["seed"].unique()) == [3, 4]
    with pytest.raises(CrossRecError, match="first seed"):
        run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", [0, 1], tmp_path, smoke=True, progress=False, first_seed=3)
    with pytest.raises(CrossRecError, match="first seed must be"):
        run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 2, tmp_path, smoke=True, progress=False, first_seed=-1)


def test_num_threads_overrides_the_configs_in_every_process(tmp_path, monkeypatch):
    """A chapter's num_threads parameter reaches its experiments' trials: the config pins one
    thread, the argument says two, and the runner (and each worker it starts) sets two."""
    import crossrec_lit.experiment as experiment

    assert load_experiment(CONFIGS / "synthetic_mf_experiment.yaml", smoke=True).num_threads == 1
    seen = []
    monkeypatch.setattr(experiment, "set_num_threads", lambda n: seen.append(n))
    runner_threads = []
    real_run = experiment.Runner.run

    def spy(self, seeds, workers=1):
        runner_threads.append(self.num_threads())
        return real_run(self, seeds, workers=workers)

    monkeypatch.setattr(experiment.Runner, "run", spy)
    run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 1, tmp_path, smoke=True, progress=False, num_threads=2)
    assert runner_threads == [2] and seen and set(seen) == {2}
    for bad in (0, 1.5, True):
        with pytest.raises(CrossRecError, match="num_threads must be a whole number >= 1"):
            run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 1, tmp_path, smoke=True, progress=False, num_threads=bad)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(colour="red"), "unknown key"),
        (lambda c: c["models"][0].update(class_path="crossrec_lit.models.Nope"), "cannot import"),
        (lambda c: c["models"][1].update(optimiser="adam"), "unknown key"),
        (lambda c: c.pop("data"), "missing required key 'data'"),
        # the DataModule's arguments without the DataModule, or a data source in its place
        (lambda c: c.update(data=c["data"]["init_args"]), r"data must name a DataModule under class_path, got \[.*'source'"),
        (lambda c: c["data"].update(class_path="crossrec_lit.data.Synthetic"), "not one of the package's DataModules.*Fix: write data: {class_path: crossrec_lit.data.CrossDomainDataModule"),
        (lambda c: c.update(baselines=["Pop"]), "not among the models"),
    ],
)
def test_bad_experiment_configs(tmp_path, mutate, message):
    cfg = yaml.safe_load((CONFIGS / "synthetic_mf_experiment.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CrossRecError, match=message):
        load_experiment(path)


# None: the config names no split either, so the label follows the DataModule's default split
@pytest.mark.parametrize("split, label", [("cold_start", "P2-cold-start customers"), ("leave_one_out", "P1-warm (leave-one-out)"), ("new_items", "P3-new items"), (None, "P1-warm (leave-one-out)")])
def test_a_config_without_protocol_is_labelled_by_its_split(tmp_path, split, label):
    cfg = yaml.safe_load((CONFIGS / "synthetic_mf_experiment.yaml").read_text())
    given = cfg.pop("protocol", None)
    cfg["data"]["init_args"].pop("split", None)
    if split is not None:
        cfg["data"]["init_args"]["split"] = split
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert load_experiment(path).protocol == label
    # a protocol the config names is kept as written
    cfg["protocol"] = given or "my label"
    path.write_text(yaml.safe_dump(cfg))
    assert load_experiment(path).protocol == cfg["protocol"]


def test_a_fit_config_given_to_the_runner_says_which_command_takes_it():
    with pytest.raises(CrossRecError, match=r"is a `crossrec fit` config.*Fix: run it with `crossrec fit --config"):
        load_experiment(CONFIGS / "mf_synthetic.yaml")


def test_unknown_model_argument_is_named(tmp_path):
    cfg = yaml.safe_load((CONFIGS / "synthetic_mf_experiment.yaml").read_text())
    cfg["models"][1]["init_args"]["embeding_dim"] = 8
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CrossRecError, match=r"unknown key\(s\) \['embeding_dim'\] for MF"):
        run_experiment(path, 1, tmp_path / "out", smoke=True, progress=False)


def test_missing_config_file_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "crossrec_lit.experiment", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("crossrec experiment: error: config file")


def test_two_stores_in_two_files_through_a_config(tmp_path):
    from crossrec_lit.config import instantiate
    from crossrec_lit.data import Synthetic

    table = Synthetic(n_users=300, n_items=[80, 60], domains=["A", "B"], overlap=0.6, seed=1).load().frame
    sources = []
    for store in ("A", "B"):
        path = tmp_path / f"{store}.csv"
        table[table["domain"] == store][["user", "item"]].to_csv(path, index=False)
        sources.append({"class_path": "crossrec_lit.data.InteractionFile", "init_args": {"path": str(path), "domain": store}})
    cfg = yaml.safe_load((CONFIGS / "synthetic_mf_experiment.yaml").read_text())
    cfg["data"] = {
        "class_path": "crossrec_lit.data.CrossDomainDataModule",
        "init_args": {"source": {"class_path": "crossrec_lit.data.Stores", "init_args": {"sources": sources}}, "source_domain": "A", "target_domain": "B", "split": "cold_start"},
    }
    cfg.pop("protocol", None)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = load_experiment(path)
    assert exp.protocol == "P2-cold-start customers"
    dm = instantiate(exp.data)
    dm.setup("fit")
    assert dm.overlap.overlap_users == table.groupby("user")["domain"].nunique().eq(2).sum()


def test_crossrec_help_names_every_command(capsys):
    from crossrec_lit.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit, validate, test", "experiment", "recommend"):
        assert f"\n  {command} " in out
    assert main([]) == 2 and "usage: crossrec <command>" in capsys.readouterr().err


def test_crossrec_predict_points_to_recommend(capsys):
    """LightningCLI's predict would fail deep inside the predict loop: the models have no
    per-batch predictions; ranked lists come from crossrec recommend."""
    from crossrec_lit.cli import main

    assert main(["predict", "--config", str(CONFIGS / "mf_synthetic.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "there is no `crossrec predict`. Fix: write ranked lists with `crossrec recommend" in err[0]
