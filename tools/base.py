"""Tool interface: a small class with a JSON schema and `run(args) -> Observation`.

Errors the model can act on (bad path, no match, malformed arguments, refused command) are
returned as an Observation with ok=False, never raised past `run`. Inside a tool they are raised
as `ToolError` from `execute`, which `run` turns into that observation, so the happy path reads
top to bottom without error plumbing.

Mutating tools put what they changed into `Observation.data`:
    data["path"]          the changed file, relative posix path (edit_file, write_file)
    data["changed_paths"] every changed path (all mutating tools; may be empty)
    data["diff"]          unified diff of the change (edit_file, write_file)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class Observation:
    text: str  # what the model sees
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)  # structured detail for the loop/transcript


@dataclass
class ToolContext:
    root: Path  # repository root (absolute, resolved)
    yes: bool = False  # --yes: approve actions that would otherwise ask
    confirm: Callable[[str], bool] | None = None  # interactive confirmation; None = no terminal
    command_timeout_s: float = 300.0
    test_command: str | None = None  # --test-cmd


class ToolError(Exception):
    """A problem the model can fix by calling the tool differently (becomes ok=False)."""

    def __init__(self, message: str, **data: Any):
        super().__init__(message)
        self.message = message
        self.data = data


class Tool:
    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]
    read_only: ClassVar[bool] = True

    def __init__(self, ctx: ToolContext):
        self.ctx = ctx

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def run(self, args: dict[str, Any]) -> Observation:
        from tools.schema import validate_args

        try:
            return self.execute(validate_args(self.parameters, args))
        except ToolError as exc:
            return Observation(
                f"Error: {exc.message}", ok=False, data={"error": exc.message, **exc.data}
            )
        except OSError as exc:
            # The file system said no (name too long, permission denied, …): the model can
            # still choose another path.
            message = str(exc.strerror or exc)
            if exc.filename:
                message += f" ({str(exc.filename)[-120:]})"
            return Observation(f"Error: {message}", ok=False, data={"error": message})

    def execute(self, args: dict[str, Any]) -> Observation:  # pragma: no cover - abstract
        raise NotImplementedError
