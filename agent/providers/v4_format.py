"""Conversation -> the exact DeepSeek-V4 prompt (text and token ids).

Follows DeepSeek's reference encoder for V4 (`encoding/encoding_dsv4.py` of the model release):

    BOS [effort prefix] system [\\n\\n tools block] [\\n\\n response format]
    <｜User｜>user<｜Assistant｜><think>reasoning</think>content[\\n\\n DSML tool calls]<｜end▁of▁sentence｜>
    <｜User｜><tool_result>r1</tool_result>\\n\\n<tool_result>r2</tool_result><｜Assistant｜><think> ...

* No `tool` role: consecutive tool results (and a user message right after them) form one user
  turn, the results sorted into the order of the preceding assistant's calls.
* Thinking mode opens each answer with `<think>`, chat mode with `</think>`. Without tools,
  reasoning of turns before the last user message is dropped (the prefix changes each turn);
  with tools every turn keeps its reasoning, so the prompt only ever grows (KV reuse).

The result is a list of pieces: `str` is text somebody else wrote (user, repository, tool
output, model arguments) and is always tokenized as ordinary text, so a file containing
"<｜User｜>" cannot open a turn; `Special` is one special token; `Replay` is the exact ids an
earlier local completion produced, reused verbatim so the prompt matches the live KV cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
LATEST_REMINDER = "<｜latest_reminder｜>"
THINK = "<think>"
END_THINK = "</think>"
DSML = "｜DSML｜"
SPECIAL_TOKENS = (BOS, EOS, USER, ASSISTANT, LATEST_REMINDER, THINK, END_THINK, DSML)

# Keys an assistant message carries when the local engine produced it (see Reply.extra).
REPLAY_IDS = "_v4_ids"
REPLAY_TEXT = "_v4_text"
REPLAY_MODE = "_v4_mode"
# On any message (set by the agent, stripped before HTTP like every "_" key): the first N
# characters of its content stay the same from run to run (the packed repository before the
# task), so a provider that stores prompt prefixes keeps its state up to there.
CACHE_BREAKPOINT = "_cache_breakpoint"

REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n"
)

# The tools block. Its markup (DSML, <think>) is ours, so it is split into special tokens;
# the schemas that follow it are ordinary text.
TOOLS_HEADER = f"""## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{DSML}tool_calls>" block like the following:

<{DSML}tool_calls>
<{DSML}invoke name="$TOOL_NAME">
<{DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML}parameter>
...
</{DSML}invoke>
<{DSML}invoke name="$TOOL_NAME2">
...
</{DSML}invoke>
</{DSML}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {THINK}), you MUST output your complete reasoning inside {THINK}...{END_THINK} BEFORE any tool calls or final response.

Otherwise, output directly after {END_THINK} with tool calls or final response.

### Available Tool Schemas

"""
TOOLS_FOOTER = "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n"
RESPONSE_FORMAT_HEADER = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
)


@dataclass(frozen=True)
class Special:
    token: str


@dataclass(frozen=True)
class Replay:
    """Token ids a completion produced, replayed exactly (`text` is their decoded form)."""

    ids: tuple[int, ...]
    text: str


Piece = str | Special | Replay


class TokenizerLike(Protocol):
    def encode(self, text: str) -> list[int]: ...  # ordinary text: special strings stay text
    def special_id(self, token: str) -> int: ...


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(value, ensure_ascii=True, default=str)


def markup(template: str) -> list[Piece]:
    """Split text *we* wrote into ordinary text and the special tokens it names."""
    pieces: list[Piece] = []
    rest = template
    while rest:
        hits = [(rest.find(tok), tok) for tok in SPECIAL_TOKENS if tok in rest]
        if not hits:
            pieces.append(rest)
            break
        pos, tok = min(hits)
        if pos:
            pieces.append(rest[:pos])
        pieces.append(Special(tok))
        rest = rest[pos + len(tok) :]
    return pieces


def render_tools(functions: Sequence[dict[str, Any]]) -> list[Piece]:
    return [*markup(TOOLS_HEADER), "\n".join(to_json(f) for f in functions), TOOLS_FOOTER]


def dsml_tool_calls(calls: Sequence[tuple[str, str]]) -> list[Piece]:
    """The DSML block for (name, JSON arguments) pairs, as the reference encoder writes it.

    Arguments that are not a JSON object are passed as one string parameter "arguments"."""
    out: list[Piece] = ["\n\n<", Special(DSML), "tool_calls>\n"]
    for i, (name, raw_arguments) in enumerate(calls):
        if i:
            out.append("\n")
        out += ["<", Special(DSML), 'invoke name="', name, '">\n']
        try:
            arguments = json.loads(raw_arguments)
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {"arguments": raw_arguments}
        for j, (key, value) in enumerate(arguments.items()):
            if j:
                out.append("\n")
            is_str = isinstance(value, str)
            out += [
                "<",
                Special(DSML),
                f'parameter name="{key}" string="{"true" if is_str else "false"}">',
            ]
            out += [value if is_str else to_json(value), "</", Special(DSML), "parameter>"]
        out += ["\n</", Special(DSML), "invoke>"]
    out += ["\n</", Special(DSML), "tool_calls>"]
    return out


# ---------------------------------------------------------------------------------------------
# Preprocessing: tool messages become user turns made of <tool_result> blocks


def _merge_tool_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Changes the user messages it is given (render() passes its own copies)."""
    merged: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        last = merged[-1] if merged else None
        joinable = last is not None and last.get("role") == "user" and "_blocks" in last
        if role == "tool":
            block = ("tool_result", msg.get("tool_call_id") or "", _text_of(msg.get("content")))
            if joinable:
                last["_blocks"].append(block)
            else:
                merged.append({"role": "user", "_blocks": [block]})
        elif role == "user":
            block = ("text", "", _text_of(msg.get("content")))
            if joinable:  # (render() refused `task` messages, which the reference keeps apart)
                last["_blocks"].append(block)
            else:
                msg["_blocks"] = [block]
                merged.append(msg)
        else:
            merged.append(msg)
    return merged


def _text_of(content: Any) -> str:
    """Message content as text (OpenAI content-part lists are joined like the reference)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                parts.append(f"[Unsupported {kind}]")
        return "\n\n".join(parts)
    return str(content)


def _sort_tool_results(messages: list[dict[str, Any]]) -> None:
    order: dict[str, int] = {}
    for msg in messages:
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            order = {}
            for i, call in enumerate(msg["tool_calls"]):
                call_id = call.get("id") or call.get("function", {}).get("id", "")
                if call_id:
                    order[call_id] = i
        elif msg.get("role") == "user" and "_blocks" in msg:
            results = [b for b in msg["_blocks"] if b[0] == "tool_result"]
            if len(results) > 1 and order:
                ranked = iter(sorted(results, key=lambda b: order.get(b[1], 0)))
                msg["_blocks"] = [
                    next(ranked) if b[0] == "tool_result" else b for b in msg["_blocks"]
                ]


def _last_user_index(messages: Sequence[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") in ("user", "developer"):
            return i
    return -1


# ---------------------------------------------------------------------------------------------
# Rendering


def render(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    *,
    thinking: bool = True,
    reasoning_effort: str | None = None,
    drop_thinking: bool = True,
) -> list[Piece]:
    """The V4 prompt for an OpenAI-format conversation.

    `tools` (OpenAI function schemas) go into the first system message (an empty one is added
    when there is none). When the last message is a user or tool message the prompt ends with
    `<｜Assistant｜>` and the opener (`<think>` or `</think>`), ready for generation.
    """
    if reasoning_effort not in (None, "high", "max"):
        raise ValueError(
            f"reasoning_effort must be 'high', 'max' or None, not {reasoning_effort!r}"
        )
    msgs = [dict(m) for m in messages]
    if any(m.get("task") is not None for m in msgs):
        # The reference encoder's internal classification tasks: silently dropping the task
        # token would render a different prompt than the model expects.
        raise ValueError("quick-instruction tasks (the 'task' field) are not supported")
    if tools:
        if msgs and msgs[0].get("role") == "system":
            msgs[0]["tools"] = list(tools)
        else:
            msgs.insert(0, {"role": "system", "content": "", "tools": list(tools)})
    msgs = _merge_tool_messages(msgs)
    _sort_tool_results(msgs)
    # With tools anywhere, every turn keeps its reasoning: the rendering is append-only.
    drop = drop_thinking and not any(m.get("tools") for m in msgs)
    if thinking and drop:
        msgs = _drop_old_thinking(msgs)
    pieces: list[Piece] = [Special(BOS)]
    last_user = _last_user_index(msgs)
    for i in range(len(msgs)):
        pieces += _render_message(i, msgs, thinking, drop, reasoning_effort, last_user)
    return pieces


def _drop_old_thinking(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last_user = _last_user_index(msgs)
    kept = []
    for i, msg in enumerate(msgs):
        role = msg.get("role")
        if role in ("user", "system", "tool", "latest_reminder") or i >= last_user:
            kept.append(msg)
        elif role == "assistant":
            msg = dict(msg)
            msg.pop("reasoning_content", None)
            kept.append(msg)
        # developer messages before the last user message are dropped, like the reference
    return kept


def _render_message(
    i: int,
    msgs: list[dict[str, Any]],
    thinking: bool,
    drop: bool,
    effort: str | None,
    last_user: int,
) -> list[Piece]:
    msg = msgs[i]
    role = msg.get("role")
    out: list[Piece] = []
    if i == 0 and thinking and effort == "max":
        out.append(REASONING_EFFORT_MAX)

    if role in ("system", "developer"):
        if role == "developer":
            if not msg.get("content"):
                raise ValueError("a developer message needs content")
            out.append(Special(USER))
        out.append(_text_of(msg.get("content")))
        functions = [t.get("function", t) for t in msg.get("tools") or []]
        if functions:
            out += ["\n\n", *render_tools(functions)]
        if msg.get("response_format"):
            out += ["\n\n", RESPONSE_FORMAT_HEADER, to_json(msg["response_format"])]
    elif role == "user":
        out.append(Special(USER))
        blocks = msg.get("_blocks") or [("text", "", _text_of(msg.get("content")))]
        for j, (kind, _, text) in enumerate(blocks):
            if j:
                out.append("\n\n")
            out += ["<tool_result>", text, "</tool_result>"] if kind == "tool_result" else [text]
    elif role == "latest_reminder":
        out += [Special(LATEST_REMINDER), _text_of(msg.get("content"))]
    elif role == "assistant":
        out += _render_assistant(i, msg, thinking, keep_reasoning=not drop or i > last_user)
    else:
        raise ValueError(f"unsupported message role: {role!r}")

    # What follows: the next turn renders itself, except that a user turn followed by the
    # assistant (or by nothing: generation) gets the assistant header and the opener.
    following = msgs[i + 1].get("role") if i + 1 < len(msgs) else None
    if following not in (None, "assistant", "latest_reminder"):
        return out
    if role in ("user", "developer"):
        out.append(Special(ASSISTANT))
        opener = THINK if thinking and (not drop or i >= last_user) else END_THINK
        out.append(Special(opener))
    return out


def _render_assistant(
    i: int, msg: dict[str, Any], thinking: bool, keep_reasoning: bool
) -> list[Piece]:
    replay = replay_of(msg, thinking)
    if replay is not None and (keep_reasoning or not thinking):
        return [replay]
    out: list[Piece] = []
    if thinking and keep_reasoning:
        out += [_text_of(msg.get("reasoning_content")), Special(END_THINK)]
    out.append(_text_of(msg.get("content")))
    calls = msg.get("tool_calls") or []
    if calls:
        out += dsml_tool_calls(
            [
                (str(c["function"].get("name", "")), c["function"].get("arguments") or "")
                for c in calls
            ]
        )
    out.append(Special(EOS))
    return out


def replay_of(msg: dict[str, Any], thinking: bool) -> Replay | None:
    """The exact completion stored on an assistant message, if it is usable here."""
    ids, text = msg.get(REPLAY_IDS), msg.get(REPLAY_TEXT)
    if msg.get(REPLAY_MODE) != ("thinking" if thinking else "chat"):
        return None
    if not isinstance(ids, list) or not ids or not all(type(t) is int for t in ids):
        return None
    if not isinstance(text, str):
        return None
    return Replay(tuple(ids), text)


# ---------------------------------------------------------------------------------------------
# Pieces -> text / ids


def to_text(pieces: Iterable[Piece]) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, Special):
            out.append(piece.token)
        elif isinstance(piece, Replay):
            out.append(piece.text)
        else:
            out.append(piece)
    return "".join(out)


def to_ids(pieces: Iterable[Piece], tokenizer: TokenizerLike) -> list[int]:
    """Token ids: adjacent text pieces are encoded together (as the reference does between two
    special tokens), special tokens by id, replays verbatim."""
    ids: list[int] = []
    text: list[str] = []
    specials: dict[str, int] = {}

    def flush() -> None:
        if text:
            joined = "".join(text)
            if joined:
                ids.extend(tokenizer.encode(joined))
            text.clear()

    for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
            continue
        flush()
        if isinstance(piece, Special):
            if piece.token not in specials:
                specials[piece.token] = tokenizer.special_id(piece.token)
            ids.append(specials[piece.token])
        else:
            ids.extend(piece.ids)
    flush()
    return ids
