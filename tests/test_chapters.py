"""Execute the book's chapters with papermill and check the numbers they record.

Each chapter is a MyST Markdown notebook whose first code cell is tagged ``parameters`` and whose
last cell calls ``crossrec_lit.reporting.record(results, record_path)``. Here we convert the chapter
to .ipynb with jupytext, run it with a small *smoke* configuration and a ``record_path`` in
``tmp_path``, and check the JSON it wrote. The chapters' own cells assert the things that must
hold whatever the parameters (e.g. hand computation == package); these tests also check that the
claims the prose makes hold.

Add a chapter: put its smoke parameters in ``SMOKE`` and its checks in ``CHECKS``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

# chapter (file stem in book/) -> parameters overriding the book's values for a quick run
SMOKE: dict[str, dict] = {
    "core_concepts": {"n_users": 300, "epochs": 2},
}

# No warning filters: with pyproject's filterwarnings = error, jupytext 1.19 / papermill 2.7 /
# nbclient / jupyter_client emitted no warning in this process (the kernel runs in its own process,
# and the chapter filters its own noise). Add a precise filter here only for a warning you see.
pytestmark = pytest.mark.chapter


def _run_chapter(name: str, tmp_path: Path, parameters: dict) -> tuple[dict, float]:
    """Execute book/<name>.md with ``parameters``; return its record and the wall time."""
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    source = BOOK / f"{name}.md"
    assert source.exists(), f"{source} is missing"
    notebook = jupytext.read(source)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells and "parameters" in code_cells[0].metadata.get("tags", []), f"the first code cell of {name}.md must be tagged 'parameters'"
    assert "record(" in code_cells[-1].source, f"the last code cell of {name}.md must call crossrec_lit.reporting.record"
    assert not any(c.get("outputs") for c in code_cells), f"{name}.md must carry no outputs"
    ipynb = tmp_path / f"{name}.ipynb"
    jupytext.write(notebook, ipynb)
    record_path = tmp_path / f"{name}.json"
    env_threads = os.environ.get("CROSSREC_NUM_THREADS")
    params = {"num_threads": int(env_threads) if env_threads else 1, **parameters, "record_path": str(record_path)}
    start = time.perf_counter()
    papermill.execute_notebook(
        str(ipynb),
        str(tmp_path / f"{name}.out.ipynb"),
        parameters=params,
        kernel_name="python3",
        cwd=str(BOOK),
        progress_bar=False,
        log_output=False,
    )
    elapsed = time.perf_counter() - start
    assert record_path.exists(), f"{name} did not write its record; does its last cell call record(..., record_path)?"
    return json.loads(record_path.read_text()), elapsed


def _assert_metric(value, what: str) -> None:
    assert isinstance(value, float) and math.isfinite(value), f"{what} = {value!r} is not a finite float"
    assert 0.0 <= value <= 1.0, f"{what} = {value} is outside [0, 1]"


# ----------------------------------------------------------------------------- core_concepts
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


CHECKS = {"core_concepts": check_core_concepts}


def _numbers(value, where="record"):
    """Every number in a record, with where it is (record() already refuses NaN/inf on writing)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{where}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value


@pytest.mark.parametrize("chapter", sorted(SMOKE))
def test_chapter_smoke(chapter: str, tmp_path: Path) -> None:
    rec, elapsed = _run_chapter(chapter, tmp_path, SMOKE[chapter])
    numbers = list(_numbers(rec))
    assert numbers, f"{chapter} recorded no numbers"
    assert all(math.isfinite(v) for _, v in numbers), [w for w, v in numbers if not math.isfinite(v)]
    assert chapter in CHECKS, f"add the checks of {chapter}'s claims to CHECKS"
    CHECKS[chapter](rec, SMOKE[chapter])
    # smoke runs must stay quick; generous bound against a busy 2-core machine
    assert elapsed < 120, f"{chapter} smoke run took {elapsed:.0f}s"


def test_chapter_list_matches_toc() -> None:
    """Every chapter in _toc.yml has a smoke configuration (the intro is prose only)."""
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    chapters = {Path(f).name for f in files}
    assert chapters == set(SMOKE), f"_toc.yml chapters {sorted(chapters)} vs smoke configs {sorted(SMOKE)}"


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


# ----------------------------------------------------------------------------- the recording contract
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
