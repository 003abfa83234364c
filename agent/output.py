"""Output streams: human output (Rich) on stderr, machine output (JSON) on stdout.

Colours and live views only when stderr is a terminal and NO_COLOR is unset.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich costs ~20 ms to import: only commands that print for humans pay it
    from rich.console import Console


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def no_color() -> bool:
    return "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb"


def err_console() -> Console:
    """Console for human output on stderr (plain when not a terminal or NO_COLOR is set)."""
    from rich.console import Console

    tty = stderr_is_tty()
    return Console(
        file=sys.stderr,
        no_color=no_color() or not tty,
        force_terminal=None if tty else False,
        highlight=False,
        soft_wrap=not tty,
    )


def print_json(obj: Any) -> None:
    """One JSON document on stdout, newline-terminated."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
