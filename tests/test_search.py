"""The experiment runner's hyperparameter search (Optuna): spaces, budgets, determinism, pruning,
grids through GridSampler, and a test split that nothing reads before the choice is made."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
import yaml

from crossrec_lit import CrossRecError
from crossrec_lit.experiment import Runner, load_experiment, run_experiment
from crossrec_lit.search import SearchSpace, choosable_trials, split_hp

BASE = {
    "name": "search test",
    "protocol": "P1",
    "num_threads": 1,
    "monitor": "val/ndcg@10",
    "data": {
        "class_path": "crossrec_lit.data.InteractionDataModule",
        "init_args": {
            "source": {"class_path": "crossrec_lit.data.Synthetic", "init_args": {"n_users": 300, "n_items": [120, 100], "seed": 0}},
            "domain": "B", "batch_size": 512, "num_negatives": 2, "seed": "${seed}",
        },
    },
    "trainer": {"max_epochs": 4, "check_val_every_n_epoch": 1},
    "baselines": ["Popularity"],
    "models": [
        {"name": "Popularity", "class_path": "crossrec_lit.models.Popularity", "trainer": {"max_epochs": 1}},
        {
            "name": "BPR-MF", "class_path": "crossrec_lit.models.BPRMF", "init_args": {"embedding_dim": 16},
            "search": {"lr": {"low": "1e-3", "high": 0.05, "log": True}, "data.num_negatives": {"low": 1, "high": 4}, "trainer.max_epochs": [2, 4]},
            "trials": 5,
        },
    ],
}


def write_config(tmp_path, **changes) -> str:
    config = {**BASE, **changes}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def studies(out, model: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out / 'studies.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage) if f"|{model}|" in s.study_name]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage).trials


# ------------------------------------------------------------------------------- the space
def test_space_parses_distributions_and_routes_arguments():
    space = SearchSpace("m", {"lr": {"low": "1e-4", "high": 0.1, "log": True}, "embedding_dim": [16, 32], "data.num_negatives": {"low": 1, "high": 8}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    hp = space.suggest(study.ask())
    assert 1e-4 <= hp["lr"] <= 0.1 and hp["embedding_dim"] in (16, 32) and isinstance(hp["data.num_negatives"], int)
    model, data, trainer = split_hp({"lr": 0.1, "data.num_negatives": 3, "trainer.max_epochs": 5})
    assert (model, data, trainer) == ({"lr": 0.1}, {"num_negatives": 3}, {"max_epochs": 5})


@pytest.mark.parametrize(
    "search, message",
    [
        ({"lr": {"low": 0.1, "high": 0.01}}, "low=0.1 must be below high=0.01"),
        ({"lr": {"low": 0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"lr": {"low": "fast", "high": 0.1}}, "low='fast' is not a number"),
        ({"lr": {"min": 0.1, "max": 1}}, "must be a list of choices or"),
        ({"lr": []}, "empty list"),
        ({"opt.lr": [0.1, 0.2]}, "unknown prefix"),
        ({"lr": {"low": 0.1, "high": 1, "step": 0.1, "log": True}}, "step and log cannot be combined"),
        ({"mapping": [{"a": 1}]}, "choices must be numbers, strings"),
    ],
)
def test_bad_search_spaces_say_what_to_fix(tmp_path, search, message):
    models = [dict(BASE["models"][1], search=search)]
    with pytest.raises(CrossRecError, match=message):
        load_experiment(write_config(tmp_path, models=models, baselines=[]))


def test_grid_and_search_together_and_bad_budgets_are_refused(tmp_path):
    models = [dict(BASE["models"][1], grid={"lr": [0.01]})]
    with pytest.raises(CrossRecError, match="both search: and grid:"):
        load_experiment(write_config(tmp_path, models=models, baselines=[]))
    with pytest.raises(CrossRecError, match="trials must be a whole number >= 1"):
        load_experiment(write_config(tmp_path, trials=0))
    with pytest.raises(CrossRecError, match="--trials must be a whole number"):
        run_experiment(write_config(tmp_path), 1, tmp_path / "o", trials=-2, progress=False)


# ------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    config = write_config(tmp)
    out = tmp / "a"
    results = run_experiment(config, 2, out, progress=False)
    return config, out, results


@pytest.mark.slow
def test_search_runs_the_budget_and_reports_it(searched):
    _, out, results = searched
    trials = studies(out, "BPR-MF")
    assert len(trials) == 5
    fit = results[(results["split"] == "fit") & (results["model"] == "BPR-MF")].set_index(["seed", "metric"])["value"]
    assert fit[(0, "search_trials")] + fit[(0, "search_pruned")] == 5
    assert (1, "search_trials") not in fit.index  # later seeds reuse the tuning seed's choice
    # the chosen point is the best complete trial of the study, and the table's row trained it
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number))
    params = json.loads(results[(results["model"] == "BPR-MF") & (results["seed"] == 0)]["params"].iloc[0])
    assert params == best.params
    # searched DataModule and Trainer arguments reached the fit of later seeds too
    record = json.loads((out / results[(results["model"] == "BPR-MF") & (results["seed"] == 1)]["trial"].iloc[0] / "trial.json").read_text())
    assert record["hp"] == best.params and record["epochs_run"] <= best.params["trainer.max_epochs"]


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_trials(searched, tmp_path):
    config, out, results = searched
    again = run_experiment(config, 2, tmp_path / "b", progress=False)
    first, second = studies(out, "BPR-MF"), studies(tmp_path / "b", "BPR-MF")
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == [t.value for t in second]
    test = lambda r: r[r["split"] == "test"].drop(columns="trial").reset_index(drop=True)  # noqa: E731
    assert test(results).equals(test(again))


@pytest.mark.slow
def test_a_larger_budget_continues_the_study(searched, tmp_path):
    config, out, _ = searched
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    before = {p.parent.name for p in (copy / "trials" / "BPR-MF").glob("*/trial.json")}
    run_experiment(config, 1, copy, progress=False, trials=7)
    trials = studies(copy, "BPR-MF")
    assert len(trials) == 7
    after = {p.parent.name for p in (copy / "trials" / "BPR-MF").glob("*/trial.json")}
    assert len(after - before) <= 2  # the first five came from the study and the trial cache


@pytest.mark.slow
def test_a_smaller_budget_chooses_among_its_own_first_trials(searched, tmp_path):
    """A study that ran 5 trials, asked again with a budget of 3, gives what a fresh 3-trial run
    gives: the choice is never made among trials the smaller budget would not have run."""
    import shutil

    config, out, _ = searched
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    reused = run_experiment(config, 1, copy, progress=False, trials=3)
    fresh = run_experiment(config, 1, tmp_path / "fresh", progress=False, trials=3)
    assert len(studies(copy, "BPR-MF")) == 5  # nothing new trained or dropped
    rows = lambda r: r[(r["model"] == "BPR-MF") & ~r["metric"].str.endswith("seconds")].drop(columns="trial").sort_values(["split", "metric", "k"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(rows(reused), rows(fresh))
    fit = rows(reused).set_index("metric")["value"]
    assert fit["search_trials"] + fit["search_pruned"] == 3


def test_choosable_trials_are_the_best_of_every_prefix():
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    space = SearchSpace("m", {"lr": {"low": 1e-3, "high": 1.0}})
    scores = [0.2, None, 0.1, 0.5, 0.5, 0.3, 0.7, 0.6]  # None: pruned
    trials = []
    for number, value in enumerate(scores):
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        frozen = create_trial(state=state, value=value, params={"lr": 0.01 * (number + 1)}, distributions={"lr": FloatDistribution(1e-3, 1.0)})
        frozen.number = number
        trials.append(frozen)
    # budgets 1-3 choose trial 0, 4-5 trial 3 (the first of the tie), 6 trial 3, 7-8 trial 6
    assert choosable_trials(space, trials, "max") == {0, 3, 6}
    assert choosable_trials(space, trials, "min") == {0, 2}
    assert choosable_trials(space, trials[1:2], "max") == set()  # nothing complete: nothing to keep


@pytest.mark.slow
def test_only_trials_some_budget_would_choose_keep_their_weights(searched, tmp_path):
    _, out, results = searched
    folders = {t.number: out / "trials" / "BPR-MF" / t.user_attrs["trial"] for t in studies(out, "BPR-MF")}
    assert all((f / "trial.json").is_file() for f in folders.values())  # pruned trials are named too
    keep = choosable_trials(SearchSpace("BPR-MF", BASE["models"][1]["search"]), studies(out, "BPR-MF"), "max")
    assert {n for n, f in folders.items() if (f / "best.ckpt").is_file()} == keep
    # a record names a checkpoint only while the file is there
    assert {n for n, f in folders.items() if "checkpoint" in json.loads((f / "trial.json").read_text())} == keep
    # the tested trials load back, the search's choice included
    for row in results[(results["split"] == "test") & (results["model"] == "BPR-MF")].itertuples():
        assert (out / row.trial / "best.ckpt").is_file()
    # every trial keeps its weights when asked, and a bad value says what is allowed
    everything = run_experiment(write_config(tmp_path), 1, tmp_path / "all", progress=False, keep_checkpoints="all")
    assert len(list((tmp_path / "all" / "trials" / "BPR-MF").glob("*/best.ckpt"))) == len(studies(tmp_path / "all", "BPR-MF"))
    test = lambda r: r[(r["split"] == "test") & (r["seed"] == 0)].drop(columns="trial").reset_index(drop=True)  # noqa: E731
    assert test(everything).equals(test(results))
    with pytest.raises(CrossRecError, match="keep_checkpoints must be one of choosable, all"):
        run_experiment(write_config(tmp_path), 1, tmp_path / "bad", progress=False, keep_checkpoints="some")


@pytest.mark.slow
def test_the_test_split_is_not_read_before_the_choice(tmp_path, monkeypatch):
    """Every model is searched (or trained) and chosen on validation; the test part is read only
    by Runner.test, after the choice. Reading it anywhere else fails this test."""
    from crossrec_lit.data.datamodule import InteractionDataModule

    testing = {"on": False}
    real_eval, real_test = InteractionDataModule.eval_batches, Runner.test

    def guarded_eval(self, part):
        if part == "test" and not testing["on"]:
            raise AssertionError("the test split was read before the model was chosen")
        return real_eval(self, part)

    def flagged_test(self, spec, record):
        assert (spec.name, record["seed"]) in self._best  # chosen before testing
        testing["on"] = True
        try:
            return real_test(self, spec, record)
        finally:
            testing["on"] = False

    monkeypatch.setattr(InteractionDataModule, "eval_batches", guarded_eval)
    monkeypatch.setattr(Runner, "test", flagged_test)
    results = run_experiment(write_config(tmp_path, trials=3), 1, tmp_path / "o", progress=False)
    assert set(results[results["split"] == "test"]["model"]) == {"Popularity", "BPR-MF"}
    # and the guard does fire: reading the test part outside Runner.test is caught
    dm = Runner(load_experiment(write_config(tmp_path)), tmp_path / "o").datamodule(load_experiment(write_config(tmp_path)).models[1], 0)
    with pytest.raises(AssertionError, match="test split was read"):
        dm.test_dataloader()


@pytest.mark.slow
def test_hopeless_trials_are_pruned(tmp_path):
    models = [
        BASE["models"][0],
        {
            "name": "BPR-MF", "class_path": "crossrec_lit.models.BPRMF", "init_args": {"embedding_dim": 16},
            # half the learning rates barely move the embeddings: their curves stay flat
            "search": {"lr": {"low": 1e-7, "high": 0.05, "log": True}}, "trials": 10,
        },
    ]
    config = write_config(tmp_path, models=models, pruner={"n_startup_trials": 3, "n_warmup_steps": 0}, trainer={"max_epochs": 6, "check_val_every_n_epoch": 1})
    results = run_experiment(config, 1, tmp_path / "o", progress=False)
    trials = studies(tmp_path / "o", "BPR-MF")
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.params, t.value) for t in trials]
    assert all(len(t.intermediate_values) < 6 for t in pruned)
    fit = results[(results["split"] == "fit") & (results["model"] == "BPR-MF")].set_index("metric")["value"]
    assert fit["search_pruned"] == len(pruned)
    # a pruned trial is never chosen: its record and curve stay, its weights do not
    folders = [tmp_path / "o" / "trials" / "BPR-MF" / t.user_attrs["trial"] for t in pruned]
    assert all((f / "trial.json").is_file() and not (f / "best.ckpt").exists() for f in folders)
    assert not any("checkpoint" in json.loads((f / "trial.json").read_text()) for f in folders)
    # a pruned trial is cached like any other: the same run again trains nothing new
    count = len(list((tmp_path / "o" / "trials").rglob("trial.json")))
    again = run_experiment(config, 1, tmp_path / "o", progress=False, storage=f"sqlite:///{tmp_path / 'other.db'}")
    assert len(list((tmp_path / "o" / "trials").rglob("trial.json"))) == count
    test = lambda r: r[r["split"] == "test"].reset_index(drop=True)  # noqa: E731
    assert test(results).equals(test(again))


@pytest.mark.slow
def test_grids_run_through_grid_sampler_and_keep_grid_order_among_ties(tmp_path):
    models = [
        {"name": "Popularity", "class_path": "crossrec_lit.models.Popularity", "trainer": {"max_epochs": 1}},
        # two points that train identically (the l2 term is zero either way): a tie, grid order wins
        {"name": "MF", "class_path": "crossrec_lit.models.BPRMF", "init_args": {"embedding_dim": 8, "lr": 0.01}, "grid": [{"l2_reg": 0.0}, {"l2_reg": 0.0, "ks": [10, 20]}]},
    ]
    results = run_experiment(write_config(tmp_path, models=models, trainer={"max_epochs": 2, "check_val_every_n_epoch": 1}), 1, tmp_path / "o", progress=False)
    trials = studies(tmp_path / "o", "MF")
    assert sorted(t.params["grid_point"] for t in trials) == [0, 1]
    assert trials[0].value == trials[1].value
    assert json.loads(results[results["model"] == "MF"]["params"].iloc[0]) == {"l2_reg": 0.0}
