"""Every run is recorded: one JSON event per line, to a transcript file and to any live listener.

The same events drive the transcript in the XDG state directory, `--output-format jsonl` on
stdout and the live view on stderr, so what the user saw can be replayed after the fact.

Event names (the contract): start, context, turn, tool_call, tool_result, edit, test_run, usage,
result; plus plan and error. Every event has "event", "t" (seconds since start) and "run_id".
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from agent.paths import state_dir
from agent.undo import deferred_interrupt

Listener = Callable[[dict[str, Any]], None]

# Environment variables whose values must never reach a transcript or stdout, whatever the
# provider does with them. Anything named like a credential counts.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter values would redact ordinary words
KEEP_TRANSCRIPTS = 200
STREAM_STRING_CAP = 20_000  # long strings (the packed repository) are elided on stdout only


def transcripts_dir() -> Path:
    return state_dir() / "transcripts"


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Credential-looking environment values (and `extra`), longest first, for redaction."""
    values = {
        v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN
    }
    values.update(v for v in extra if v and len(v) >= _MIN_SECRET_LEN)
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, extra: Iterable[str] = ()) -> Any:
    """`obj` with every credential-looking environment value (and `extra`) replaced by ***."""
    return _redact(obj, secret_values(extra))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _redact(obj: Any, secrets_: list[str]) -> Any:
    if isinstance(obj, str):
        for value in secrets_:
            if value in obj:
                obj = obj.replace(value, "***")
        # Bytes that are not UTF-8 (a Latin-1 file's diff) arrive as lone surrogates, which no
        # UTF-8 output can hold: show them as U+FFFD. The --patch file keeps the exact bytes.
        if not obj.isascii() and _SURROGATE.search(obj):
            obj = _SURROGATE.sub("\ufffd", obj)
        return obj
    if isinstance(obj, dict):
        return {k: _redact(v, secrets_) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets_) for v in obj]
    return obj


def _elide(obj: Any, cap: int) -> Any:
    if isinstance(obj, str) and len(obj) > cap:
        return (
            obj[: cap // 2]
            + f"\n[... {len(obj) - cap} characters elided; see the transcript ...]\n"
            + obj[-cap // 2 :]
        )
    if isinstance(obj, dict):
        return {k: _elide(v, cap) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_elide(v, cap) for v in obj]
    return obj


class Transcript:
    """Writes events to `path` (JSONL, flushed per event) and forwards them to listeners."""

    def __init__(
        self,
        command: str,
        *,
        run_id: str | None = None,
        directory: Path | None = None,
        secrets_: Iterable[str] = (),
    ):
        self.command = command
        self.run_id = run_id or new_run_id()
        self.started = time.monotonic()
        self._secrets = secret_values(secrets_)
        self._listeners: list[Listener] = []
        directory = directory or transcripts_dir()
        self.path: Path | None = directory / f"{self.run_id}-{command}.jsonl"
        self._file: TextIO | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            _prune(directory, KEEP_TRANSCRIPTS)
        except OSError as exc:
            # A read-only state directory must not stop the run; say so once.
            print(
                f"warning: cannot write the transcript ({exc}); continuing without it",
                file=sys.stderr,
            )
            self.path = None

    @property
    def secrets(self) -> list[str]:
        """The values this transcript redacts (credential-looking environment values, the key)."""
        return list(self._secrets)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        record = {
            "event": event,
            "t": round(time.monotonic() - self.started, 3),
            "run_id": self.run_id,
        }
        record.update(data)
        record = _redact(record, self._secrets)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        # A Ctrl-C must not tear a line in half (the transcript and stdout stay valid JSONL).
        with deferred_interrupt():
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
            for listener in self._listeners:
                listener(record)
        return record

    def status(self, text: str) -> None:
        """A transient note for live views ("running tests"); not recorded, not on stdout."""
        for listener in self._listeners:
            listener({"event": "status", "text": text, "_transient": True})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def jsonl_listener(stream: TextIO | None = None, cap: int = STREAM_STRING_CAP) -> Listener:
    """`--output-format jsonl`: the same events on stdout, one per line, long strings elided."""

    def listen(record: dict[str, Any]) -> None:
        if record.get("_transient"):
            return
        out = stream or sys.stdout
        # The result is the same object as with --output-format json: never shortened.
        shown = record if record.get("event") == "result" else _elide(record, cap)
        out.write(json.dumps(shown, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
        out.flush()

    return listen


def read_transcript(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _prune(directory: Path, keep: int) -> None:
    files = sorted(directory.glob("*.jsonl"))
    for old in files[: max(0, len(files) - keep)]:
        try:
            old.unlink()
        except OSError:
            pass
