"""Running a book chapter under papermill and reading what it recorded (used by tests/test_chapter_*.py).

Each chapter is a MyST Markdown notebook whose first code cell is tagged ``parameters`` and whose
last cell calls ``crossrec_lit.reporting.record(results, record_path)``. A chapter test converts
it to .ipynb with jupytext, runs it with a small *smoke* configuration and a ``record_path`` in
``tmp_path``, and checks the JSON it wrote. The chapters' own cells assert what must hold whatever
the parameters (e.g. hand computation == package); the tests check the claims the prose makes.

Adding a chapter: list it in _toc.yml and add tests/test_chapter_<stem>.py with ``SMOKE`` (its
smoke parameters) and a test calling :func:`smoke` (test_book_toc.py checks that every chapter
has one).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def is_notebook(name: str) -> bool:
    """Whether book/<name>.md is an executable chapter (a jupytext notebook), not a prose page."""
    head = (BOOK / f"{name}.md").read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head


def toc_chapters() -> list[str]:
    """The executable chapters of _toc.yml, in reading order (prose pages such as the glossary excluded)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [Path(c["file"]).name for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [n for n in names if is_notebook(n)]
# Every executed chapter is also kept here (tests/site_build.py renders the smoke site from them)
SMOKE_DIR = ROOT / "_build" / "smoke"


def source_digest(name: str) -> str:
    """sha256 of book/<name>.md: a kept notebook is reused only while its chapter is unchanged."""
    return hashlib.sha256((BOOK / f"{name}.md").read_bytes()).hexdigest()


def keep_executed(name: str, executed: Path, digest: str) -> Path:
    """Copy an executed notebook to SMOKE_DIR/<name>.ipynb (atomically, tagged with its source's digest)."""
    notebook = json.loads(executed.read_text())
    notebook.setdefault("metadata", {})["crossrec_smoke"] = {"source_sha256": digest}
    SMOKE_DIR.mkdir(parents=True, exist_ok=True)
    target = SMOKE_DIR / f"{name}.ipynb"
    partial = target.with_name(f".{name}.{os.getpid()}.ipynb.tmp")
    partial.write_text(json.dumps(notebook, indent=1, ensure_ascii=False))
    os.replace(partial, target)
    return target


def run_chapter(name: str, tmp_path: Path, parameters: dict) -> tuple[dict, float]:
    """Execute book/<name>.md with ``parameters``; return its record and the wall time."""
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    source = BOOK / f"{name}.md"
    assert source.exists(), f"{source} is missing"
    digest = source_digest(name)
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
    executed = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(
        str(ipynb),
        str(executed),
        parameters=params,
        kernel_name="python3",
        cwd=str(BOOK),
        progress_bar=False,
        log_output=False,
    )
    elapsed = time.perf_counter() - start
    keep_executed(name, executed, digest)
    assert record_path.exists(), f"{name} did not write its record; does its last cell call record(..., record_path)?"
    return json.loads(record_path.read_text()), elapsed


def assert_metric(value, what: str) -> None:
    assert isinstance(value, float) and math.isfinite(value), f"{what} = {value!r} is not a finite float"
    assert 0.0 <= value <= 1.0, f"{what} = {value} is outside [0, 1]"


def assert_verdict(test: dict) -> None:
    """A recorded paired test's verdict agrees with its Holm p and its interval's side (stats.verdict)."""
    if test["verdict"] == "better":
        assert test["p_holm"] < 0.05 and test["ci_low"] > 0
    elif test["verdict"] == "worse":
        assert test["p_holm"] < 0.05 and test["ci_high"] < 0
    else:
        assert test["p_holm"] >= 0.05 or test["ci_low"] <= 0 <= test["ci_high"]


def numbers(value, where="record"):
    """Every number in a record, with where it is (record() already refuses NaN/inf on writing)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{where}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value



def smoke(chapter: str, tmp_path: Path, parameters: dict) -> dict:
    """Run a chapter with smoke parameters; check every recorded number is finite; return the record."""
    # no bound on its wall time: on a shared box that fails by the clock (make test's total is measured)
    rec, _ = run_chapter(chapter, tmp_path, parameters)
    found = list(numbers(rec))
    assert found, f"{chapter} recorded no numbers"
    assert all(math.isfinite(v) for _, v in found), [w for w, v in found if not math.isfinite(v)]
    return rec
