"""The error path shared by every command: exit codes and the JSON error object."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import CONTRACT_KEYS, v4code


def test_fix_config_error_json_has_every_contract_key(tmp_path: Path) -> None:
    proc = v4code("fix", "--repo", str(tmp_path), "--output-format", "json", cwd=tmp_path)
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert CONTRACT_KEYS | {
        "patch",
        "changed_files",
        "tests_before",
        "tests_after",
        "iterations",
    } <= set(result)
    assert result["status"] == "config_error" and "DEEPSEEK_API_KEY" in result["error"]
    assert result["usage"]["cost_usd"] == 0.0


def test_ask_jsonl_error_line_is_a_result_event(tmp_path: Path) -> None:
    proc = v4code(
        "ask", "why?", "--repo", str(tmp_path / "missing"), "--output-format", "jsonl", cwd=tmp_path
    )
    assert proc.returncode == 2
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["event"] == "result" and last["command"] == "ask" and last["answer"] is None
    assert CONTRACT_KEYS <= set(last)


def test_error_text_with_markup_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    weird = tmp_path / "[bold]x[/]"
    proc = v4code("context", "--repo", str(weird), cwd=tmp_path)
    assert proc.returncode == 2
    assert "[bold]x[/]" in proc.stderr


def test_version_and_help_exit_zero(tmp_path: Path) -> None:
    assert v4code("--version", cwd=tmp_path).stdout.startswith("v4code ")
    help_text = v4code("--help", cwd=tmp_path).stdout
    for command in ("context", "ask", "fix", "undo", "doctor", "model"):
        assert command in help_text
