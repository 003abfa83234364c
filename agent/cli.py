"""The `v4code` command line. Thin: every command lives in its own module and calls a library.

Start-up time is part of every command's latency (a warm `v4code context` is ~0.15 s, of which
Python and typer take half), so `main()` imports only the module of the command being run;
`--help`, no arguments or an unknown command import them all. `agent.cli.app` is the fully
registered application (built on first access), for code that wants every command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer

from agent import __version__

# Command name -> the module whose register(app) adds it. Imports must stay light (no torch at
# import time). A module missing here still works (an unknown name registers every module);
# tests/context/test_cli_startup.py checks that this table matches what the modules register.
COMMANDS: dict[str, str] = {
    "context": "agent.commands.context_cmd",
    "ask": "agent.commands.agent_cmds",
    "fix": "agent.commands.agent_cmds",
    "undo": "agent.commands.agent_cmds",
    "doctor": "agent.commands.doctor_cmd",
    "model": "model.cli",
}
_COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"v4code {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """v4code: a coding agent built around a 1M-token context."""


def build_app(modules: Iterable[str] = _COMMAND_MODULES) -> typer.Typer:
    """A Typer application with the commands of `modules` registered."""
    application = typer.Typer(
        name="v4code",
        help="A coding agent built around a 1M-token context: pack a whole repository into one "
        "prompt, ask questions about it, and fix failing tests.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    # A callback keeps the application a command group even with a single command registered.
    application.callback()(_root)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module not written yet; never hide real import bugs
            if exc.name != name:
                raise
            continue
        module.register(application)
    return application


def command_modules(args: Sequence[str]) -> tuple[str, ...]:
    """The modules needed to run `v4code ARGS`: the command's own module when the first
    argument that is not an option names a known command, otherwise all of them."""
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("-"):
            module = COMMANDS.get(arg)
            return (module,) if module is not None else _COMMAND_MODULES
    return _COMMAND_MODULES


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    build_app(command_modules(args))(args=args, prog_name="v4code")


def __getattr__(name: str) -> Any:
    if name == "app":
        application = build_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
