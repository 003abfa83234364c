"""Running git for the agent's repository operations (snapshots, undo, patches, commits).

Built on gitpython's command layer (`git.Git.execute`): one place that runs git with a fixed
identity, no terminal prompts and byte-exact output. The context engine's discovery deliberately
runs `git ls-files` as a plain subprocess instead: importing gitpython costs ~70-100 ms, a third
of the warm-pack budget of `v4code context` (measured, see docs/context.md), while here it is
noise next to a model call.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

# gitpython checks for a git executable at import; v4code reports a missing git itself.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import git  # noqa: E402  (gitpython)

IDENTITY = {
    "GIT_AUTHOR_NAME": "v4code",
    "GIT_AUTHOR_EMAIL": "v4code@localhost",
    "GIT_COMMITTER_NAME": "v4code",
    "GIT_COMMITTER_EMAIL": "v4code@localhost",
}


@dataclass
class GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="surrogateescape")

    def error_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace").strip()


def run_git(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    input: bytes | str | None = None,
    identity: bool = False,
) -> GitResult:
    """Run `git ARGS` in `cwd`; never raises for a non-zero exit (see GitResult.returncode).

    `env` adds to the inherited environment; `identity` sets v4code as author and committer;
    `input` is fed to git's stdin. Output is returned byte for byte (no newline stripping).
    """
    extra = {"GIT_TERMINAL_PROMPT": "0", **(IDENTITY if identity else {}), **(env or {})}
    stdin = None
    try:
        if input is not None:
            stdin = tempfile.TemporaryFile()
            stdin.write(input.encode() if isinstance(input, str) else input)
            stdin.seek(0)
        status, out, err = git.Git(str(cwd)).execute(
            ["git", *args],
            istream=stdin,
            env=extra,
            with_extended_output=True,
            with_exceptions=False,
            stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
    except git.GitCommandNotFound:
        return GitResult(127, b"", b"git: command not found")
    finally:
        if stdin is not None:
            stdin.close()
    err_bytes = err if isinstance(err, bytes) else str(err).encode()
    return GitResult(status or 0, out or b"", err_bytes)
