"""Chapter "Core concepts": smoke run and the claims its prose makes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from chapter_runner import assert_metric as _assert_metric
from chapter_runner import run_chapter as _run_chapter
from chapter_runner import smoke

pytestmark = pytest.mark.chapter
SMOKE = {"n_users": 300, "epochs": 2}

TOY_K = 3
# The toy example is fixed in the chapter's text: Ana (4 relevant items, hits at ranks 1 and 3)
# and Ben (1 relevant item, hit at rank 2). Exact values, so a change to the example or a bug in the
# hand computation cannot slip through just because both sides moved together.
TOY_EXACT = {
    f"precision@{TOY_K}": (2 / 3 + 1 / 3) / 2,
    f"recall@{TOY_K}": (2 / 4 + 1 / 1) / 2,
    f"f1@{TOY_K}": (4 / 7 + 1 / 2) / 2,
    f"ndcg@{TOY_K}": ((1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2) + 1 / math.log2(3)) / 2,
}
# The package computes in float32: its values carry a relative error of about 6e-8.
FLOAT32_TOL = 1e-6
METRICS = ("precision", "recall", "f1", "hit", "ndcg", "mrr")


def check_core_concepts(rec: dict, params: dict) -> None:
    expected = {
        "toy_hand", "toy_package", "mf_test", "popularity_test", "random_recall@10",
        "mf_train_loss_first", "mf_train_loss_last", "mf_val_ndcg@10_last",
        "n_users", "n_items", "n_test_users", "epochs", "seed",
    }  # fmt: skip
    assert expected <= rec.keys(), f"missing keys: {sorted(expected - rec.keys())}"
    assert rec["epochs"] == params["epochs"]

    # hand computation == package == the exact fractions of the worked example
    for key, exact in TOY_EXACT.items():
        assert rec["toy_hand"][key] == pytest.approx(exact, abs=1e-12), key
        assert rec["toy_package"][key] == pytest.approx(rec["toy_hand"][key], abs=FLOAT32_TOL), key
    for model in ("mf_test", "popularity_test"):
        assert set(METRICS) <= rec[model].keys()
        for metric in METRICS:
            _assert_metric(rec[model][metric], f"{model}.{metric}@10")
        # leave-one-out: one relevant item per user, so HR@10 == Recall@10 and P@10 == R@10 / 10
        assert rec[model]["hit"] == pytest.approx(rec[model]["recall"], abs=FLOAT32_TOL)
        assert rec[model]["precision"] == pytest.approx(rec[model]["recall"] / 10, abs=FLOAT32_TOL)
    for key in ("random_recall@10", "mf_val_ndcg@10_last"):
        _assert_metric(rec[key], key)
    assert rec["n_test_users"] == rec["n_users"]  # every synthetic user has >= 5 interactions

    # Claims that hold in smoke mode (checked over seeds 0-5, n_users=300, 2 epochs):
    # popularity is far above a random order (observed 3.7-5.6x, asserted 2x) ...
    assert rec["popularity_test"]["recall"] > 2 * rec["random_recall@10"]
    # ... and MF's training loss goes down. MF does NOT beat popularity after 2 epochs on 225 users
    # (it is near random there), so that claim is checked on the book's own settings below.
    assert rec["mf_train_loss_last"] < rec["mf_train_loss_first"]



def test_smoke(tmp_path: Path) -> None:
    check_core_concepts(smoke("core_concepts", tmp_path, SMOKE), SMOKE)


@pytest.mark.slow
def test_core_concepts_book_settings(tmp_path: Path) -> None:
    """The prose says MF ranks above popularity: true at the book's own parameters.

    Checked with this generator over seeds 0-5 before asserting: MF's test NDCG@10 was 1.9-2.5x
    popularity's (0.128-0.174 against 0.052-0.074), and Recall@10 likewise.
    """
    rec, _ = _run_chapter("core_concepts", tmp_path, {})
    check_core_concepts(rec, {"epochs": rec["epochs"]})
    assert rec["mf_test"]["ndcg"] > rec["popularity_test"]["ndcg"]
    assert rec["mf_test"]["recall"] > rec["popularity_test"]["recall"]


def test_record_writes_json_atomically_and_refuses_nan(tmp_path: Path) -> None:
    """What every chapter's last cell relies on: scalars converted, NaN refused, nothing half-written."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    from crossrec_lit.errors import CrossRecError
    from crossrec_lit.reporting import record

    target = tmp_path / "sub" / "rec.json"
    clean = record({"a": np.float32(0.25), "b": torch.tensor(0.5), "n": np.int64(3), "nested": {"ok": True}}, target)
    assert clean == {"a": 0.25, "b": 0.5, "n": 3, "nested": {"ok": True}}
    assert json.loads(target.read_text()) == clean
    assert record({"x": 1.0}, None) == {"x": 1.0}  # the book's default: validate, write nothing
    with pytest.raises(CrossRecError, match=r"results\['bad'\] is nan"):
        record({"bad": float("nan")}, target)
    assert json.loads(target.read_text()) == clean  # the old record is untouched
    assert [p.name for p in target.parent.iterdir()] == ["rec.json"]  # no temp files left behind
