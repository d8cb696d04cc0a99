"""The experiment runner's worker processes, and reading an experiment's chosen trials back."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from crossrec_lit import CrossRecError
from crossrec_lit.experiment import chosen_trial, load_trained, run_experiment, workers_from_env
from crossrec_lit.training import quiet_trainer

from test_cli_experiment import CONFIGS

# grids tuned on the first seed, models that need a pretrained checkpoint (${pretrained:...}), two seeds
COLDSTART = CONFIGS / "case_study_coldstart.yaml"


@pytest.fixture(scope="module")
def two_ways(tmp_path_factory):
    """The same smoke experiment with one process and with two workers."""
    runs = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"workers{workers}")
        runs[workers] = (run_experiment(COLDSTART, 2, out, smoke=True, progress=False, workers=workers), out)
    return runs


@pytest.mark.slow
def test_workers_give_the_same_results_as_one_process(two_ways):
    (one, _), (two, _) = two_ways[1], two_ways[2]
    metrics = [frame[frame["split"] != "fit"].drop(columns="trial").reset_index(drop=True) for frame in (one, two)]
    pd.testing.assert_frame_equal(metrics[0], metrics[1])
    # the same trials (keys cover config, data, seed and code), so the same folders; except where a
    # key holds the path of a pretrained checkpoint, which lies in another output folder here
    uses_pretrained = ["EMCDR", "PTUPCDR", "Pretrain + fine-tune"]
    same_key = [frame.loc[~frame["model"].isin(uses_pretrained), "trial"].unique() for frame in (one, two)]
    assert sorted(same_key[0]) == sorted(same_key[1])
    assert {"EMCDR", "PTUPCDR", "CMF"} <= set(one["model"])  # pretrained references and a grid were covered


@pytest.mark.slow
def test_workers_without_cache_train_each_trial_once(tmp_path):
    """With cache=False nothing from earlier runs is reused, but what this run trained is: the
    pretrain entry is fitted once per seed, though EMCDR, PTUPCDR and the seed's recipe resolve it
    in other processes."""
    from crossrec_lit.experiment import load_experiment

    exp = load_experiment(COLDSTART, smoke=True)
    fits = tmp_path / "fits.txt"
    exp.pretrain["source_mf"].callbacks = [{"class_path": "fit_counter.CountFits", "init_args": {"path": str(fits)}}]
    results = run_experiment(exp, 2, tmp_path / "out", progress=False, cache=False, workers=2)
    assert fits.read_text().split() == ["BPRMF", "BPRMF"]
    assert {"EMCDR", "PTUPCDR", "Pretrain + fine-tune"} <= set(results["model"])


@pytest.mark.slow
def test_chosen_trial_and_load_trained_give_the_reported_model(two_ways):
    results, out = two_ways[1]
    for model in ("CMF", "Co-occurrence"):
        record = chosen_trial(out, model, 1)
        assert record["model"] == model and record["seed"] == 1
        assert (record["folder"] / "best.ckpt").is_file() and (record["folder"] / "test_per_user.csv.gz").is_file()
        reported = results[(results["model"] == model) & (results["seed"] == 1) & (results["split"] == "test") & (results["metric"] == "ndcg") & (results["k"] == 10)]["value"].item()
        assert json.loads((record["folder"] / "test.json").read_text())["ndcg@10"] == pytest.approx(reported, abs=1e-12)
        net = load_trained(out, model, 1)
        assert not net.training
        dm = _datamodule(out, model, 1)
        again = quiet_trainer().test(net, datamodule=dm, verbose=False)[0]["test/ndcg@10"]
        assert again == pytest.approx(reported, abs=1e-6)


@pytest.mark.slow
def test_every_model_of_the_case_study_gives_its_lists(two_ways):
    """`crossrec recommend` on each of the twelve models, those whose phase schedule moves the
    DataModule during fit (EMCDR, PTUPCDR) included: the data check passes and the lists come from
    the tested weights."""
    from crossrec_lit.experiment import load_experiment
    from crossrec_lit.recommend import recommend_from_run

    results, out = two_ways[1]
    exp = load_experiment(COLDSTART, smoke=True)
    for model in results["model"].unique():
        dm = _datamodule(out, model, 1)
        users = dm.user_vocab.ids[:4].tolist()
        lists = recommend_from_run(exp, out, model, seed=1, users=users, k=3)
        pd.testing.assert_frame_equal(lists, dm.recommend(load_trained(out, model, 1), users, k=3), obj=model)


def _datamodule(out, model, seed):
    from crossrec_lit.experiment import Runner, load_experiment

    exp = load_experiment(COLDSTART, smoke=True)
    runner = Runner(exp, out, progress=False)
    return runner.datamodule(runner.spec(model), seed)


def test_chosen_trial_names_what_is_missing(two_ways, tmp_path):
    _, out = two_ways[1]
    with pytest.raises(CrossRecError, match=r"no run of model 'Nope' with seed 0.*Fix: use one of the models"):
        chosen_trial(out, "Nope", 0)
    with pytest.raises(CrossRecError, match=r"no run of model 'CMF' with seed 7.*seeds \[0, 1\]"):
        chosen_trial(out, "CMF", 7)
    with pytest.raises(CrossRecError, match=r"results.csv does not exist.*Fix: run the experiment first"):
        chosen_trial(tmp_path / "empty", "CMF", 0)
    old = tmp_path / "old"
    old.mkdir()
    pd.read_csv(out / "results.csv").drop(columns="trial").to_csv(old / "results.csv", index=False)
    with pytest.raises(CrossRecError, match=r"older crossrec_lit.*re-run run_experiment"):
        chosen_trial(old, "CMF", 0)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(tmp_path, workers):
    with pytest.raises(CrossRecError, match=r"workers must be a whole number >= 1"):
        run_experiment(CONFIGS / "synthetic_mf_experiment.yaml", 1, tmp_path, smoke=True, progress=False, workers=workers)
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("3", 3)])
def test_workers_from_env(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CROSSREC_WORKERS", raising=False)
    else:
        monkeypatch.setenv("CROSSREC_WORKERS", value)
    assert workers_from_env() == expected


@pytest.mark.parametrize("value", ["two", "0", "-2"])
def test_bad_workers_env_is_refused(monkeypatch, value):
    monkeypatch.setenv("CROSSREC_WORKERS", value)
    with pytest.raises(CrossRecError, match=r"CROSSREC_WORKERS=.*Fix: set it to e.g. 2"):
        workers_from_env()


def test_recommend_keeps_float64_scores(tiny_source):
    """CrossDomainCooccurrence breaks ties in float64; recommend must rank by those very scores."""
    from crossrec_lit.data import CrossDomainDataModule
    from crossrec_lit.evaluation.metrics import topk_indices
    from crossrec_lit.models import CrossDomainCooccurrence

    dm = CrossDomainDataModule(tiny_source, "A", "B", batch_size=256, phase="target")
    dm.setup("fit")
    net = CrossDomainCooccurrence(**dm.model_arguments_for(CrossDomainCooccurrence))
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(net, datamodule=dm)
    users = torch.arange(min(50, dm.num_users))
    full = net.full_scores(users)
    assert full.dtype == torch.float64
    top, scores = net.recommend(users, k=10)
    assert scores.dtype == torch.float64
    assert torch.equal(top, topk_indices(full, 10))


def test_quiet_trainer_checkpoints_only_when_asked(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    assert quiet_trainer().checkpoint_callback is None
    keep = ModelCheckpoint(dirpath=tmp_path, monitor="val/ndcg@10", mode="max")
    assert quiet_trainer(2, [keep]).checkpoint_callback is keep
    assert quiet_trainer(max_epochs=3, enable_progress_bar=True).max_epochs == 3


def test_quiet_notebook_silences_known_noise_only():
    import warnings

    from crossrec_lit.reporting import in_words, quiet_notebook

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_notebook()
        warnings.warn("torch.utils._pytree.LeafSpec is deprecated", FutureWarning)
        warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.", UserWarning)
        warnings.warn("something the user must see", UserWarning)
    assert [str(w.message) for w in caught] == ["something the user must see"]
    assert in_words([]) == "none" and in_words(["a"]) == "a" and in_words(["a", "b", "c"]) == "a, b and c"


def _runner_with_workers(tmp_path, *, training: bool, **popen):
    """A smoke experiment with two workers, once both have started (``training``: and one of them
    has trained for a while, so its Trainer has put Lightning's SIGTERM handler in place)."""
    import subprocess
    import sys
    import time

    import psutil

    runner = subprocess.Popen(
        [sys.executable, "-m", "crossrec_lit.experiment", "--config", str(COLDSTART), "--smoke", "--seeds", "2",
         "--workers", "2", "--out", str(tmp_path / "out"), "--quiet"],
        **popen,
    )  # fmt: skip
    parent = psutil.Process(runner.pid)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and runner.poll() is None:
        workers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
        if len(workers) == 2 and (not training or any(p.cpu_times().user > 3 for p in workers)):
            break
        time.sleep(0.2)
    return runner, workers


def test_workers_leave_when_the_runner_is_killed(tmp_path):
    """A runner killed outright (SIGKILL: no chance to shut its pool down) must not leave its
    workers training on the machine."""
    import signal
    import subprocess
    import time

    import psutil

    runner, workers = _runner_with_workers(tmp_path, training=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert len(workers) == 2, "the pool's workers never started"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    deadline = time.monotonic() + 30
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        # an exited orphan may stay a zombie where the container's init does not reap it
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} worker(s) outlived their runner"


def test_a_worker_stopped_by_sigterm_fails_the_run_loudly(tmp_path):
    """Lightning answers SIGTERM during fit with a SystemExit; re-raised in the runner it used to end
    the run with status 0 and no results (seen on a shared machine)."""
    import signal
    import subprocess

    runner, workers = _runner_with_workers(tmp_path, training=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert workers, "the pool's workers never started"
        for p in workers:
            p.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=180)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode != 0
    # the worker dies at once (outside a fit) or stops at the end of its epoch (inside one): either way
    # the run says so in one line and fails, and writes no summary
    assert "run the same command" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "out" / "summary.md").exists()
