"""The code a cached trial depends on: its model's, data's and callbacks' imports and the runner's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crossrec_lit import code_version as cv

MF = ["crossrec_lit.models.BPRMF", "crossrec_lit.data.InteractionDataModule", "crossrec_lit.data.AmazonP5"]
SEQ = ["crossrec_lit.models.SASRec", "crossrec_lit.data.InteractionDataModule", "crossrec_lit.data.AmazonP5"]


@pytest.fixture()
def package(tmp_path, monkeypatch) -> Path:
    """A copy of the package that the test may edit."""
    root = tmp_path / "crossrec_lit"
    shutil.copytree(cv.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "ROOT", root)
    return root


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n_EDITED = 1\n")


@pytest.mark.parametrize(
    "edited, mf_changes, seq_changes",
    [
        ("models/sequential.py", False, True),  # SASRec's module: BPR-MF trials keep their cache
        ("models/text.py", False, False),  # imported by neither
        ("models/mf.py", True, False),
        ("models/base.py", True, True),  # both models derive from it
        ("data/split.py", True, True),  # the DataModule splits for both
        ("experiment.py", True, True),  # the runner trains every trial
        ("reporting.py", False, False),  # formatting only
        ("models/__init__.py", False, False),  # re-exports: followed to the defining modules
    ],
)
def test_an_edit_retrains_the_trials_that_import_it(package, edited, mf_changes, seq_changes):
    before = cv.code_version(MF), cv.code_version(SEQ)
    edit(package / edited)
    after = cv.code_version(MF), cv.code_version(SEQ)
    assert (before[0] != after[0], before[1] != after[1]) == (mf_changes, seq_changes)


def test_comments_docstrings_and_layout_keep_the_cache_code_does_not(package):
    before = cv.code_version(MF)
    mf = package / "models" / "mf.py"
    source = mf.read_text()
    reworded = source.replace('"""', '"""Reworded. ', 1)  # the module's docstring
    mf.write_text("# a new comment\n" + reworded.replace("\n\n\n", "\n\n\n\n") + "\n# trailing comment\n")
    assert cv.code_version(MF) == before
    mf.write_text(source.replace("import torch", "import torch\n_CHANGED = 2", 1))
    assert cv.code_version(MF) != before


def test_imports_are_followed_through_reexports_and_function_bodies(package):
    # crossrec_lit.models re-exports SASRec from models/sequential.py
    assert cv._defining("crossrec_lit.models", "SASRec") == "crossrec_lit.models.sequential"
    # a module imported only inside a function counts: text.py imports the encoders in a method
    assert any(m.startswith("crossrec_lit.features") for m in cv.imports("crossrec_lit.models.text"))
    # a new import of another module makes that module part of the trial's code
    mf = package / "models" / "mf.py"
    mf.write_text(mf.read_text() + "\n\ndef _uses_text():\n    from crossrec_lit.models.text import TextTwoTower  # noqa: F401\n")
    before = cv.code_version(MF)
    edit(package / "models" / "text.py")
    assert cv.code_version(MF) != before


def test_classes_outside_the_package_add_nothing():
    assert cv.code_version(["my_project.models.Mine"]) == cv.code_version([])
