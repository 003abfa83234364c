"""Fixtures for the context-engine tests: real git repositories built from real code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def git(repo: Path, *args: str, when: int | None = None) -> str:
    env = dict(os.environ)
    if when is not None:  # fixed dates make history order testable
        stamp = f"{when} +0000"
        env.update(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env
    ).stdout


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
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        if git_init and commit:
            git(root, "add", "-A")
            git(root, "commit", "-q", "-m", "initial", when=1_600_000_000)
        return root

    return factory
