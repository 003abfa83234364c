"""The real `v4code` CLI in a subprocess, as a user or a CI job runs it: `v4code(...)` waits and
captures everything, `start_v4code(...)` returns the running process for tests that watch its
output or signal it. The environment is the test's (already isolated by the autouse fixture:
XDG dirs, no keys) plus, with a ScriptedServer, the variables that point the CLI at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every ask/fix result object carries these keys, whatever happened (the CLI contract).
CONTRACT_KEYS = frozenset(
    {"command", "status", "usage", "context", "provider", "model", "turns", "elapsed_s", "error"}
)


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
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if server is not None:
        env.update(server.env())
    env.update(extra)
    return env


def v4code(
    *args: str,
    cwd: Path | None = None,
    server: Any | None = None,
    stdin: str | None = None,
    timeout: float = 120,
    **env: str,
) -> CliRun:
    """Run the CLI to completion (stdin closed unless given); `env` adds variables."""
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


def start_v4code(
    *args: str,
    cwd: Path,
    server: Any | None = None,
    stdin: Any = subprocess.DEVNULL,
    **popen: Any,
) -> subprocess.Popen[str]:
    """Start the CLI with stdout and stderr piped (text); `popen` adds Popen arguments."""
    return subprocess.Popen(
        [*cli_command(), *args],
        cwd=cwd,
        env=cli_env(server),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
