"""`v4code ask`, `v4code fix`, `v4code undo`: parse options, call the library, render the result."""

from __future__ import annotations

import os
import select
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.commands.common import (
    BaseUrlOpt,
    BudgetOpt,
    ModelOpt,
    ModelPathOpt,
    OutputFormat,
    OutputFormatOpt,
    ProviderOpt,
    RepoOpt,
    VerboseOpt,
    resolve_repo,
    run_cli,
)
from agent.output import err_console, print_json, stdin_is_tty
from agent.undo import deferred_interrupt

STDIN_WAIT_S = 3.0  # an open but silent stdin (some CI runners) must not hang the run

MaxTurnsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-turns",
        min=1,
        help="Stop after this many model turns (default: ask 20, fix 40).",
        show_default=False,
    ),
]
MaxCostOpt = Annotated[
    float,
    typer.Option(
        "--max-cost", min=0.0, help="Stop before the run would spend more than this (USD)."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=1.0, help="Stop the run after this many seconds (wall clock)."),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Approve commands that would otherwise ask.")
]


def register(app: typer.Typer) -> None:
    app.command("ask", help="Answer a question about the repository (read-only).")(ask_cmd)
    app.command("fix", help="Run the tests; if they fail, fix the code until they pass.")(fix_cmd)
    app.command("undo", help="Restore the files the last `fix` changed to their state before it.")(
        undo_cmd
    )


@run_cli("ask")
def ask_cmd(
    question: Annotated[
        str, typer.Argument(help="The question. Piped stdin text is added to it.")
    ] = "",
    repo: RepoOpt = Path("."),
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    model_path: ModelPathOpt = None,
    budget: BudgetOpt = None,
    output_format: OutputFormatOpt = OutputFormat.text,
    max_turns: MaxTurnsOpt = None,
    max_cost: MaxCostOpt = 1.0,
    timeout: TimeoutOpt = 900.0,
    yes: YesOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from agent.ask import DEFAULT_ASK_TURNS, run_ask
    from agent.loop import Limits

    root = resolve_repo(repo)
    stdin_text = read_stdin()
    limits = Limits(max_turns=max_turns or DEFAULT_ASK_TURNS, max_cost=max_cost, timeout_s=timeout)
    setup, view = _setup(root, "ask", locals(), limits.max_turns)
    with view or nullcontext():
        result = run_ask(setup, question, stdin_text=stdin_text, limits=limits)
    with deferred_interrupt(reraise=False):  # the run is over: print its whole result
        data = _emit(result, output_format)
        if output_format is OutputFormat.text:
            if data.get("answer"):  # redacted: a key the model repeats never reaches stdout
                sys.stdout.write(data["answer"].rstrip("\n") + "\n")
            invalid = data.get("invalid_citations") or []
            if invalid:
                err_console().print(
                    f"warning: citations that do not match the repository: {', '.join(invalid)}",
                    markup=False,
                )
        _exit(result, data, output_format)


@run_cli("fix")
def fix_cmd(
    repo: RepoOpt = Path("."),
    provider: ProviderOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    model_path: ModelPathOpt = None,
    budget: BudgetOpt = None,
    output_format: OutputFormatOpt = OutputFormat.text,
    test_cmd: Annotated[
        str | None,
        typer.Option(
            "--test-cmd", help="Test command (auto-detected when absent).", show_default=False
        ),
    ] = None,
    max_iterations: Annotated[
        int, typer.Option("--max-iterations", min=1, help="Edit-and-test rounds before giving up.")
    ] = 10,
    max_turns: MaxTurnsOpt = None,
    max_cost: MaxCostOpt = 2.0,
    timeout: TimeoutOpt = 1800.0,
    patch: Annotated[
        Path | None,
        typer.Option(
            "--patch", help="Write the fix as a unified diff to this file.", show_default=False
        ),
    ] = None,
    commit: Annotated[
        bool, typer.Option("--commit", help="Commit the fix (only its files) when tests pass.")
    ] = False,
    yes: YesOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    from agent.fix import DEFAULT_FIX_TURNS, run_fix
    from agent.loop import Limits

    root = resolve_repo(repo)
    instructions = read_stdin() or ""
    limits = Limits(max_turns=max_turns or DEFAULT_FIX_TURNS, max_cost=max_cost, timeout_s=timeout)
    setup, view = _setup(root, "fix", locals(), limits.max_turns)
    setup.test_command = test_cmd
    with view or nullcontext():
        result = run_fix(
            setup,
            limits=limits,
            max_iterations=max_iterations,
            patch_path=patch,
            commit=commit,
            instructions=instructions,
        )
    with deferred_interrupt(reraise=False):  # the run is over: print its whole result
        data = _emit(result, output_format)
        if output_format is OutputFormat.text:
            sys.stdout.write(fix_summary(data))
        _exit(result, data, output_format)


@run_cli("undo")
def undo_cmd(
    repo: RepoOpt = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Restore even files that changed since the fix.")
    ] = False,
    output_format: OutputFormatOpt = OutputFormat.text,
    verbose: VerboseOpt = False,
) -> None:
    from agent.undo import undo_last

    root = resolve_repo(repo)
    result = undo_last(root, force=force)
    data = result.to_json()
    if output_format is OutputFormat.text:
        # The fix may have run in another directory of the repository: show paths from here.
        def shown(rel: str) -> str:
            return os.path.relpath(Path(result.root) / rel, root) if result.root else rel

        for path in result.restored:
            sys.stdout.write(f"restored {shown(path)}\n")
        for path in result.deleted:
            sys.stdout.write(f"deleted  {shown(path)} (the fix created it)\n")
        if not result.restored and not result.deleted:
            sys.stdout.write(
                "nothing to restore: the files are already as they were before the fix\n"
            )
    elif output_format is OutputFormat.jsonl:
        print_json({"event": "result", **data})
    else:
        print_json(data)


# --- helpers -------------------------------------------------------------------------------


def read_stdin(wait_s: float = STDIN_WAIT_S) -> str | None:
    """Piped standard input, or None on a terminal, an empty pipe, or a pipe that stays silent."""
    if stdin_is_tty() or sys.stdin is None:
        return None
    try:
        ready, _, _ = select.select([sys.stdin], [], [], wait_s)
    except (
        OSError,
        ValueError,
    ):  # not selectable (e.g. closed, or a platform without select on it)
        ready = [sys.stdin]
    if not ready:
        err_console().print(
            f"note: standard input stayed silent for {wait_s:g}s; ignoring it", markup=False
        )
        return None
    try:
        data = (
            sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        )
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return text if text.strip() else None


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # a CI job cancelled with SIGTERM cleans up like Ctrl-C (exit 130)


def _setup(root: Path, command: str, options: dict[str, Any], max_turns: int):
    from agent.loop import RunSetup
    from agent.transcript import jsonl_listener
    from agent.ui import LiveView, can_confirm, make_view

    signal.signal(signal.SIGTERM, _terminated)
    fmt = options["output_format"]
    view = make_view(command, verbose=options["verbose"], max_turns=max_turns)
    listeners = [jsonl_listener()] if fmt is OutputFormat.jsonl else []
    if view is not None:
        listeners.append(view)
    live = view if isinstance(view, LiveView) else None
    setup = RunSetup(
        root=root,
        flags={k: options[k] for k in ("provider", "model", "base_url", "model_path")},
        budget=options["budget"],
        listeners=listeners,
        stream_to=live,
        yes=options["yes"],
        confirm=live.confirm if live is not None and can_confirm() else None,
    )
    return setup, live


def _emit(result: Any, fmt: OutputFormat) -> dict[str, Any]:
    from agent.transcript import redact

    data = redact(result.to_json(), getattr(result, "secrets", ()))
    if fmt is OutputFormat.json:
        print_json(data)
    return data  # jsonl: the transcript's listener already wrote the result event


def _exit(result: Any, data: dict[str, Any], fmt: OutputFormat) -> None:
    if result.exit_code != 0:
        if data.get("error"):
            from rich.markup import escape

            # Escaped: provider and test messages contain brackets ("[Errno 2]", "[/path]").
            err_console().print(
                f"[bold red]{escape(data['status'])}:[/] {escape(data['error'])}",
                markup=True,
                highlight=False,
            )
        raise typer.Exit(result.exit_code)


def fix_summary(data: dict[str, Any]) -> str:
    """The text-mode report of a fix: outcome, tests, files, where the patch went, how to undo."""
    lines = []
    before, after = data.get("tests_before") or {}, data.get("tests_after") or {}
    if data.get("already_passing"):
        lines.append(f"Tests already pass ({before.get('summary', '')}); nothing to fix.")
    elif data["status"] == "ok":
        lines.append(
            f"Fixed: tests pass after {data['iterations']} iteration(s): {after.get('summary', '')}"
        )
    else:
        lines.append(f"Not fixed ({data['status']}): {data.get('error') or ''}".rstrip())
        if after:
            lines.append(f"Tests: {after.get('summary', '')}")
    for row in data.get("diffstat") or []:
        counts = "(binary)" if row.get("binary") else f"+{row['added']} -{row['removed']}"
        lines.append(f"  {row['kind']:<8} {row['path']}  {counts}")
    if data.get("patch_file"):
        lines.append(f"Patch written to {data['patch_file']}")
    if data.get("commit"):
        lines.append(f"Committed as {data['commit'][:12]}")
    if data.get("changed_files"):
        lines.append("Undo with: v4code undo")
    usage = data.get("usage") or {}
    lines.append(f"Turns: {data.get('turns', 0)} · cost ${usage.get('cost_usd', 0):.4f}")
    return "\n".join(lines) + "\n"
