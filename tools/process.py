"""Running a shell command for the model: bounded in time, output and reach.

* stdin is closed, pagers and credential prompts are disabled, so nothing waits for a human;
* the child runs in its own process group, and the whole group is killed on timeout, on Ctrl-C
  and when the command returns (background jobs it left behind would otherwise hold the pipe);
* output is read incrementally and only its head and tail are kept, so a command printing
  gigabytes costs a bounded amount of memory and context;
* environment variables that look like credentials are removed from the child, so a prompt
  injection that asks for `env` or `curl -d "$OPENAI_API_KEY"` gets nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Substrings of a variable name that mark it as a credential. AUTH must not catch GIT_AUTHOR_*.
_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|COOKIE|AUTH(?!OR)",
    re.IGNORECASE,
)
_NOT_SECRET = frozenset({"TOKENIZERS_PARALLELISM"})
# A URL with a password in it (DATABASE_URL=postgres://user:pw@host/db).
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)

_QUIET_ENV = {
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "MANPAGER": "cat",
    "SYSTEMD_PAGER": "",
    "GIT_TERMINAL_PROMPT": "0",  # never wait for credentials on stdin
    "GIT_EDITOR": "true",  # `git commit` without -m must not open an editor
    "EDITOR": "true",
    "VISUAL": "true",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1",
}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

DEFAULT_HEAD_BYTES = 4_000
DEFAULT_TAIL_BYTES = 8_000
_KILL_GRACE_S = 2.0


def is_secret_var(name: str, value: str) -> bool:
    if name.upper() in _NOT_SECRET:
        return False
    return bool(_SECRET_NAME.search(name)) or bool(_URL_WITH_PASSWORD.search(value))


def child_env(
    base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The environment for a model-initiated process and the names that were removed."""
    source = dict(os.environ if base is None else base)
    removed = sorted(name for name, value in source.items() if is_secret_var(name, value))
    env = {name: value for name, value in source.items() if name not in removed}
    env.update(_QUIET_ENV)
    if extra:
        env.update(extra)
    return env, removed


@dataclass
class ProcessResult:
    command: str
    exit_code: int | None  # None when killed by the timeout
    output: str  # stdout+stderr interleaved, ANSI stripped, head and tail kept
    timed_out: bool
    duration_s: float
    total_bytes: int  # size of the full output
    elided_bytes: int  # how much of it was cut from the middle
    elided_lines: int

    @property
    def truncated(self) -> bool:
        return self.elided_bytes > 0


class _Collector:
    """Keeps the first `head` and the last `tail` bytes of a stream, counting the rest."""

    def __init__(self, head: int, tail: int):
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.newlines = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.newlines += chunk.count(b"\n")
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def render(self) -> tuple[str, int, int]:
        """(text, elided bytes, elided lines), cutting at line boundaries where possible."""
        head, tail = bytes(self.head), bytes(self.tail[-self.tail_limit :] if self.tail else b"")
        elided = self.total - len(head) - len(tail)
        if elided <= 0:
            return _clean(head + tail), 0, 0
        cut = head.rfind(b"\n")
        if cut > len(head) // 2:
            elided += len(head) - cut - 1
            head = head[: cut + 1]
        cut = tail.find(b"\n")
        if 0 <= cut < len(tail) // 2:
            elided += cut + 1
            tail = tail[cut + 1 :]
        lines = max(0, self.newlines - head.count(b"\n") - tail.count(b"\n"))
        marker = f"\n[... {elided} bytes, {lines} lines elided ...]\n"
        return _clean(head) + marker + _clean(tail), elided, lines


def _clean(data: bytes) -> str:
    text = _ANSI.sub("", data.decode("utf-8", errors="replace"))
    if "\r" not in text:
        return text
    # Progress bars redraw a line with \r; keep only what the line finally showed.
    text = text.replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def shell_argv(command: str) -> list[str]:
    shell = shutil.which("bash") or "/bin/sh"
    return [shell, "-c", command]


def run_process(
    command: str,
    cwd: Path,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    head_bytes: int = DEFAULT_HEAD_BYTES,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
) -> ProcessResult:
    """Run `command` through the shell in `cwd`; never raises for the command's own failure."""
    started = time.monotonic()
    proc = subprocess.Popen(
        shell_argv(command),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # own process group: one killpg reaches every descendant
    )
    collector = _Collector(head_bytes, tail_bytes)
    reader = threading.Thread(target=_pump, args=(proc.stdout, collector), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        # Background jobs left behind would keep the pipe open and outlive the agent.
        _kill_group(proc, signal.SIGKILL)
        reader.join(timeout=_KILL_GRACE_S)
    text, elided, elided_lines = collector.render()
    return ProcessResult(
        command=command,
        exit_code=None if timed_out else proc.returncode,
        output=text,
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        total_bytes=collector.total,
        elided_bytes=elided,
        elided_lines=elided_lines,
    )


def _pump(stream, collector: _Collector) -> None:
    fd = stream.fileno()
    try:
        while chunk := os.read(fd, 65536):
            collector.feed(chunk)
    except OSError:
        pass
    finally:
        stream.close()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
