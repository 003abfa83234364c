"""Tool interface: a small class with a JSON schema and `run(args) -> Observation`.

Errors the model can act on (bad path, no match, malformed arguments, refused command) are
returned as an Observation with ok=False, never raised past `run`.
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
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def run(self, args: dict[str, Any]) -> Observation:  # pragma: no cover - abstract
        raise NotImplementedError
