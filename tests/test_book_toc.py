"""The book's table of contents and its chapter tests stay in step."""

from __future__ import annotations

from pathlib import Path

from chapter_runner import toc_chapters

ROOT = Path(__file__).resolve().parents[1]


def test_every_chapter_has_a_smoke_test() -> None:
    missing = [c for c in toc_chapters() if not (ROOT / "tests" / f"test_chapter_{c}.py").exists()]
    assert not missing, f"chapters without tests/test_chapter_<name>.py: {missing}"


def test_the_book_has_its_chapters() -> None:
    assert {"background", "core_concepts", "derivation"} <= set(toc_chapters())
