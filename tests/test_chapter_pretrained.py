"""Chapter "Knowledge transfer from a large pretrained model": smoke run and the claims its prose makes.

``test_smoke`` always runs on the synthetic fallback (the chapter is pointed at a data folder that
does not exist), with a fresh text-embedding cache and experiment folder under ``tmp_path``: the
chapter then encodes the synthetic titles with MiniLM (a few hundred, a few seconds) and trains the
smoke section of ``configs/case_study_text.yaml`` for one seed. ``test_book_settings`` runs the
chapter as the book does, on the Amazon stores; it is marked ``book`` and runs in ``make regress``,
not ``make test`` (about an hour of training unless ``runs/case_study_text`` already caches the trials).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chapter_runner import ROOT
from chapter_runner import assert_metric as _assert_metric
from chapter_runner import run_chapter as _run_chapter
from chapter_runner import smoke
from crossrec_lit.data import Synthetic
from crossrec_lit.experiment import load_experiment

pytestmark = pytest.mark.chapter
SMOKE = {"seeds": 1, "throughput_titles": 128}
CONFIG = ROOT / "configs" / "case_study_text.yaml"
STORES = ("Beauty", "Sports", "Toys")
KEYS = ("a", "b_beauty", "b_sports", "c")


def models_by_setting(smoke_mode: bool) -> dict[str, list[str]]:
    exp = load_experiment(CONFIG, smoke=smoke_mode)
    protocols = list(dict.fromkeys(m.protocol for m in exp.models))
    keys = dict(zip(protocols, KEYS))
    out: dict[str, list[str]] = {k: [] for k in KEYS}
    for m in exp.models:
        out[keys[m.protocol]].append(m.name)
    return out


def check_pretrained(rec: dict, smoke_mode: bool) -> None:
    expected = {
        "data", "encoder", "encoding", "items", "nn_cosine_mean", "nn_cosine_above_0.8", "purity", "explained_2d",
        "protocols", "strongest", "test", "vs_strongest", "verdicts", "seeds", "experiment_seconds", "seed", "twin_tests",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"

    # the encoder: MiniLM, 384-d; one vector per item, the second call served by the cache alone
    assert rec["encoder"]["dim"] == 384
    enc = rec["encoding"]
    assert enc["titles"] == sum(rec["items"].values())
    assert 0 < enc["unique"] <= enc["titles"]
    assert enc["cached_encoded"] == 0
    assert enc["titles_per_second"] > 0 and enc["cold_estimate_seconds"] > 0

    # section 2: cosines of unit vectors, shares in [0, 1]
    assert set(rec["nn_cosine_mean"]) == set(STORES)
    for store in STORES:
        assert -1.0 <= rec["nn_cosine_mean"][store] <= 1.0 + 1e-6, store
        _assert_metric(rec["nn_cosine_above_0.8"][store], f"nn_cosine_above_0.8.{store}")
        _assert_metric(rec["purity"][store], f"purity.{store}")
    _assert_metric(rec["purity"]["all"], "purity.all")
    _assert_metric(rec["purity"]["chance"], "purity.chance")
    _assert_metric(rec["explained_2d"], "explained_2d")

    # section 3: every protocol and every model of the config, metrics finite and in [0, 1]
    assert tuple(rec["protocols"]) == KEYS
    exp = load_experiment(CONFIG, smoke=smoke_mode)
    settings = models_by_setting(smoke_mode)
    assert len(rec["seeds"]) >= 1
    for key in KEYS:
        assert sorted(rec["test"][key]) == sorted(settings[key]), key
        for model, values in rec["test"][key].items():
            for metric in ("ndcg@10", "recall@10"):
                _assert_metric(values[metric], f"{key}.{model}.{metric}")
        # the strongest baseline is the setting's baseline with the best mean NDCG@10
        baselines = [m for m in settings[key] if m in exp.baselines]
        assert rec["strongest"][key] == max(baselines, key=lambda m: rec["test"][key][m]["ndcg@10"])
        assert rec["verdicts"][key] in ("helps", "hurts", "no clear difference")
    # the pretrained encoder against its TF-IDF twin in every setting, and in (c) a Sports start
    # against the same text model trained on Toys alone
    assert set(rec["twin_tests"]) == {f"{k}|vs_tfidf" for k in KEYS} | {"c|vs_scratch"}
    for name, test in rec["twin_tests"].items():
        assert test["ci_low"] <= test["mean_diff"] <= test["ci_high"], name
        assert 0.0 <= test["p_holm"] <= 1.0
    # paired comparisons: every other model against the strongest baseline; the interval holds the mean
    for name, test in rec["vs_strongest"].items():
        key, model = name.split("|", 1)
        assert model in settings[key] and model != rec["strongest"][key]
        assert test["ci_low"] <= test["mean_diff"] <= test["ci_high"], name
        if len(rec["seeds"]) == 1:  # one seed: the mean of per-user differences is the difference of means
            diff = rec["test"][key][model]["ndcg@10"] - rec["test"][key][rec["strongest"][key]]["ndcg@10"]
            assert test["mean_diff"] == pytest.approx(diff, abs=1e-6), name


def test_smoke(tmp_path: Path) -> None:
    params = {
        **SMOKE,
        "data_root": str(tmp_path / "no-such-folder"),
        "runs_dir": str(tmp_path / "runs"),
        "text_cache": str(tmp_path / "text_cache"),
    }
    rec = smoke("pretrained", tmp_path, params)
    check_pretrained(rec, smoke_mode=True)
    assert rec["data"] == "synthetic"
    assert rec["seeds"] == [0]
    # the titles are those of the config's smoke stores (Beauty & Toys, and Sports from the second pair)
    exp = load_experiment(CONFIG, smoke=True)
    first = Synthetic(**exp.data["init_args"]["source"]["init_args"]).item_text()
    assert rec["items"]["Beauty"] == int((first["domain"] == "Beauty").sum())
    assert rec["items"]["Toys"] == int((first["domain"] == "Toys").sum())
    # a fresh cache: the first call encodes every distinct title, the second none
    assert rec["encoding"]["first_encoded"] == rec["encoding"]["unique"]
    # The prose's claim for new items: the text model ranks them above chance. Checked over seeds
    # 0-14 of the smoke stores before asserting: Text (a) 0.044-0.156 NDCG@10 against Random (a)
    # 0.032-0.046, smallest margin 0.011 (seed 4); seed 0, the one run here: 0.053 against 0.040.
    new_items = rec["test"]["a"]
    assert new_items["Text (a)"]["ndcg@10"] > new_items["Random (a)"]["ndcg@10"]


@pytest.mark.book
@pytest.mark.real_data
def test_book_settings(tmp_path: Path, data_root: Path) -> None:
    """The book's own run on the Amazon stores (minutes with the acceptance run's trials cached,
    about an hour of training without them)."""
    rec, _ = _run_chapter("pretrained", tmp_path, {"data_root": str(data_root)})
    check_pretrained(rec, smoke_mode=False)
    assert rec["data"] == "amazon"
    assert rec["items"] == {"Beauty": 12_101, "Sports": 18_357, "Toys": 11_924}  # SOURCE.md
    assert all(math.isfinite(v) for v in rec["nn_cosine_mean"].values())
