"""Build the book's HTML from smoke-executed chapters (the "smoke site" that tests/test_site.py loads).

The real book executes every chapter with the book's parameters (up to 45 minutes); that is
``make book``. For the browser checks in ``make test`` the page *structure* matters, not the
numbers, so this module builds the same book from chapters executed with their SMOKE parameters:

* a temporary book folder gets _toc.yml unchanged, _config.yml with ``execute_notebooks: "off"``,
  and a copy of book/ in which every chapter's .md is replaced by an executed .ipynb;
* the executed notebooks come from ``_build/smoke/<chapter>.ipynb``, which
  ``chapter_runner.run_chapter`` writes for every chapter test that runs (so in one ``pytest`` session
  the chapter tests have usually produced them all); a notebook missing there, or kept from an
  older version of its chapter, is executed here with the SMOKE parameters of
  tests/test_chapter_<chapter>.py;
* ``jupyter-book build <tmp> -W --keep-going`` then builds it with warnings as errors.

By hand: ``.venv/bin/python tests/site_build.py [DEST]`` (default ``_build/smoke_site``) prints
the html folder it built.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from chapter_runner import BOOK, ROOT, SMOKE_DIR, is_notebook, run_chapter, source_digest

VENDORED = (BOOK / "_static" / "mermaid" / "VERSION", BOOK / "_static" / "mathjax" / "VERSION")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Sphinx colours its output
BUILD_TIMEOUT = 900  # seconds; the smoke site builds in about a minute on a 2-core machine


def toc_files() -> tuple[str, list[str]]:
    """(root, chapters) of _toc.yml as docnames such as 'book/intro' (chapters in reading order)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters: list[str] = []

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                chapters.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return toc["root"], chapters


def chapter_name(docname: str) -> str:
    path = Path(docname)
    if path.parent != Path("book"):
        raise AssertionError(f"_toc.yml: {docname} is not in book/; chapter_runner only runs book/<name>.md")
    return path.name


def ensure_vendored_js() -> None:
    """mermaid and MathJax must be in book/_static (git-ignored; scripts/vendor_mermaid.sh fetches them)."""
    if all(path.exists() for path in VENDORED):
        return
    result = subprocess.run(["bash", str(ROOT / "scripts" / "vendor_mermaid.sh")], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"scripts/vendor_mermaid.sh failed (it needs npm and the npm registry):\n{result.stderr[-3000:]}")


def smoke_parameters(name: str) -> dict:
    """SMOKE of tests/test_chapter_<name>.py.

    A chapter without that file (test_book_toc.py fails for it) runs with its own parameters: a
    placeholder has none, and a chapter being written is run as the book would run it.
    """
    if not (ROOT / "tests" / f"test_chapter_{name}.py").exists():
        return {}
    module = importlib.import_module(f"test_chapter_{name}")
    return dict(module.SMOKE)


def kept_notebook(name: str) -> Path | None:
    """_build/smoke/<name>.ipynb if it was executed from the current book/<name>.md."""
    path = SMOKE_DIR / f"{name}.ipynb"
    try:
        meta = json.loads(path.read_text())["metadata"]["crossrec_smoke"]
    except (OSError, ValueError, KeyError):
        return None
    return path if meta.get("source_sha256") == source_digest(name) else None


def smoke_notebook(name: str, workdir: Path) -> tuple[Path, bool]:
    """An executed notebook of book/<name>.md; True if it had to be executed now."""
    kept = kept_notebook(name)
    if kept is not None:
        return kept, False
    rundir = workdir / f"run_{name}"
    rundir.mkdir(parents=True, exist_ok=True)
    run_chapter(name, rundir, smoke_parameters(name))  # also keeps it in _build/smoke/ for next time
    return rundir / f"{name}.out.ipynb", True


def jupyter_book_command() -> list[str]:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise AssertionError("jupyter-book not found next to this Python or on PATH (pip install -r requirements.txt)")
    return [found]


def build_site(dest: Path) -> tuple[Path, dict]:
    """Build the smoke site in ``dest`` (emptied first); return (html folder, timings and what ran)."""
    timings: dict = {"executed": []}
    start = time.perf_counter()
    ensure_vendored_js()
    root, chapters = toc_files()
    names = [n for n in (chapter_name(c) for c in chapters) if is_notebook(n)]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    notebooks = {}
    for name in names:
        notebooks[name], ran = smoke_notebook(name, dest.parent / f"{dest.name}_runs")
        if ran:
            timings["executed"].append(name)
    timings["notebooks_s"] = time.perf_counter() - start

    chapter_sources = {f"{name}.md" for name in names}
    shutil.copytree(
        BOOK,
        dest / "book",
        ignore=lambda folder, entries: [
            e for e in entries
            if (Path(folder) == BOOK and e in chapter_sources)
            or e in {"__pycache__", ".ipynb_checkpoints", "_build", ".jupyter_cache"}
        ],
    )  # fmt: skip
    for name, notebook in notebooks.items():
        shutil.copyfile(notebook, dest / "book" / f"{name}.ipynb")
    assert (dest / f"{root}.md").exists() or (dest / f"{root}.ipynb").exists(), f"root page {root} not copied"

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    shutil.copyfile(ROOT / "_toc.yml", dest / "_toc.yml")

    build_start = time.perf_counter()
    result = subprocess.run(
        [*jupyter_book_command(), "build", str(dest), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        cwd=dest,
    )
    timings["jupyter_book_s"] = time.perf_counter() - build_start
    if result.returncode != 0:
        output = ANSI.sub("", result.stdout + result.stderr)
        problems = [line for line in output.splitlines() if "WARNING:" in line or "ERROR:" in line]
        raise AssertionError(
            f"jupyter-book build of the smoke site failed (warnings are errors), {len(problems)} problems:\n"
            + "\n".join(problems[:60]) + "\n--- end of the output ---\n" + output[-2500:]
        )
    html = dest / "_build" / "html"
    assert (html / "index.html").exists(), f"{html} has no index.html"
    timings["total_s"] = time.perf_counter() - start
    return html, timings


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / "_build" / "smoke_site"
    html_dir, info = build_site(target)
    print(html_dir)
    print(json.dumps(info), file=sys.stderr)
