"""Parse a DeepSeek-V4 completion: reasoning, answer text and DSML tool calls.

The model writes (thinking mode; chat mode has no reasoning part):

    reasoning</think>answer text

    <｜DSML｜tool_calls>
    <｜DSML｜invoke name="read_file">
    <｜DSML｜parameter name="path" string="true">src/app.py</｜DSML｜parameter>
    <｜DSML｜parameter name="start_line" string="false">10</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜tool_calls><｜end▁of▁sentence｜>

string="true" values are raw text, string="false" values are JSON. Parsing is strict about the
markup (the reference parser insists on the ">\\n" separators), but a malformed call never
raises: it becomes a ToolCall with `parse_error`, phrased so the model can correct itself, and
problems outside calls (text after the block, a missing end) are reported in `problems`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.providers.base import ToolCall
from agent.providers.v4_format import DSML, END_THINK, EOS

BLOCK_OPEN = f"<{DSML}tool_calls>"
BLOCK_CLOSE = f"</{DSML}tool_calls>"
INVOKE_OPEN = f"<{DSML}invoke"
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAM_OPEN = f"<{DSML}parameter"
PARAM_CLOSE = f"</{DSML}parameter>"

_INVOKE_HEAD = re.compile(r' name="([^"\n]*)">\n')
_PARAM_HEAD = re.compile(r' name="([^"\n]*)" string="(true|false)">')

FORMAT_HINT = (
    f'Write each call as {INVOKE_OPEN} name="TOOL">, then one line per argument '
    f'{PARAM_OPEN} name="ARG" string="true">text{PARAM_CLOSE} (string="false" for JSON '
    f"numbers, booleans, arrays, objects), then {INVOKE_CLOSE}."
)


@dataclass
class Completion:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # format problems outside the calls
    ended: bool = False  # the model emitted the end-of-sentence token


def parse_completion(
    text: str, *, thinking: bool, new_id: Callable[[], str] | None = None
) -> Completion:
    """Split a completion (decoded with special tokens as text) into its parts."""
    ids = new_id or _counter()
    out = Completion()
    end = text.find(EOS)
    if end >= 0:
        out.ended = True
        if text[end + len(EOS) :].strip():
            out.problems.append("text after the end-of-sentence token was ignored")
        text = text[:end]
    block = text.find(BLOCK_OPEN)
    if thinking:
        close = text.find(END_THINK)
        if close >= 0 and (block < 0 or close < block):
            out.reasoning, text = text[:close], text[close + len(END_THINK) :]
            block = text.find(BLOCK_OPEN)
        elif block >= 0:
            # The model started calling tools without closing its reasoning: keep the calls.
            out.reasoning, text = text[:block].removesuffix("\n\n"), text[block:]
            block = 0
            out.problems.append(f"reasoning was not closed with {END_THINK} before the tool calls")
        else:
            out.reasoning, text = text, ""
            if out.ended:
                out.problems.append(f"reasoning was not closed with {END_THINK}")
    if block < 0:
        out.content = text
        return out
    out.content = text[:block].removesuffix("\n\n")
    out.tool_calls, problems = parse_tool_calls(text[block + len(BLOCK_OPEN) :], ids)
    out.problems += problems
    return out


def parse_tool_calls(body: str, new_id: Callable[[], str]) -> tuple[list[ToolCall], list[str]]:
    """Parse what follows `<｜DSML｜tool_calls>`; returns the calls and block-level problems.

    Every tag is followed by exactly one newline, as the reference encoder writes it."""
    calls: list[ToolCall] = []
    problems: list[str] = []
    pos = 0
    while True:
        tag = _first(body, pos, (INVOKE_OPEN, BLOCK_CLOSE))
        if tag < 0:
            leftover = body[pos:].strip()
            if leftover:
                calls.append(
                    _broken(
                        new_id(),
                        _loose_name(leftover),
                        leftover,
                        "the tool call is incomplete (the output ended inside it)",
                    )
                )
            problems.append(f"the tool-call block was not closed with {BLOCK_CLOSE}")
            return calls, problems
        if body[pos:tag] != "\n":
            problems.append(
                f"expected a newline before {body[tag : tag + 30]!r}, got {body[pos:tag][:40]!r}"
            )
        if body.startswith(BLOCK_CLOSE, tag):
            if not calls:
                problems.append("the tool-call block is empty")
            rest = body[tag + len(BLOCK_CLOSE) :]
            if rest.strip():
                problems.append(f"text after {BLOCK_CLOSE} was ignored: {rest.strip()[:80]!r}")
            return calls, problems
        start = tag + len(INVOKE_OPEN)
        stop = body.find(INVOKE_CLOSE, start)
        if stop < 0:
            calls.append(_invoke(body[start:], new_id(), complete=False))
            problems.append(f"the tool-call block was not closed with {BLOCK_CLOSE}")
            return calls, problems
        calls.append(_invoke(body[start:stop], new_id(), complete=True))
        pos = stop + len(INVOKE_CLOSE)


def _invoke(inner: str, call_id: str, *, complete: bool) -> ToolCall:
    """One `<｜DSML｜invoke ...>` body (between the tag name and `</｜DSML｜invoke>`)."""
    if not complete:
        name = _loose_name(inner)
        return _broken(
            call_id,
            name,
            inner,
            f"the call of {name or 'a tool'} is incomplete (the output ended inside it)",
        )
    head = _INVOKE_HEAD.match(inner)
    if not head:
        name = _loose_name(inner)
        return _broken(
            call_id, name, inner, f'the tool call does not start with name="TOOL">. {FORMAT_HINT}'
        )
    name = head.group(1)
    pos = head.end()
    values: dict[str, tuple[str, bool]] = {}
    while pos < len(inner):
        if not inner.startswith(PARAM_OPEN, pos):
            if inner[pos:] == "\n":  # a call without parameters: "\n" before </invoke>
                break
            return _broken(
                call_id,
                name,
                inner,
                f"unexpected text {inner[pos : pos + 40]!r} in the call of {name}. {FORMAT_HINT}",
            )
        ph = _PARAM_HEAD.match(inner, pos + len(PARAM_OPEN))
        if not ph:
            return _broken(
                call_id,
                name,
                inner,
                f"malformed parameter tag in the call of {name}. {FORMAT_HINT}",
            )
        close = inner.find(PARAM_CLOSE, ph.end())
        if close < 0:
            return _broken(
                call_id, name, inner, f"a parameter of {name} is not closed. {FORMAT_HINT}"
            )
        key, is_str = ph.group(1), ph.group(2) == "true"
        if key in values:
            return _broken(
                call_id, name, inner, f"parameter {key!r} is given twice in the call of {name}"
            )
        values[key] = (inner[ph.end() : close], is_str)
        pos = close + len(PARAM_CLOSE)
        if not inner.startswith("\n", pos):
            return _broken(
                call_id,
                name,
                inner,
                f"each parameter of {name} must end with a newline. {FORMAT_HINT}",
            )
        pos += 1
    # Arguments JSON as the reference decoder builds it: JSON values are kept as written.
    raw = (
        "{"
        + ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {v if not s else json.dumps(v, ensure_ascii=False)}"
            for k, (v, s) in values.items()
        )
        + "}"
    )
    arguments = {}
    for key, (value, is_str) in values.items():
        if is_str:
            arguments[key] = value
            continue
        try:
            arguments[key] = json.loads(value)
        except ValueError:
            return ToolCall(
                call_id,
                name,
                raw,
                None,
                f'parameter {key!r} of {name} has string="false" but {value[:60]!r} is not JSON; '
                'use string="true" for text',
            )
    return ToolCall(call_id, name, raw, arguments, None)


def _broken(call_id: str, name: str, raw: str, why: str) -> ToolCall:
    return ToolCall(call_id, name, raw, None, why)


def _loose_name(inner: str) -> str:
    m = re.match(r'\s*name="([^"\n]*)"', inner)
    return m.group(1) if m else ""


def _first(text: str, pos: int, needles: tuple[str, ...]) -> int:
    hits = [i for i in (text.find(n, pos) for n in needles) if i >= 0]
    return min(hits) if hits else -1


def _counter() -> Callable[[], str]:
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"call_{n}"

    return next_id
