"""`v4code ask`: answer a question about the repository with read-only tools, citing path:line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prompts
from agent.errors import UsageError
from agent.loop import Agent, Limits, Recoverable, Run, RunResult, RunSetup, Stop, nudge
from agent.providers.base import Reply
from agent.undo import deferred_interrupt

DEFAULT_ASK_TURNS = 20


@dataclass
class AskResult(RunResult):
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = self.common_json("ask")
        invalid = [c["citation"] for c in self.citations if not c["valid"]]
        data.update(answer=self.answer or None, citations=self.citations, invalid_citations=invalid)
        return data


class AskAgent(Agent):
    def __init__(self, *args: Any, question: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.question = question
        self.answer = ""

    def after_turn(self, reply: Reply, changed: list[str]) -> None:
        if reply.tool_calls:
            # Long-context recall is weakest in the middle: keep the question near the end.
            raise Recoverable(
                nudge(
                    "reminder_ask",
                    turn=self.turns,
                    max_turns=self.limits.max_turns,
                    question=_one_line(self.question),
                )
            )
        if reply.finish_reason == "length":
            self.idle(nudge("nudge_truncated"))
        if not reply.text.strip():
            self.idle(
                nudge("nudge_empty", what="Answer the question, citing `path:line`, or use a tool.")
            )
        self.answer = reply.text.strip()
        raise Stop("done")


def run_ask(
    setup: RunSetup, question: str, *, stdin_text: str | None = None, limits: Limits | None = None
) -> AskResult:
    """Answer `question` about `setup.root`. Never writes a file in the repository."""
    limits = limits or Limits(max_turns=DEFAULT_ASK_TURNS)
    if not question.strip() and not (stdin_text or "").strip():
        raise UsageError("empty question: pass a question, or pipe text to standard input")
    question = question.strip() or "Review the text below."
    task = prompts.render(
        "task_ask",
        question=question,
        stdin=prompts.render("stdin", text=stdin_text.rstrip("\n")) if stdin_text else "",
    )
    run = Run(setup, "ask", tool_kind="ask")
    result = AskResult()
    try:
        run.pack_prompt(prompts.load("system_ask"), task)
        agent = run.make_agent(AskAgent, limits, question=question)
        stop = run.drive(agent)
        result.answer = agent.answer
        if stop.kind == "done":
            result.citations = check_citations(run.root, agent.answer)
    except KeyboardInterrupt:
        stop = Stop("interrupted", "interrupted (Ctrl-C)")
    except BaseException as exc:
        run.fail(exc)
        raise
    with deferred_interrupt(reraise=False):  # the run is over: its result stands
        run.finish(result, stop)
    return result


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# path:line or path:start-end; a path has a directory part or a file extension.
_CITATION = re.compile(
    r"(?<![\w/.\-])((?:[\w.\-]+/)+[\w.\-]+|[\w\-][\w.\-]*\.[A-Za-z][A-Za-z0-9_]*):(\d+)(?:\s?[-–]\s?(\d+))?"
)


def check_citations(root: Path, answer: str) -> list[dict[str, Any]]:
    """Every `path:line` in the answer, checked against the repository as it is now."""
    root = root.resolve()
    seen: dict[str, dict[str, Any]] = {}
    line_counts: dict[str, int | None] = {}
    for match in _CITATION.finditer(answer):
        path, start = match.group(1).removeprefix("./"), int(match.group(2))
        end = int(match.group(3)) if match.group(3) else None
        citation = f"{path}:{start}" + (f"-{end}" if end else "")
        if citation in seen:
            continue
        if path not in line_counts:
            line_counts[path] = _line_count(root, path)
        n = line_counts[path]
        if n is None:
            valid, reason = False, "no such file in the repository"
        elif start < 1 or start > n or (end is not None and (end < start or end > n)):
            valid, reason = False, f"line out of range (the file has {n} lines)"
        else:
            valid, reason = True, None
        seen[citation] = {
            "citation": citation,
            "path": path,
            "line": start,
            "end_line": end,
            "valid": valid,
            "reason": reason,
        }
    return list(seen.values())


def _line_count(root: Path, rel: str) -> int | None:
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
