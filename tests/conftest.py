"""Shared fixtures. Every test runs with its own XDG directories and no provider keys, so the
suite never reads or writes the developer's real configuration, cache or transcripts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

_PROVIDER_ENV = (
    "DEEPSEEK_API_KEY",
    "DEEPSEEK_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("xdg")
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
    ):
        (home / sub).mkdir()
        monkeypatch.setenv(var, str(home / sub))
    for var in _PROVIDER_ENV:
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("V4CODE_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    # git must not pick up the developer's global config (signing, hooks, templates).
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (home / "gitconfig").write_text(
        "[user]\n\tname = v4code tests\n\temail = tests@v4code.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
    )
    return home


def git(repo: Path, *args: str, env: dict[str, str] | None = None, when: int | None = None) -> str:
    """Run git in `repo` and return stdout (raises on failure). `when` (a Unix time) dates the
    commit it makes, so history order is testable."""
    if when is not None:
        stamp = f"{when} +0000"
        base = os.environ if env is None else env
        env = dict(base, GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env
    ).stdout


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    """Write {relative path: text (UTF-8) or bytes} under `root`, making directories."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


@pytest.fixture
def make_git_repo(tmp_path: Path):
    """Factory: make_git_repo({"a.py": "...", ...}, commit=True) -> a real git repository."""

    def factory(files: dict[str, str | bytes], *, commit: bool = True, name: str = "repo") -> Path:
        root = tmp_path / name
        root.mkdir()
        git(root, "init", "-q")
        write_files(root, files)
        if commit and files:
            git(root, "add", "-A")
            git(root, "commit", "-q", "-m", "initial")
        return root

    return factory
