"""The book's table of contents and its chapter tests stay in step."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [Path(c["file"]).name for part in toc.get("parts", []) for c in part.get("chapters", [])]


def test_every_chapter_has_a_smoke_test() -> None:
    missing = [c for c in toc_chapters() if not (ROOT / "tests" / f"test_chapter_{c}.py").exists()]
    assert not missing, f"chapters without tests/test_chapter_<name>.py: {missing}"


def test_every_chapter_file_exists_and_carries_no_outputs() -> None:
    for chapter in toc_chapters():
        text = (ROOT / "book" / f"{chapter}.md").read_text()
        assert "kernelspec" in text and "name: python3" in text, chapter
