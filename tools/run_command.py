"""run_command: a shell command in the repository, under the approval policy.

read-only commands run; commands that may change something run with --yes or after an
interactive yes; without either they are refused at once (never a hang waiting for input);
destructive ones are refused always. See tools/shell_policy.py for the rules.
"""

from __future__ import annotations

from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.process import child_env, run_process
from tools.shell_policy import FORBIDDEN, NEEDS_APPROVAL, classify

MAX_COMMAND_CHARS = 10_000


class RunCommand(Tool):
    name = "run_command"
    read_only = False
    description = (
        "Run a shell command (bash) in the repository root, without input, with a timeout; "
        "stdout and stderr come back together, long output shortened to its head and tail. "
        "Read-only commands (ls, cat, grep, git status/log/diff, …) run directly; commands "
        "that change things need the user's approval; destructive ones (git push, git reset "
        "--hard, rm -rf outside the repository, …) are always refused. Prefer the file tools "
        "for reading and editing, and run_tests for the tests."
    )
    parameters = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command line to run."},
            "timeout_s": {
                "type": "number",
                "minimum": 1,
                "description": "Seconds before the command is killed (capped by the run's limit).",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        command = args["command"].strip()
        if not command:
            raise ToolError("command is empty")
        if len(command) > MAX_COMMAND_CHARS:
            raise ToolError(
                f"command is too long ({len(command):,} characters); write a script file instead"
            )
        verdict = classify(command, self.ctx.root)
        if verdict.level == FORBIDDEN:
            raise ToolError(
                f"refused: `{command}` is destructive ({verdict.reason}). It is never run, not "
                "even with --yes; find another way that keeps the user's work safe",
                policy=FORBIDDEN,
                refused=True,
            )
        approval = "read_only"
        if verdict.level == NEEDS_APPROVAL:
            approval = self._approve(command, verdict.reason)
        timeout = min(
            float(args.get("timeout_s") or self.ctx.command_timeout_s), self.ctx.command_timeout_s
        )
        env, removed = child_env()
        result = run_process(command, self.ctx.root, timeout_s=timeout, env=env)
        output = result.output.rstrip("\n") or "(no output)"
        if result.timed_out:
            status = (
                f"timed out after {timeout:g}s; the command and its child processes were killed"
            )
        else:
            status = f"exit code {result.exit_code}; {result.duration_s:.1f}s"
        if result.truncated:
            status += f"; output shortened, {result.elided_bytes:,} bytes elided"
        return Observation(
            f"$ {command}\n{output}\n[{status}]",
            ok=result.exit_code == 0,
            data={
                "command": command,
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
                "duration_s": round(result.duration_s, 3),
                "approval": approval,
                "output_bytes": result.total_bytes,
                "truncated": result.truncated,
                "env_removed": removed,
            },
        )

    def _approve(self, command: str, reason: str) -> str:
        if self.ctx.yes:
            return "yes"
        if self.ctx.confirm is not None:
            if self.ctx.confirm(f"Run `{command}`? ({reason})"):
                return "confirmed"
            raise ToolError(
                f"the user declined to run `{command}`; do not retry it, choose another approach",
                policy=NEEDS_APPROVAL,
                refused=True,
            )
        raise ToolError(
            f"not run: `{command}` needs the user's approval ({reason}), and this run has "
            "neither --yes nor a terminal to ask. Use read-only commands, the file tools and "
            "run_tests instead (the user can allow such commands with --yes)",
            policy=NEEDS_APPROVAL,
            refused=True,
        )
