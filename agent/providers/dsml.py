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

Markup is recognised only where the model produced the special tokens. `markup` is the
completion with every character that came from an ordinary token and could pass for markup
masked (see `mask_literal`): a model quoting a file that spells `<｜DSML｜tool_calls>` or
`</think>` in ordinary tokens writes text, not a call. Positions are found in `markup` and the
values are cut from `text` (the two have the same length).
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

# What ordinary (non-special) text may contain that markup is made of: the fullwidth bar of every
# special token except the think tags, and the think tags themselves. MASK replaces them in the
# markup view; it is in no tag, so a masked look-alike can never match one.
BAR = "｜"
MASK = "\x00"

_INVOKE_HEAD = re.compile(r' name="([^"\n]*)">\n')
_INVOKE_HEAD_LOOSE = re.compile(r' name="([^"\n]*)">')
_PARAM_HEAD = re.compile(r' name="([^"\n]*)" string="(true|false)">')
_PARAM_HEAD_ANY_TYPE = re.compile(r' name="([^"\n]*)" string="([^"\n]*)">')
_PARAM_HEAD_NO_TYPE = re.compile(r' name="([^"\n]*)">')
_FIRST_QUOTED = re.compile(r'\s*[^\n>"]*"([^"\n]+)"')

FORMAT_HINT = (
    f'Write each call as {INVOKE_OPEN} name="TOOL"> and a newline, then one line per argument '
    f'{PARAM_OPEN} name="ARG" string="true">text{PARAM_CLOSE} (string="false" for JSON '
    f"numbers, booleans, arrays, objects), then {INVOKE_CLOSE}, all inside one "
    f"{BLOCK_OPEN} … {BLOCK_CLOSE} block."
)


@dataclass
class Completion:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # format problems outside the calls
    ended: bool = False  # the model emitted the end-of-sentence token


def mask_literal(text: str) -> str:
    """The markup view of text that came from ordinary tokens: nothing in it can match a tag.
    Same length as `text`. (A `</think>` split over two calls is caught by the caller.)"""
    return text.replace(BAR, MASK).replace(END_THINK, MASK + END_THINK[1:])


@dataclass
class _Src:
    """The completion (`text`) and its markup view (`markup`, same length): tags are looked up
    in the view, values are cut from the text."""

    text: str
    markup: str

    def find(self, needle: str, start: int, end: int) -> int:
        return self.markup.find(needle, start, end)

    def at(self, needle: str, pos: int) -> bool:
        return self.markup.startswith(needle, pos)

    def cut(self, start: int, end: int) -> str:
        return self.text[start:end]

    def first(self, needles: tuple[str, ...], start: int, end: int) -> int:
        hits = [i for i in (self.find(n, start, end) for n in needles) if i >= 0]
        return min(hits) if hits else -1


def parse_completion(
    text: str,
    *,
    thinking: bool,
    new_id: Callable[[], str] | None = None,
    markup: str | None = None,
) -> Completion:
    """Split a completion (decoded with special tokens as text) into its parts. Without
    `markup` every spelling of a tag counts as one (text that did not come from token ids)."""
    if markup is None:
        markup = text
    elif len(markup) != len(text):
        raise ValueError("markup must have the same length as text")
    src = _Src(text, markup)
    ids = new_id or _counter()
    out = Completion()
    stop = len(text)
    end = src.find(EOS, 0, stop)
    if end >= 0:
        out.ended = True
        if text[end + len(EOS) :].strip():
            out.problems.append("text after the end-of-sentence token was ignored")
        stop = end
    block = src.find(BLOCK_OPEN, 0, stop)
    pos = 0
    if thinking:
        close = src.find(END_THINK, 0, stop)
        if close >= 0 and (block < 0 or close < block):
            out.reasoning, pos = src.cut(0, close), close + len(END_THINK)
        elif block >= 0:
            # The model started calling tools without closing its reasoning: keep the calls.
            out.reasoning, pos = src.cut(0, block).removesuffix("\n\n"), block
            out.problems.append(f"reasoning was not closed with {END_THINK} before the tool calls")
        else:
            out.reasoning, pos = src.cut(0, stop), stop
            if out.ended:
                out.problems.append(f"reasoning was not closed with {END_THINK}")
    if block < 0:
        stray = _stray_markup(src, pos, stop)
        if stray < 0:
            out.content = src.cut(pos, stop)
            return out
        # Call markup without the block around it: not run, but answered so the model can
        # write it again properly (the reference parser would reject the whole completion).
        out.content = src.cut(pos, stray).removesuffix("\n\n")
        raw = src.cut(stray, stop)
        out.tool_calls = [
            ToolCall(
                ids(),
                _loose_name(src, stray, stop),
                raw,
                None,
                f"the tool call was not inside a {BLOCK_OPEN} block, so it was not run. "
                + FORMAT_HINT,
            )
        ]
        return out
    out.content = src.cut(pos, block).removesuffix("\n\n")
    out.tool_calls, problems = _parse_block(src, block + len(BLOCK_OPEN), stop, ids)
    out.problems += problems
    return out


def _parse_block(
    src: _Src, pos: int, stop: int, new_id: Callable[[], str]
) -> tuple[list[ToolCall], list[str]]:
    """The calls between `pos` (just after the block's opening tag) and `stop`. Every tag is
    followed by exactly one newline, as the reference encoder writes it."""
    calls: list[ToolCall] = []
    problems: list[str] = []
    while True:
        tag = src.first((INVOKE_OPEN, BLOCK_CLOSE), pos, stop)
        if tag < 0:
            leftover = src.cut(pos, stop)
            if leftover.strip():
                calls.append(
                    ToolCall(
                        new_id(),
                        _loose_name(src, pos, stop),
                        leftover,
                        None,
                        f"the tool call is incomplete (the output ended inside it). {FORMAT_HINT}",
                    )
                )
            problems.append(f"the tool-call block was not closed with {BLOCK_CLOSE}")
            return calls, problems
        if src.cut(pos, tag) != "\n":
            problems.append(
                f"expected a newline before {src.cut(tag, tag + 30)!r}, got {src.cut(pos, tag)[:40]!r}"
            )
        if src.at(BLOCK_CLOSE, tag):
            if not calls:
                problems.append("the tool-call block is empty")
            rest = src.cut(tag + len(BLOCK_CLOSE), stop).strip()
            if rest:
                problems.append(f"text after {BLOCK_CLOSE} was ignored: {rest[:80]!r}")
            return calls, problems
        start = tag + len(INVOKE_OPEN)
        close = src.find(INVOKE_CLOSE, start, stop)
        following = src.first((INVOKE_OPEN, BLOCK_CLOSE), start, stop)
        if close < 0 or 0 <= following < close:
            # This call never closed; the next one (or the block's end) may still be fine.
            end = following if following >= 0 else stop
            name = _loose_name(src, start, end)
            why = (
                f"the call of {name or 'a tool'} is incomplete (the output ended inside it)"
                if following < 0
                else f"the call of {name or 'a tool'} was not closed with {INVOKE_CLOSE}"
            )
            calls.append(ToolCall(new_id(), name, src.cut(tag, end), None, f"{why}. {FORMAT_HINT}"))
            if following < 0:
                problems.append(f"the tool-call block was not closed with {BLOCK_CLOSE}")
                return calls, problems
            pos = following
            if src.cut(following - 1, following) == "\n":
                pos -= 1  # the separator check above sees the newline it expects
            continue
        calls.append(_invoke(src, tag, start, close, new_id()))
        pos = close + len(INVOKE_CLOSE)


def _invoke(src: _Src, tag: int, start: int, end: int, call_id: str) -> ToolCall:
    """One call: `start` is just after `<｜DSML｜invoke`, `end` at its `</｜DSML｜invoke>`."""
    raw = src.cut(tag, end + len(INVOKE_CLOSE))
    head = _INVOKE_HEAD.match(src.markup, start, end)
    if not head:
        loose = _INVOKE_HEAD_LOOSE.match(src.markup, start, end)
        if loose:
            name = src.cut(*loose.span(1))
            if src.at("\r\n", loose.end()):
                why = 'lines must end with "\\n", not "\\r\\n"'
            else:
                why = f'a newline must follow {INVOKE_OPEN} name="{name}">'
        else:
            name = _loose_name(src, start, end)
            why = f'the call must start with {INVOKE_OPEN} name="TOOL">'
        return ToolCall(call_id, name, raw, None, f"{why}. {FORMAT_HINT}")
    name = src.cut(*head.span(1))
    pos = head.end()
    values: dict[str, tuple[str, bool]] = {}

    def broken(why: str) -> ToolCall:
        return ToolCall(call_id, name, raw, None, f"{why}. {FORMAT_HINT}")

    if not name.strip():
        return broken("the call names no tool")

    while pos < end:
        if not src.at(PARAM_OPEN, pos):
            if pos == end - 1 and src.at("\n", pos):
                break  # the newline before </invoke> of a call without parameters
            return broken(
                f"unexpected text {src.cut(pos, min(end, pos + 40))!r} in the call of {name}"
            )
        param = _PARAM_HEAD.match(src.markup, pos + len(PARAM_OPEN), end)
        if not param:
            return broken(_bad_parameter_tag(src, pos + len(PARAM_OPEN), end, name))
        key, is_str = src.cut(*param.span(1)), param.group(2) == "true"
        close = src.find(PARAM_CLOSE, param.end(), end)
        nested = src.find(PARAM_OPEN, param.end(), close if close >= 0 else end)
        if nested >= 0:
            return broken(
                f"parameter {key!r} of {name} contains another parameter tag: parameters cannot "
                f"be nested; close each with {PARAM_CLOSE} before the next"
            )
        if close < 0:
            return broken(f"parameter {key!r} of {name} is not closed with {PARAM_CLOSE}")
        if key in values:
            return broken(f"parameter {key!r} is given twice in the call of {name}")
        values[key] = (src.cut(param.end(), close), is_str)
        pos = close + len(PARAM_CLOSE)
        if src.at("\r\n", pos):
            return broken('lines must end with "\\n", not "\\r\\n"')
        if not src.at("\n", pos):
            return broken(f"each parameter of {name} must end with a newline")
        pos += 1
    # Arguments JSON as the reference decoder builds it: JSON values are kept as written.
    raw_arguments = (
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
            arguments[key] = json.loads(value, parse_constant=_not_json)
        except ValueError:
            return ToolCall(
                call_id,
                name,
                raw_arguments,
                None,
                f'parameter {key!r} of {name} has string="false" but {value[:60]!r} is not JSON; '
                'use string="true" for text',
            )
    return ToolCall(call_id, name, raw_arguments, arguments, None)


def _bad_parameter_tag(src: _Src, pos: int, end: int, name: str) -> str:
    typed = _PARAM_HEAD_ANY_TYPE.match(src.markup, pos, end)
    if typed:
        key, kind = src.cut(*typed.span(1)), src.cut(*typed.span(2))
        return (
            f'parameter {key!r} of {name} has string="{kind}"; it must be "true" (the value is '
            'text) or "false" (the value is JSON)'
        )
    untyped = _PARAM_HEAD_NO_TYPE.match(src.markup, pos, end)
    if untyped:
        key = src.cut(*untyped.span(1))
        return f'parameter {key!r} of {name} needs string="true" or string="false"'
    return f"malformed parameter tag in the call of {name}"


def _not_json(constant: str) -> None:
    # NaN and Infinity are Python's extensions, not JSON: no tool expects them, and they would
    # make the transcript and --output-format json invalid JSON.
    raise ValueError(f"{constant} is not JSON")


def _stray_markup(src: _Src, start: int, stop: int) -> int:
    """Where call markup (a DSML tag) starts in answer text that has no tool-call block."""
    hit = src.find(DSML, start, stop)
    if hit < 0:
        return -1
    opener = src.markup.rfind("<", start, hit)
    return opener if opener >= 0 and hit - opener <= 2 else hit


def _loose_name(src: _Src, start: int, end: int) -> str:
    """The tool name a broken call was probably meant for: its first quoted word."""
    m = _FIRST_QUOTED.match(src.markup, start, min(end, start + 200))
    return src.cut(*m.span(1)) if m else ""


def _counter() -> Callable[[], str]:
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"call_{n}"

    return next_id
