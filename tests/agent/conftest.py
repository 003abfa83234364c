"""Fixtures for the agent tests: real repositories built from the Python standard library, the
planted bug and its fix, and the flags that point the CLI at a ScriptedServer (the CLI runner
itself is tests/support/cli.py)."""

from __future__ import annotations

import shlex
import stat
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.support.scripted_server import call

STDLIB = Path(sysconfig.get_paths()["stdlib"])

# colorsys and its own unit tests, renamed so the copy never collides with the real module. The
# planted bug flips one sign in hls_to_rgb; the real test suite catches it.
BUG_LINE = "        m2 = l * (1.0+s)\n"
PLANTED = "        m2 = l * (1.0-s)\n"
FIXED = BUG_LINE  # what a fix puts back
FIX_CALL = call(
    "edit_file",
    {"path": "colorconv.py", "old_string": PLANTED.strip(), "new_string": FIXED.strip()},
)
READ = call("read_file", {"path": "README.md"})

OPENAI = ["--provider", "openai", "--model", "deepseek-v4-flash"]  # what a ScriptedServer serves
PY = shlex.quote(sys.executable)
UNITTEST = f"{PY} -m unittest test_colorconv"  # the colorconv tests; starts faster than pytest
TEST_CMD = ["--test-cmd", UNITTEST]


def stdlib_source(rel: str) -> str:
    path = STDLIB / rel
    if not path.is_file():
        pytest.skip(f"this Python has no {rel} (the stdlib test suite is not installed)")
    return path.read_text(encoding="utf-8")


def colorconv_sources() -> tuple[str, str]:
    """colorconv.py (the stdlib's colorsys, with the planted bug) and its real tests."""
    module = stdlib_source("colorsys.py")
    tests = stdlib_source("test/test_colorsys.py")
    assert module.count(BUG_LINE) == 1
    tests = tests.replace("import colorsys\n", "import colorconv as colorsys\n", 1)
    return module.replace(BUG_LINE, PLANTED), tests


@pytest.fixture
def colorconv_repo(make_git_repo) -> Path:
    """A git repo: colorconv.py (the stdlib's colorsys, with a planted bug) + its real tests."""
    module, tests = colorconv_sources()
    root = make_git_repo(
        {
            "colorconv.py": module,
            "test_colorconv.py": tests,
            "README.md": "# colorconv\n\nColour space conversions (a copy of the stdlib's colorsys).\n",
            "notes.txt": "user notes\n",
            ".gitignore": "__pycache__/\n.pytest_cache/\n",
        }
    )
    return root


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


def changed_lines(patch: str) -> list[str]:
    """The removed and added lines of a unified diff (without its ---/+++ headers)."""
    return [ln for ln in patch.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
