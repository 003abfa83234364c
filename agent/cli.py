"""The `v4code` command line. Thin: every command lives in its own module and calls a library."""

from __future__ import annotations

import importlib

import typer

from agent import __version__

app = typer.Typer(
    name="v4code",
    help="A coding agent built around a 1M-token context: pack a whole repository into one "
    "prompt, ask questions about it, and fix failing tests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module exposes register(app). Imports must stay light (no torch at import time).
_COMMAND_MODULES = (
    "agent.commands.context_cmd",
    "agent.commands.agent_cmds",
    "agent.commands.doctor_cmd",
    "model.cli",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"v4code {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """v4code: a coding agent built around a 1M-token context."""


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a module not written yet; never hide real import bugs
        if _exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
