"""Fixtures for the tool tests: real repositories in temp dirs and the tools bound to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tools import build_tools, dispatch
from tools.base import Observation, ToolContext


class Toolbox:
    """The fix tool set on one repository, called the way the agent loop calls it."""

    def __init__(self, root: Path, **ctx: Any):
        self.root = root
        self.ctx = ToolContext(root=root.resolve(), **ctx)
        self.tools = build_tools("fix", self.ctx)

    def __call__(
        self, name: str, args: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> Observation:
        return dispatch(self.tools, name, args if args is not None else kwargs)


@pytest.fixture
def toolbox() -> Callable[..., Toolbox]:
    return Toolbox


@pytest.fixture
def repo(make_git_repo) -> Path:
    return make_git_repo(
        {
            "src/app.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
            "src/util/strings.py": "def shout(s):\n    return s.upper()\n",
            "README.md": "# demo\n",
            ".gitignore": "build/\n*.log\n",
        }
    )


@pytest.fixture(scope="module")
def policy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-shaped directory, enough for classifying commands (no git command runs)."""
    path = tmp_path_factory.mktemp("policy") / "repo"
    (path / ".git").mkdir(parents=True)
    (path / "src").mkdir()
    return path
