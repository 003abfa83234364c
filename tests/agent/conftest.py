"""Fixtures for the agent tests: real repositories built from the Python standard library, and a
runner for the real `v4code` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git

STDLIB = Path(sysconfig.get_paths()["stdlib"])

# colorsys and its own unit tests, renamed so the copy never collides with the real module. The
# planted bug flips one sign in hls_to_rgb; the real test suite catches it.
BUG_LINE = "        m2 = l * (1.0+s)\n"
PLANTED = "        m2 = l * (1.0-s)\n"


def stdlib_source(rel: str) -> str:
    path = STDLIB / rel
    if not path.is_file():
        pytest.skip(f"this Python has no {rel} (the stdlib test suite is not installed)")
    return path.read_text(encoding="utf-8")


@pytest.fixture
def colorconv_repo(make_git_repo) -> Path:
    """A git repo: colorconv.py (the stdlib's colorsys, with a planted bug) + its real tests."""
    module = stdlib_source("colorsys.py")
    tests = stdlib_source("test/test_colorsys.py")
    assert module.count(BUG_LINE) == 1
    tests = tests.replace("import colorsys\n", "import colorconv as colorsys\n", 1)
    root = make_git_repo(
        {
            "colorconv.py": module.replace(BUG_LINE, PLANTED),
            "test_colorconv.py": tests,
            "README.md": "# colorconv\n\nColour space conversions (a copy of the stdlib's colorsys).\n",
            "notes.txt": "user notes\n",
            ".gitignore": "__pycache__/\n.pytest_cache/\n",
        }
    )
    return root


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("v4code")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]


def cli_env(server: Any | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)  # already isolated by the autouse fixture (XDG dirs, no keys)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if server is not None:
        env.update(server.env())
    env.update(extra)
    return env


def v4code(
    *args: str,
    cwd: Path,
    server: Any | None = None,
    stdin: str | None = None,
    timeout: float = 120,
    **env: str,
) -> CliRun:
    """Run the real CLI against `server` (a ScriptedServer) and capture everything."""
    proc = subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        env=cli_env(server, **env),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def tree_state(root: Path) -> dict[str, bytes]:
    """Every file outside .git and caches, with its bytes (to prove nothing else changed)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (
            path.is_file()
            and not rel.startswith((".git/", ".pytest_cache/"))
            and "__pycache__" not in rel
        ):
            state[rel] = path.read_bytes()
    return state


def git_state(root: Path) -> dict[str, str]:
    """Everything git knows about the user's work: index (with blob ids), status, both diffs,
    stash, HEAD and branches."""
    return {
        " ".join(args): git(root, *args)
        for args in (
            ("ls-files", "-s"),
            ("status", "--porcelain=v1", "--untracked-files=all"),
            ("diff",),
            ("diff", "--cached"),
            ("stash", "list"),
            ("rev-parse", "HEAD"),
            ("for-each-ref", "refs/heads", "refs/tags"),
        )
    }


def modes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts and "__pycache__" not in p.parts
    }


def assert_append_only(requests: list[Any]) -> None:
    """Each request's messages extend the previous request's messages exactly (prefix caching)."""
    for earlier, later in zip(requests, requests[1:], strict=False):
        prev, cur = earlier.messages, later.messages
        assert cur[: len(prev)] == prev, "a request rewrote earlier messages"
        assert len(cur) >= len(prev)


def head_files(root: Path) -> str:
    return git(root, "show", "--name-only", "--format=", "HEAD")
