"""Chapter "Pretraining a sequence model on one store": smoke run and the claims its prose makes.

``test_smoke`` runs the chapter on the synthetic fallback (a data folder that does not exist):
the smoke sections of the three sequential configs, one seed, two epochs each, in ``tmp_path``.
``test_book_settings`` runs it as the book does on the Amazon stores; it is marked ``book`` and
runs in ``make regress`` (about 45 minutes of training per seed unless ``runs/`` caches the trials).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import assert_verdict
from chapter_runner import run_chapter as _run_chapter
from chapter_runner import smoke

pytestmark = pytest.mark.chapter
SMOKE = {"seeds": 1}
MODELS = {
    "recipe": {"Popularity", "BPR-MF", "SASRec", "SASRec, Beauty-pretrained"},
    "merged": {"Popularity", "SASRec, Toys alone", "SASRec, Toys alone (from start)", "SASRec, Beauty + Toys timeline"},
    "cold": {"Popularity", "Overlap popularity", "Co-occurrence", "SASRec, Beauty + Toys timeline"},
}
# the tests the prose reads a verdict from: (model, baseline)
READ = [
    ("SASRec, Beauty-pretrained", "SASRec"),
    ("SASRec", "BPR-MF"),
    ("SASRec, Beauty + Toys timeline", "SASRec, Toys alone"),
    ("SASRec, Beauty + Toys timeline", "SASRec, Toys alone (from start)"),
    ("SASRec, Toys alone (from start)", "SASRec, Toys alone"),
    ("SASRec, Beauty + Toys timeline", "Co-occurrence"),
    ("SASRec, Beauty + Toys timeline", "Overlap popularity"),
]


def check_sequential(rec: dict, seeds: int) -> None:
    assert rec["seeds"] == list(range(seeds))
    for key, models in MODELS.items():
        assert set(rec[key]) == models, key
        for model, row in rec[key].items():
            _assert_metric(row["ndcg@10"], f"{key}.{model}.ndcg@10")
            if key != "cold":  # leave-one-out: one test item, so NDCG@10 <= hit@10 = recall@10
                assert row["ndcg@10"] <= row["recall@10"] + 1e-9
    for model, baseline in READ:
        test = rec["tests"][f"{model}|{baseline}"]
        assert test["ci_low"] <= test["mean_diff"] <= test["ci_high"]
        assert_verdict(test)  # the verdict the prose glues: the Holm p and the interval's side together
    # the warm tables compare on the same customers; the cold one on the cold customers only
    warm = rec["tests"]["SASRec, Beauty + Toys timeline|SASRec, Toys alone"]["n_users"]
    cold = rec["tests"]["SASRec, Beauty + Toys timeline|Co-occurrence"]["n_users"]
    assert 0 < cold < warm
    # attention: causal (nothing above the diagonal) and a distribution over earlier purchases
    att = rec["attention"]
    assert att["upper"] < 1e-6 and all(abs(s - 1.0) < 1e-4 for s in att["rows_sum"])
    assert 1.0 / att["length"] - 1e-6 <= att["last_top"] <= 1.0
    for row in rec["cost"].values():
        assert row["seconds_per_epoch"] > 0 and row["minutes_per_seed"] > 0


def test_smoke(tmp_path: Path) -> None:
    rec = smoke("sequential", tmp_path, {**SMOKE, "data_root": str(tmp_path / "no-such-folder"), "runs_dir": str(tmp_path / "runs")})
    check_sequential(rec, SMOKE["seeds"])
    assert rec["data"] == "synthetic"


@pytest.mark.book
@pytest.mark.real_data
def test_book_settings(tmp_path: Path, data_root: Path) -> None:
    """The book's own run on the Amazon stores."""
    rec, _ = _run_chapter("sequential", tmp_path, {"data_root": str(data_root)})
    check_sequential(rec, 1)
    assert rec["data"] == "amazon"
    assert rec["history"]["Toys"]["customers"] == 19_412  # SOURCE.md
    # the first acceptance line, on the book's seed: SASRec alone >= 0.040 and above BPR-MF
    assert rec["recipe"]["SASRec"]["ndcg@10"] >= 0.040
    assert rec["tests"]["SASRec|BPR-MF"]["verdict"] == "better"
