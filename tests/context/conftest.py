"""Fixtures for the context-engine tests: real git repositories built from real code."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from tests.conftest import git, write_files

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(*packages: str) -> list[Path]:
    """The .py files of some standard-library packages (real code every machine has)."""
    out: list[Path] = []
    for package in packages:
        base = STDLIB / package
        if base.is_dir():
            out.extend(sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts))
        elif base.with_suffix(".py").is_file():
            out.append(base.with_suffix(".py"))
    return out


def stdlib_sources() -> Iterator[tuple[Path, str]]:
    """(path, text) of every .py file of the standard library that reads as UTF-8, its test
    suite included, site-packages not."""
    for path in sorted(STDLIB.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        yield path, text


@pytest.fixture
def stdlib_repo(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a git repository holding copies of stdlib packages, one commit per package
    (older packages first), so history order and prefix stability can be checked."""

    def factory(packages: Iterable[str], name: str = "stdrepo", commit: bool = True) -> Path:
        root = tmp_path / name
        root.mkdir()
        git(root, "init", "-q")
        for i, package in enumerate(packages):
            for src in stdlib_files(package):
                rel = src.relative_to(STDLIB)
                dst = root / "src" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            if commit:
                git(root, "add", "-A")
                git(root, "commit", "-q", "-m", f"add {package}", when=1_600_000_000 + i * 86_400)
        return root

    return factory


@pytest.fixture
def write_tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write {relative path: str | bytes} under a new directory (optionally a git repo)."""

    def factory(
        files: dict[str, str | bytes],
        *,
        name: str = "tree",
        git_init: bool = False,
        commit: bool = False,
    ) -> Path:
        root = tmp_path / name
        root.mkdir()
        if git_init:
            git(root, "init", "-q")
        write_files(root, files)
        if git_init and commit:
            git(root, "add", "-A")
            git(root, "commit", "-q", "-m", "initial", when=1_600_000_000)
        return root

    return factory
