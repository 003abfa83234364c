"""The seven tools the model is given, and the one entry point the agent loop calls.

    tools = build_tools("fix", ToolContext(root=repo))     # "ask": read_file, list_files, search
    schemas = tool_schemas(tools)                          # OpenAI function-calling schemas
    observation = dispatch(tools, name, arguments)         # never raises for the model's mistakes

`dispatch` takes the parsed arguments (a dict) or, when the provider could not parse them, the
parse error (a str); unknown tools, malformed JSON, missing or mistyped arguments all come back
as an Observation with ok=False that tells the model what to send instead.

Test helpers for `v4code fix`: detect_test_command(root), run_test_command(root, command,
timeout_s) -> TestSummary.
"""

from __future__ import annotations

from typing import Any, Literal

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.edit_file import EditFile
from tools.list_files import ListFiles
from tools.read_file import ReadFile
from tools.run_command import RunCommand
from tools.run_tests import RunTests
from tools.search import Search
from tools.testing import TestSummary, detect_test_command, run_test_command
from tools.write_file import WriteFile

READ_ONLY_TOOLS: tuple[type[Tool], ...] = (ReadFile, ListFiles, Search)
ALL_TOOLS: tuple[type[Tool], ...] = (*READ_ONLY_TOOLS, EditFile, WriteFile, RunTests, RunCommand)

__all__ = [
    "ALL_TOOLS",
    "READ_ONLY_TOOLS",
    "Observation",
    "TestSummary",
    "Tool",
    "ToolContext",
    "ToolError",
    "build_tools",
    "detect_test_command",
    "dispatch",
    "run_test_command",
    "tool_schemas",
]


def build_tools(kind: Literal["ask", "fix"], ctx: ToolContext) -> list[Tool]:
    if kind == "ask":
        return [cls(ctx) for cls in READ_ONLY_TOOLS]
    if kind == "fix":
        return [cls(ctx) for cls in ALL_TOOLS]
    raise ValueError(f"unknown tool set {kind!r} (expected 'ask' or 'fix')")


def tool_schemas(tools: list[Tool]) -> list[dict[str, Any]]:
    return [tool.schema() for tool in tools]


def dispatch(
    tools: list[Tool], name: str, args_or_parse_error: dict[str, Any] | str | None
) -> Observation:
    """Run the tool called `name`; every mistake of the model becomes an observation."""
    by_name = {tool.name: tool for tool in tools}
    tool = by_name.get(name)
    if tool is None:
        known = ", ".join(by_name)
        hint = ""
        if name in {cls.name for cls in ALL_TOOLS}:
            hint = " (it is not available in this mode)"
        return _error(f"unknown tool {name!r}{hint}; the available tools are: {known}", tool=name)
    if isinstance(args_or_parse_error, str):
        fields = ", ".join(tool.parameters.get("properties", {}))
        return _error(
            f"the arguments of {name} could not be used: {args_or_parse_error}. "
            f"Call it again with the arguments: {fields}",
            tool=name,
        )
    return tool.run({} if args_or_parse_error is None else args_or_parse_error)


def _error(message: str, **data: Any) -> Observation:
    return Observation(f"Error: {message}", ok=False, data={"error": message, **data})
