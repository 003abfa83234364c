"""Tool sets, schemas, and dispatch: the model's malformed calls become observations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.providers.base import ToolCall
from tools import build_tools, dispatch, tool_schemas
from tools.base import ToolContext

CONTRACT = {
    "read_file": ({"path"}, {"start_line", "end_line"}),
    "list_files": (set(), {"path", "pattern"}),
    "search": ({"pattern"}, {"path", "glob", "regex"}),
    "edit_file": ({"path", "old_string", "new_string"}, {"replace_all"}),
    "write_file": ({"path", "content"}, set()),
    "run_tests": (set(), {"command"}),
    "run_command": ({"command"}, {"timeout_s"}),
}


def test_tool_sets_follow_the_contract(repo: Path):
    ctx = ToolContext(root=repo)
    assert [t.name for t in build_tools("ask", ctx)] == ["read_file", "list_files", "search"]
    fix = build_tools("fix", ctx)
    assert [t.name for t in fix] == list(CONTRACT)
    for schema in tool_schemas(fix):
        assert schema["type"] == "function"
        function = schema["function"]
        required, optional = CONTRACT[function["name"]]
        params = function["parameters"]
        assert set(params["required"]) == required
        assert set(params["properties"]) == required | optional
        assert function["description"]
        json.dumps(schema)  # serialisable as sent to the provider
    with pytest.raises(ValueError):
        build_tools("everything", ctx)  # type: ignore[arg-type]


def test_ask_tools_are_read_only(repo: Path):
    assert all(t.read_only for t in build_tools("ask", ToolContext(root=repo)))


@pytest.fixture
def fix_tools(repo: Path):
    return build_tools("fix", ToolContext(root=repo))


def test_unknown_tool(fix_tools, repo: Path):
    obs = dispatch(fix_tools, "delete_everything", {})
    assert not obs.ok and "unknown tool 'delete_everything'" in obs.text
    assert "read_file, list_files, search, edit_file" in obs.text
    ask = build_tools("ask", ToolContext(root=repo))
    obs = dispatch(ask, "edit_file", {"path": "a", "old_string": "x", "new_string": "y"})
    assert not obs.ok and "not available in this mode" in obs.text


def test_malformed_json_from_the_provider(fix_tools):
    call = ToolCall.parse("c1", "read_file", '{"path": "src/app.py"')
    assert call.arguments is None
    obs = dispatch(fix_tools, call.name, call.parse_error)
    assert not obs.ok and "not valid JSON" in obs.text and "path, start_line, end_line" in obs.text
    call = ToolCall.parse("c2", "read_file", '["src/app.py"]')
    assert "JSON object" in dispatch(fix_tools, call.name, call.parse_error).text


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("read_file", {}, "missing required argument 'path'"),
        ("edit_file", {"path": "a"}, "missing required arguments 'old_string', 'new_string'"),
        ("read_file", {"path": ["a"]}, "argument 'path' must be a string, got list"),
        (
            "read_file",
            {"path": "a", "start_line": "ten"},
            "argument 'start_line' must be an integer",
        ),
        ("read_file", {"path": "a", "start_line": 0}, "'start_line' must be at least 1"),
        ("read_file", {"path": "a", "start_line": 1.5}, "must be an integer"),
        ("search", {"pattern": "x", "regex": "maybe"}, "argument 'regex' must be true or false"),
        (
            "read_file",
            {"filename": "a"},
            "unknown argument 'filename'; the arguments are: path, start_line?",
        ),
        ("run_command", {"command": True}, "argument 'command' must be a string, got bool"),
    ],
)
def test_schema_violations_become_observations(fix_tools, name, args, expected):
    obs = dispatch(fix_tools, name, args)
    assert not obs.ok
    assert expected in obs.text


def test_unambiguous_near_misses_are_accepted(fix_tools):
    obs = dispatch(
        fix_tools, "read_file", {"path": "src/app.py", "start_line": "2", "end_line": 3.0}
    )
    assert obs.ok and obs.data["start_line"] == 2 and obs.data["end_line"] == 3
    obs = dispatch(fix_tools, "search", {"pattern": "def", "regex": "false", "path": None})
    assert obs.ok and obs.data["matched_lines"] == 3


def test_a_tool_never_raises_for_bad_input(fix_tools):
    """Fuzz every tool with wrong shapes: always an Observation, never an exception."""
    weird = [None, 0, -1, "", "\x00", [], {}, "../../../../etc/passwd", "a" * 5000, 1e308]
    for tool in fix_tools:
        for key in list(tool.parameters["properties"]) + ["bogus"]:
            for value in weird:
                obs = dispatch(fix_tools, tool.name, {key: value})
                assert isinstance(obs.text, str) and obs.text
