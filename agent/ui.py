"""What a person watching sees, on stderr only: a Rich live view on a terminal, else quiet.

The view listens to the run's events (the same ones the transcript records) and to the model's
streamed text; it never writes to stdout, which belongs to the answer / JSON.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from agent.output import err_console, stderr_is_tty, stdin_is_tty


class LiveView:
    """Current step, recent tool calls, the test summary, tokens and cost — redrawn in place."""

    def __init__(self, command: str, *, max_turns: int | None = None):
        self.console = err_console()
        self.command, self.max_turns = command, max_turns
        self.step = "starting"
        self.turn = 0
        self.calls: deque[tuple[str, bool | None]] = deque(maxlen=6)
        self.tests = ""
        self.usage = ""
        self.tail = ""
        self.started = time.monotonic()
        self._live = Live(
            self._render(), console=self.console, refresh_per_second=8, transient=True
        )

    # -- lifecycle
    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    # -- the run's events
    def __call__(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "status":
            self.step = record["text"]
        elif event == "context":
            self.step = f"repository packed: {record['files']} files, {record['tokens']:,} tokens"
        elif event == "turn":
            self.turn = record["turn"]
            self.tail = ""
            self.step = "working"
        elif event == "tool_call":
            self.calls.append((_describe_call(record), None))
            self.step = f"running {record['name']}"
        elif event == "tool_result":
            if self.calls:
                self.calls[-1] = (self.calls[-1][0], bool(record.get("ok")))
            self.step = "waiting for the model"
        elif event == "test_run":
            self.tests = record.get("summary") or ""
            self.step = "waiting for the model"
        elif event == "usage":
            self.usage = (
                f"in {record['input_tokens']:,} (cached {record['cached_input_tokens']:,}) · "
                f"out {record['output_tokens']:,} · ${record['cost_usd']:.4f}"
            )
        elif event == "plan":
            self.console.print(Text("plan: ", style="bold") + Text(record["text"]))
        elif event == "edit":
            self.console.print(Text(f"edited {record['path']} ({record['kind']})", style="green"))
        self._live.update(self._render())

    # -- the model's streamed text (a provider StreamSink)
    def on_text(self, delta: str) -> None:
        self.tail = (self.tail + delta)[-400:]
        self._live.update(self._render())

    def on_reasoning(self, delta: str) -> None:
        self.step = "thinking"
        self._live.update(self._render())

    def on_retry(self, message: str) -> None:
        self.tail = ""
        self.step = f"retrying: {message}"
        self._live.update(self._render())

    def confirm(self, question: str) -> bool:
        """Ask on the terminal with the live view paused; anything but y/yes is no."""
        self._live.stop()
        try:
            self.console.print(Text(question + " [y/N] ", style="bold yellow"), end="")
            answer = sys.stdin.readline().strip().lower()
        finally:
            self._live.start()
        return answer in ("y", "yes")

    def _render(self) -> Group:
        turns = f"turn {self.turn}" + (f"/{self.max_turns}" if self.max_turns else "")
        elapsed = f"{time.monotonic() - self.started:.0f}s"
        lines = [Text(f"v4code {self.command} · {turns} · {elapsed} · {self.step}", style="bold")]
        for desc, ok in self.calls:
            mark, style = ("…", "dim") if ok is None else (("✓", "green") if ok else ("✗", "red"))
            lines.append(Text(f"  {mark} {desc}", style=style))
        if self.tests:
            lines.append(Text(f"  tests: {self.tests}"))
        if self.usage:
            lines.append(Text(f"  tokens: {self.usage}", style="dim"))
        if self.tail.strip():
            last = self.tail.strip().splitlines()[-1][-120:]
            lines.append(Text(f"  › {last}", style="dim italic"))
        return Group(*lines)


class PlainLog:
    """--verbose without a terminal: one plain line per event on stderr (CI logs)."""

    def __call__(self, record: dict[str, Any]) -> None:
        event, line = record.get("event"), None
        if event == "context":
            line = f"context: {record['files']} files, {record['tokens']:,} tokens (budget {record['budget']:,})"
        elif event == "tool_call":
            line = f"turn {record['turn']}: {_describe_call(record)}"
        elif event == "tool_result" and not record.get("ok"):
            line = f"  -> {str(record.get('text', '')).splitlines()[0][:200] if record.get('text') else 'failed'}"
        elif event == "test_run":
            line = f"tests ({record.get('phase')}): {record.get('summary', '')}"
        elif event == "edit":
            line = f"edited {record['path']} ({record['kind']})"
        elif event == "usage":
            line = f"usage: in {record['input_tokens']:,} out {record['output_tokens']:,} ${record['cost_usd']:.4f}"
        if line:
            print(line, file=sys.stderr, flush=True)


def _describe_call(record: dict[str, Any]) -> str:
    args = record.get("arguments")
    if isinstance(args, dict):
        key = next((k for k in ("path", "pattern", "command") if k in args), None)
        detail = str(args[key])[:80] if key else ""
    else:
        detail = "(malformed arguments)"
    return f"{record.get('name')} {detail}".strip()


def make_view(command: str, *, verbose: bool, max_turns: int | None) -> LiveView | PlainLog | None:
    """A live view on a terminal; plain lines with --verbose otherwise; else nothing."""
    if stderr_is_tty():
        return LiveView(command, max_turns=max_turns)
    return PlainLog() if verbose else None


def can_confirm() -> bool:
    return stdin_is_tty() and stderr_is_tty()
