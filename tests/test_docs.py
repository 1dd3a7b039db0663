"""The documentation: a strict site build, a landing-page README, and no talk of how edgeleuk was made.

The site must fail to build on a broken link or anchor, or a page left out of nav.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150

# Phrases that describe the development of edgeleuk rather than edgeleuk: who asked for what, in which
# round of work. Kept tight, so that technical words pass: an ONNX Runtime InferenceSession,
# training/session.py, a watch session, Ray tasks, a test helper, a known issue of a library.
DEV_TALK = re.compile(
    r"|".join([
        r"\bthis project'?s sessions?\b",
        r"\bsessions of this project\b",
        r"\bsessions so far\b",
        r"\bearlier sessions ran\b",
        r"\bthe issue\b",
        r"\bissue's\b",
        r"\bissue[ -]?#?\d+",
        r"\b(the|this) (task|brief) (asks|says|wants|requires)\b",
        r"\b(trainer|lead|docs) helper\b",
        r"\bhelper (session|agent)s?\b",
    ]),
    re.IGNORECASE,
)


def _needs_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")


@pytest.fixture()
def docs_copy(tmp_path: Path) -> Path:
    """A copy of docs/ and mkdocs.yml, which a test may damage."""
    _needs_mkdocs()
    root = tmp_path / "src"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    return root


def _build(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(root / "site")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer contains {old!r}: pick another edit"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_unmodified_copy_builds(docs_copy: Path) -> None:
    done = _build(docs_copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (docs_copy / "site" / "index.html").is_file()
    assert (docs_copy / "site" / "architecture.html").is_file()


def test_a_broken_page_link_fails_the_build(docs_copy: Path) -> None:
    _edit(docs_copy / "docs" / "index.md", "(data.md)", "(no-such-page.md)")
    done = _build(docs_copy)
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


def test_a_broken_anchor_fails_the_build(docs_copy: Path) -> None:
    _edit(docs_copy / "docs" / "export.md", "(model-file.md#metadata)", "(model-file.md#no-such-section)")
    done = _build(docs_copy)
    assert done.returncode != 0
    assert "no-such-section" in done.stdout + done.stderr


def test_a_page_missing_from_nav_fails_the_build(docs_copy: Path) -> None:
    _edit(docs_copy / "mkdocs.yml", "      - Staged TTA: staged-tta.md\n", "")
    done = _build(docs_copy)
    assert done.returncode != 0
    assert "staged-tta.md" in done.stdout + done.stderr


def test_readme_is_a_landing_page() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_point_at_files_that_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "README.md links into the docs"
    missing = [t for t in targets if not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_architecture_md_is_the_architecture_page() -> None:
    root, page = REPO / "ARCHITECTURE.md", REPO / "docs" / "architecture.md"
    assert root.is_file() and page.is_file() and not page.is_symlink()
    assert root.read_text(encoding="utf-8") == page.read_text(encoding="utf-8")


def development_talk(paths: list[Path]) -> list[str]:
    """``path:line: text`` for each line of the text files in ``paths`` that DEV_TALK matches."""
    found = []
    for path in paths:
        if not path.is_file():  # deleted in the work tree, or a link to a folder (train/, export/)
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: images, models
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if DEV_TALK.search(line):
                shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                found.append(f"{shown}:{number}: {line.strip()}")
    return found


def _repository_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    me = Path(__file__).resolve()
    return [REPO / os.fsdecode(name) for name in listed.split(b"\0") if name and (REPO / os.fsdecode(name)) != me]


def test_no_file_speaks_of_how_the_project_was_developed() -> None:
    found = development_talk(_repository_files())
    assert not found, "say what edgeleuk does, not how it was developed:\n" + "\n".join(found)


def test_the_scan_catches_development_talk_in_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", copy)
    assert development_talk([copy]) == []
    with copy.open("a", encoding="utf-8") as fh:
        fh.write("\nThe watcher resumes, as the issue asks.\n")
    assert len(development_talk([copy])) == 1


def test_the_scan_lets_technical_words_pass(tmp_path: Path) -> None:
    text = tmp_path / "technical.py"
    text.write_text(
        "# ONNX Runtime InferenceSession and SessionOptions; edgeleuk/training/session.py\n"
        "# Images classified in this session; rows from earlier sessions of watch\n"
        "# one Ray task per seed; test helpers; helper.make_node; a known issue of OpenVINO 2026.4\n",
        encoding="utf-8",
    )
    assert development_talk([text]) == []
