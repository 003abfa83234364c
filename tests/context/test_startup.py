"""Start-up cost of `v4code context`: a warm run loads only what it uses. Module sets, not
timings, so the checks hold on a loaded machine (the timings are in bench/results/context.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from agent import cli

PROBE = """
import json, sys
from agent.cli import main
sys.argv = ["v4code", "context", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""

# Heavy or unrelated modules a warm `context --output-format json` must not import.
NOT_ON_A_WARM_RUN = (
    "rich",  # human output only
    "tree_sitter",  # ranking and skeletons: cached
    "tiktoken",  # counting: cached
    "tokenizers",
    "git",  # gitpython: see docs/context.md
    "pydantic",
    "tomllib",  # only when a config file exists
    "agent.context.secrets",  # scan results: cached
    "agent.context.skeleton",
    "agent.context.rank",
    "agent.commands.agent_cmds",  # other commands
    "agent.commands.doctor_cmd",
    "model.cli",
    "torch",
)


def _run(*args: str) -> tuple[int, set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), proc.stdout


def test_a_warm_json_run_imports_nothing_it_does_not_use(stdlib_repo):
    root = stdlib_repo(["json"])
    args = ("--repo", str(root), "--output-format", "json")
    code, cold, _ = _run(*args)
    assert code in (0, None)
    assert {"tiktoken", "agent.context.secrets"} <= cold  # the cold run did the work
    code, warm, stdout = _run(*args)
    assert code in (0, None) and json.loads(stdout)["stats"]["plan"] == "hit"
    loaded = {m for m in NOT_ON_A_WARM_RUN if m in warm or any(x.startswith(m + ".") for x in warm)}
    assert loaded == set()


def test_the_command_table_matches_what_the_modules_register():
    command = typer.main.get_command(cli.build_app())
    assert set(command.commands) == set(cli.COMMANDS)  # type: ignore[attr-defined]
    for name, module in cli.COMMANDS.items():
        only = typer.main.get_command(cli.build_app([module]))
        assert name in only.commands  # type: ignore[attr-defined]
    assert cli.command_modules(["--version"]) == cli._COMMAND_MODULES
    assert cli.command_modules(["context", "--repo", "x"]) == ("agent.commands.context_cmd",)
    assert cli.command_modules(["nonsense"]) == cli._COMMAND_MODULES
