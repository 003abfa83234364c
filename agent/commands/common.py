"""Options shared by several commands, and the one place that maps errors to exit codes."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.errors import ExitCode, V4CodeError
from agent.output import err_console, print_json


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    jsonl = "jsonl"


class ProviderName(StrEnum):
    deepseek = "deepseek"
    openai = "openai"
    local = "local"


RepoOpt = Annotated[
    Path,
    typer.Option(
        "--repo", help="Repository root (default: current directory).", show_default=False
    ),
]
BudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        min=1,
        help="Context budget in tokens (default: the model's context minus a reserve).",
        show_default=False,
    ),
]
OutputFormatOpt = Annotated[
    OutputFormat,
    typer.Option("--output-format", help="text (human), json (one object), jsonl (events)."),
]
ProviderOpt = Annotated[
    ProviderName | None,
    typer.Option(
        "--provider", help="deepseek | openai | local (default: auto-select).", show_default=False
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model id.", show_default=False)]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible base URL.", show_default=False)
]
ModelPathOpt = Annotated[
    Path | None,
    typer.Option(
        "--model-path", help="Local checkpoint directory (provider local).", show_default=False
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")]


def resolve_repo(repo: Path | None) -> Path:
    """The repository root as an absolute path; a usage error (exit 2) if it is not a directory."""
    from agent.errors import UsageError

    path = Path(repo if repo is not None else ".").expanduser()
    if not path.exists():
        raise UsageError(f"repository path does not exist: {path}")
    if not path.is_dir():
        raise UsageError(f"repository path is not a directory: {path}")
    return path.resolve()


def run_cli(command: str, output_format: Callable[[], Any] | None = None):
    """Decorator for command bodies: maps exceptions to the contract's exit codes.

    * V4CodeError -> its exit code; message on stderr; with --output-format json|jsonl also a
      JSON object `{"command", "status", "error", ...}` on stdout.
    * KeyboardInterrupt -> 130.
    * anything else -> 1 with the message (traceback with --verbose).
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            fmt = kwargs.get("output_format")
            fmt_value = getattr(fmt, "value", fmt) or "text"
            verbose = bool(kwargs.get("verbose", False))
            try:
                return fn(*args, **kwargs)
            except typer.Exit:
                raise
            except V4CodeError as exc:
                _report(command, fmt_value, exc.status, str(exc), started)
                raise typer.Exit(int(exc.exit_code)) from None
            except KeyboardInterrupt:
                _report(command, fmt_value, "interrupted", "interrupted", started)
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
            except Exception as exc:  # noqa: BLE001 - the last line of defence
                if verbose:
                    err_console().print_exception()
                _report(
                    command,
                    fmt_value,
                    "error",
                    f"internal error: {type(exc).__name__}: {exc}",
                    started,
                )
                raise typer.Exit(int(ExitCode.INTERNAL)) from None

        return wrapper

    return deco


def _report(command: str, fmt: str, status: str, message: str, started: float) -> None:
    from rich.markup import escape

    err_console().print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if fmt in ("json", "jsonl"):
        obj: dict[str, Any] = {"command": command, "status": status}
        # ask/fix errors before the run started still carry every key of the contract's result
        # object, so a CI script can read the same fields whatever happened.
        if command == "ask":
            obj["answer"] = None
        elif command == "fix":
            obj.update(
                patch=None, changed_files=[], tests_before=None, tests_after=None, iterations=0
            )
        if command in ("ask", "fix"):
            obj.update(
                usage={
                    "input_tokens": 0,
                    "cached_input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                },
                context=None,
                provider=None,
                model=None,
                turns=0,
            )
        obj.update(elapsed_s=round(time.monotonic() - started, 3), error=message)
        if fmt == "jsonl":  # the last line of a jsonl stream is always the result event
            obj = {"event": "result", **obj}
        print_json(obj)
    sys.stderr.flush()
