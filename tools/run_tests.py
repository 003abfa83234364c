"""run_tests: run the test suite (or part of it) and get a structured summary back."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.process import is_secret_var
from tools.shell_policy import FORBIDDEN, NEEDS_APPROVAL, classify, simple_command_words
from tools.testing import detect_test_command, run_test_command

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Test runners the model may call with its own arguments (a subset of the tests, -x, -k …).
# Running tests executes repository code anyway, which is what `fix` is for.
_RUNNERS = (
    ("pytest",),
    ("py.test",),
    ("python", "-m", "pytest"),
    ("python", "-m", "unittest"),
    ("go", "test"),
    ("cargo", "test"),
    ("npm", "test"),
    ("npm", "run", "test"),
    ("yarn", "test"),
    ("pnpm", "test"),
    ("npx", "jest"),
    ("npx", "vitest"),
    ("jest",),
    ("node", "--test"),
    ("make", "test"),
)


def is_test_invocation(command: str, configured: str | None, root: Path | None = None) -> bool:
    """True for one plain command that runs a test runner (or the configured test command).

    With `root`, a runner whose options name a path outside the repository (`--junitxml=~/x`,
    `--basetemp=..`) is not plain: it goes through the approval policy like any command."""
    words = simple_command_words(command)
    if words is None:
        return False
    while words and _ASSIGNMENT.match(words[0]) and not _secretish(words[0]):
        words = words[1:]
    if not words:
        return False
    if root is not None and (_reaches_outside(words[1:], root) or _deletes_basetemp(words)):
        return False
    if configured:
        base = simple_command_words(configured)
        if base and words[: len(base)] == base:
            return True
    program = words[0].rsplit("/", 1)[-1]
    if re.fullmatch(r"python(\d+(\.\d+)*)?", program):
        program = "python"
    normal = (program, *words[1:])
    return any(normal[: len(runner)] == runner for runner in _RUNNERS)


_TEMP_ROOTS = tuple(
    dict.fromkeys(os.path.realpath(p) for p in ("/tmp", "/var/tmp", tempfile.gettempdir()))
)


def _reaches_outside(words: list[str], root: Path) -> bool:
    """Whether an argument names a path outside the repository (temporary directories aside)."""
    real_root = os.path.realpath(root)
    for word in words:
        for piece in re.split(r"[=:,]", word):
            if not piece.startswith(("/", "~")) and ".." not in piece.split("/"):
                continue
            target = os.path.realpath(os.path.join(real_root, os.path.expanduser(piece)))
            inside = target == real_root or target.startswith(real_root + os.sep)
            in_temp = any(target.startswith(t + os.sep) for t in _TEMP_ROOTS)
            if not inside and not in_temp:
                return True
    return False


def _deletes_basetemp(words: list[str]) -> bool:
    # pytest removes --basetemp before the run; only the policy may allow that.
    return any(w == "--basetemp" or w.startswith("--basetemp=") for w in words)


def _secretish(assignment: str) -> bool:
    name, _, value = assignment.partition("=")
    return is_secret_var(name, value)


class RunTests(Tool):
    name = "run_tests"
    read_only = False
    description = (
        "Run the repository's tests and get a summary: passed/failed/errors/skipped counts, the "
        "failing test ids and traceback excerpts. Without command, runs the project's test "
        "command; pass command to run a subset (e.g. 'python -m pytest tests/test_x.py -x')."
    )
    parameters = {
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "description": "Test command to run instead of the default one.",
            },
        },
        "required": [],
        "additionalProperties": False,
    }

    _detected: str | None = None

    def configured_command(self) -> str | None:
        if self.ctx.test_command:
            return self.ctx.test_command
        if self._detected is None:
            self._detected = detect_test_command(self.ctx.root) or ""
        return self._detected or None

    def execute(self, args: dict[str, Any]) -> Observation:
        configured = self.configured_command()
        command = (args.get("command") or "").strip() or configured
        if not command:
            raise ToolError(
                "no test command was found for this repository; pass command= with the command "
                "that runs its tests"
            )
        if command != configured and not is_test_invocation(command, configured, self.ctx.root):
            self._check_policy(command)
        summary = run_test_command(self.ctx.root, command, timeout_s=self.ctx.command_timeout_s)
        return Observation(
            summary.render(),
            ok=summary.ok,
            data={"command": command, "summary": summary.to_json()},
        )

    def _check_policy(self, command: str) -> None:
        """A command that is not a plain test-runner call is a shell command like any other."""
        verdict = classify(command, self.ctx.root)
        if verdict.level == FORBIDDEN:
            raise ToolError(f"refused: `{command}` is destructive ({verdict.reason})", refused=True)
        if verdict.level == NEEDS_APPROVAL and not self.ctx.yes:
            if self.ctx.confirm is not None and self.ctx.confirm(
                f"Run `{command}` as the test command? ({verdict.reason})"
            ):
                return
            raise ToolError(
                f"not run: `{command}` is not a plain test-runner command and needs the user's "
                f"approval ({verdict.reason}); call run_tests without command, or with a test "
                "runner and its arguments (e.g. 'python -m pytest tests/test_x.py')",
                refused=True,
            )
