"""Top-k lists from a finished experiment (`crossrec recommend`), and id-level recommend in batches."""

from __future__ import annotations

import gzip
import re
import sys

import pandas as pd
import pytest
import yaml

from crossrec_lit import CrossRecError
from crossrec_lit.data import datamodule as datamodule_module
from crossrec_lit.experiment import Runner, load_experiment, load_trained, run_experiment
from crossrec_lit.recommend import read_user_ids, recommend_from_run, write_recommendations

# two synthetic stores sharing customers, some of whom have bought nothing in the target store B:
# the customers a cross-store model exists for
CONFIG = {
    "name": "two synthetic stores",
    "num_threads": 1,
    "monitor": "val/ndcg@10",
    "data": {
        "class_path": "crossrec_lit.data.CrossDomainDataModule",
        "init_args": {
            "source": {"class_path": "crossrec_lit.data.Synthetic", "init_args": {"n_users": 300, "n_items": [120, 90], "overlap": 0.6, "seed": 1}},
            "source_domain": "A", "target_domain": "B", "split": "cold_start", "cold_start_share": 0.2,
            "batch_size": 256, "seed": "${seed}", "phase": "target",
        },
    },
    "trainer": {"max_epochs": 2, "check_val_every_n_epoch": 1},
    "baselines": ["Popularity"],
    "models": [
        {"name": "Popularity", "class_path": "crossrec_lit.models.Popularity", "trainer": {"max_epochs": 1}},
        {"name": "Joint", "class_path": "crossrec_lit.models.SharedUserMF", "init_args": {"embedding_dim": 8, "lr": 0.01}, "data": {"phase": "both"}},
    ],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config path, output folder) of a finished two-seed experiment."""
    folder = tmp_path_factory.mktemp("recommend")
    config = folder / "stores.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run_experiment(config, 2, folder / "out", progress=False)
    return config, folder / "out"


def _datamodule(config, seed):
    exp = load_experiment(config)
    return Runner(exp, "unused").datamodule(exp.models[1], seed)


def test_every_customer_gets_k_unseen_products_of_the_target_store(run):
    config, out = run
    recs = recommend_from_run(config, out, "Joint", seed=1, k=5)
    dm = _datamodule(config, 1)
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    # every customer of either store, cold-start ones (no purchase in B the model saw) included
    assert set(recs["user"]) == set(dm.user_vocab.ids)
    assert (recs.groupby("user").size() == 5).all()
    assert set(recs["item"]) <= set(dm.item_vocab.ids)
    # scores fall with rank, and nothing the customer has in B (held-out purchases included) is listed
    assert (recs.groupby("user")["score"].diff().dropna() <= 0).all()
    seen = dm.index.matrix("B", ("train", "valid", "test")).tocoo()
    had = set(zip(dm.user_vocab.decode(seen.row), dm.item_vocab.decode(seen.col)))
    assert not had & set(zip(recs["user"], recs["item"]))


def test_the_lists_come_from_the_model_the_table_reports(run):
    """The same lists as the tested model of that seed gives through the DataModule directly."""
    config, out = run
    users = ["u000003", "u000150"]
    recs = recommend_from_run(config, out, "Joint", seed=0, users=users, k=4)
    expected = _datamodule(config, 0).recommend(load_trained(out, "Joint", 0), users, k=4)
    pd.testing.assert_frame_equal(recs, expected)
    assert not recs.equals(recommend_from_run(config, out, "Joint", seed=1, users=users, k=4))


def test_recommend_scores_in_batches_with_the_same_result(run, monkeypatch):
    """Scoring a large customer base in bounded batches gives the lists of one pass."""
    config, out = run
    whole = recommend_from_run(config, out, "Joint", k=3)
    monkeypatch.setattr(datamodule_module, "MAX_BATCH_SCORES", 7 * 90)  # 7 customers per batch
    pd.testing.assert_frame_equal(recommend_from_run(config, out, "Joint", k=3), whole)


def test_data_that_changed_since_the_run_are_refused(run, tmp_path):
    config, out = run
    changed = yaml.safe_load(config.read_text())
    changed["data"]["init_args"]["source"]["init_args"]["seed"] = 2
    other = tmp_path / "changed.yaml"
    other.write_text(yaml.safe_dump(changed))
    with pytest.raises(CrossRecError, match=r"differ from those 'Joint' \(seed 0\) was trained on.*Fix: give the config"):
        recommend_from_run(other, out, "Joint")


def crossrec_recommend(run, monkeypatch, *args: str) -> int:
    """``crossrec recommend --config <run's config> --out <run's folder> <args>`` in-process."""
    from crossrec_lit.cli import main

    config, out = run
    monkeypatch.setattr(sys, "argv", ["crossrec"])  # as from a shell: no pytest arguments
    return main(["recommend", "--config", str(config), "--out", str(out), *args])


def test_cli_writes_the_lists_in_one_piece(run, tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.txt"
    users.write_text("user\nu000003\n\nu000150\n")
    target = tmp_path / "recs.csv.gz"
    assert crossrec_recommend(run, monkeypatch, "--model", "Joint", "--users", str(users), "--k", "3", "--output", str(target)) == 0
    assert "2 customers x 3 products from Joint (seed 0)" in capsys.readouterr().out
    with gzip.open(target, "rt") as fh:
        written = pd.read_csv(fh, dtype={"user": str, "item": str})
    assert written["user"].tolist() == ["u000003"] * 3 + ["u000150"] * 3
    assert written["rank"].tolist() == [1, 2, 3] * 2


def test_unknown_ids_can_be_left_out(run, tmp_path, monkeypatch, capsys):
    users = tmp_path / "users.txt"
    users.write_text("u000003\nnew-signup\n")
    target = tmp_path / "recs.csv"
    assert crossrec_recommend(run, monkeypatch, "--model", "Joint", "--users", str(users), "--k", "2", "--output", str(target), "--skip-unknown") == 0
    assert "left out 1 id(s) the data do not know, e.g. ['new-signup']" in capsys.readouterr().out
    assert pd.read_csv(target, dtype=str)["user"].tolist() == ["u000003", "u000003"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "Nope"], r"has no run of model 'Nope' with seed 0. Fix: use one of the models \['Joint', 'Popularity'\]"),
        (["--model", "Joint", "--seed", "5"], r"has no run of model 'Joint' with seed 5"),
        (["--model", "Joint", "--output", "recs.txt"], r"output recs\.txt has an unknown format. Fix: end its name with one of \.csv"),
        (["--model", "Joint", "--k", "0"], r"--k must be >= 1, got 0"),
        (["--model", "Joint", "--users", "nowhere.txt"], r"users file nowhere\.txt does not exist"),
        (["--model", "Joint", "--users", "ids.txt"], r"1 customer id\(s\) that the data do not know, e\.g\. \['nobody'\]. Fix: leave them out, or pass --skip-unknown"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(run, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text("u000003\nnobody\n")
    output = [] if "--output" in args else ["--output", "recs.csv"]
    assert crossrec_recommend(run, monkeypatch, *args, *output) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crossrec recommend: error: ")
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


def test_user_files_and_output_formats(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("user\n\n")
    with pytest.raises(CrossRecError, match="names no customer"):
        read_user_ids(empty)
    frame = pd.DataFrame({"user": ["a"], "rank": [1], "item": ["x"], "score": [0.5]})
    with pytest.raises(CrossRecError, match="unknown format"):
        write_recommendations(frame, tmp_path / "recs.json")
    pd.testing.assert_frame_equal(pd.read_csv(write_recommendations(frame, tmp_path / "r.csv")), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(write_recommendations(frame, tmp_path / "r.parquet")), frame)


def test_parquet_without_pyarrow_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    frame = pd.DataFrame({"user": ["a"], "rank": [1], "item": ["x"], "score": [0.5]})
    with pytest.raises(CrossRecError, match=r"needs pyarrow, which is not installed. Fix: pip install pyarrow"):
        write_recommendations(frame, tmp_path / "r.parquet")
    assert list(tmp_path.iterdir()) == []
