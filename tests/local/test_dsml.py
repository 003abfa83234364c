"""DSML tool-call parsing: well-formed completions parse like the reference decoder, malformed
ones become tool calls with an error the model can act on (never an exception)."""

from __future__ import annotations

import json

import pytest

from agent.providers.dsml import mask_literal, parse_completion
from agent.providers.v4_format import dsml_tool_calls, to_text
from tests.local.conftest import golden

D = "｜DSML｜"
EOS = "<｜end▁of▁sentence｜>"


def _call(name: str, *params: str) -> str:
    body = "".join(p + "\n" for p in params)
    return f'<{D}invoke name="{name}">\n{body}</{D}invoke>'


def _param(name: str, value: str, string: bool = True) -> str:
    return f'<{D}parameter name="{name}" string="{"true" if string else "false"}">{value}</{D}parameter>'


def _block(*calls: str) -> str:
    return f"\n\n<{D}tool_calls>\n" + "\n".join(calls) + f"\n</{D}tool_calls>"


def test_golden_assistant_turns_parse_back():
    """Parse the assistant turns of a reference rendering (like the reference's own tests)."""
    _, text = golden("agent_thinking_tools")
    first = text.index("<｜Assistant｜><think>") + len("<｜Assistant｜><think>")
    turn = text[first : text.index("<｜User｜>", first)]
    done = parse_completion(turn, thinking=True)
    assert done.ended and not done.problems
    assert done.reasoning.startswith("The test asserts add(2, 3) == 5.")
    assert done.content == ""
    assert [(c.name, c.arguments) for c in done.tool_calls] == [
        ("read_file", {"path": "calc/ops.py", "start_line": 1, "end_line": 2}),
        ("search", {"pattern": "add(", "regex": False}),
    ]
    assert [c.id for c in done.tool_calls] == ["call_1", "call_2"]
    last = text[text.rindex("<｜Assistant｜><think>") + len("<｜Assistant｜><think>") :]
    final = parse_completion(last, thinking=True)
    assert (
        final.content == "`add` subtracts: `return a - b` should be `return a + b`."
        and not final.tool_calls
    )


def test_rendered_calls_round_trip():
    args = {
        "path": "a b/ü.py",
        "old_string": 'x = "1"\n',
        "n": 3,
        "flags": [1, {"k": None}],
        "ok": True,
    }
    text = to_text(dsml_tool_calls([("edit_file", json.dumps(args)), ("list_files", "{}")])) + EOS
    done = parse_completion("Editing now." + text, thinking=False)
    assert done.content == "Editing now." and not done.problems
    assert [c.arguments for c in done.tool_calls] == [args, {}]
    assert json.loads(done.tool_calls[0].raw_arguments) == args


def test_content_before_calls_and_chat_mode():
    text = "I will look." + _block(_call("read_file", _param("path", "x.py"))) + EOS
    done = parse_completion(text, thinking=False)
    assert done.reasoning == "" and done.content == "I will look."
    assert done.tool_calls[0].arguments == {"path": "x.py"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_call("read_file", _param("start_line", "ten", string=False)), "is not JSON"),
        (_call("read_file", _param("path", "a"), _param("path", "b")), "given twice"),
        (f'<{D}invoke nme="read_file">\n</{D}invoke>', 'name="TOOL"'),
        (
            _call("read_file", f'<{D}parameter name="path">x</{D}parameter>'),
            'needs string="true" or string="false"',
        ),
        (
            _call("read_file", f'<{D}parameter name="path" string="yes">x</{D}parameter>'),
            'has string="yes"; it must be "true"',
        ),
        (_call("read_file", f"<{D}parameter path>x</{D}parameter>"), "malformed parameter tag"),
        (
            f'<{D}invoke name="read_file">\n{_param("path", "x")}</{D}invoke>',
            "must end with a newline",
        ),
        (_call("read_file", "path=x"), "unexpected text"),
        # a parameter opened inside another one
        (
            _call(
                "read_file",
                f'<{D}parameter name="path" string="true">a{_param("start_line", "2", False)}'
                f"</{D}parameter>",
            ),
            "cannot be nested",
        ),
        (
            f'<{D}invoke name="read_file">{_param("path", "x")}\n</{D}invoke>',
            f'a newline must follow <{D}invoke name="read_file">',
        ),
        (
            f'<{D}invoke name="read_file">\r\n{_param("path", "x")}\r\n</{D}invoke>',
            'not "\\r\\n"',
        ),
        (_call("read_file", _param("start_line", "NaN", string=False)), "is not JSON"),
        (_call("read_file", _param("start_line", "-Infinity", string=False)), "is not JSON"),
        (_call("read_file", _param("path", "[1, 2", string=False)), "is not JSON"),
        (_call("", _param("path", "x")), "names no tool"),
    ],
)
def test_malformed_call_becomes_an_observation(body, error):
    good = _call("list_files")
    text = "</think>" + _block(good, body) + EOS
    done = parse_completion(text, thinking=True)
    assert len(done.tool_calls) == 2
    ok, bad = done.tool_calls
    assert ok.arguments == {} and ok.parse_error is None
    assert bad.arguments is None and error in bad.parse_error
    assert bad.name in ("read_file", "")
    assert bad.parse_error.endswith("block.") or "not JSON" in bad.parse_error  # says how to fix it


def test_output_cut_inside_a_call():
    text = "</think>" + _block(_call("a"), _call("read_file", _param("path", "x")))
    cut = text[: text.rindex(f"</{D}parameter>") - 2]
    done = parse_completion(cut, thinking=True)
    assert not done.ended
    assert done.tool_calls[0].arguments == {}
    assert done.tool_calls[1].name == "read_file" and "incomplete" in done.tool_calls[1].parse_error
    assert any("not closed" in p for p in done.problems)


def test_noise_never_raises():
    for text in [
        "",
        EOS,
        f"<{D}",
        f"</think><{D}tool_calls>",
        f"x<{D}tool_calls>\n<{D}invoke",
        "</think></think>" * 3,
        f"<{D}tool_calls>{EOS}{EOS}junk",
    ]:
        for thinking in (True, False):
            done = parse_completion(text, thinking=thinking)
            assert all(c.parse_error for c in done.tool_calls)


def test_reasoning_left_open():
    done = parse_completion("still thinking" + EOS, thinking=True)
    assert done.reasoning == "still thinking" and done.content == "" and done.problems
    done = parse_completion("plan" + _block(_call("list_files")) + EOS, thinking=True)
    assert done.reasoning == "plan" and done.tool_calls[0].arguments == {}
    assert any("not closed" in p for p in done.problems)


def test_text_after_the_block_is_reported():
    done = parse_completion("</think>" + _block(_call("list_files")) + "more" + EOS, thinking=True)
    assert done.tool_calls[0].arguments == {}
    assert any("ignored" in p for p in done.problems)


def test_an_unclosed_call_does_not_swallow_the_next_one():
    unclosed = f'<{D}invoke name="search">\n{_param("pattern", "add")}\n'
    text = "</think>" + _block(unclosed + _call("read_file", _param("path", "x.py"))) + EOS
    done = parse_completion(text, thinking=True)
    first, second = done.tool_calls
    assert first.name == "search" and f"not closed with </{D}invoke>" in first.parse_error
    assert second.arguments == {"path": "x.py"} and second.parse_error is None


def test_a_call_outside_the_block_is_answered_not_run():
    text = "</think>Let me look.\n\n" + _call("read_file", _param("path", "x.py")) + EOS
    done = parse_completion(text, thinking=True)
    assert done.content == "Let me look."  # no markup left in the answer
    [call] = done.tool_calls
    assert call.name == "read_file" and call.arguments is None
    assert f"not inside a <{D}tool_calls> block" in call.parse_error


def test_markup_spelled_by_ordinary_tokens_is_text():
    """A model quoting a file that contains DSML or think tags writes text: with the markup view
    (what the provider builds from token ids) those spellings are not tags."""
    quoted = f"The file writes <{D}tool_calls> and </think> literally."
    call = _block(_call("read_file", _param("path", quoted)))
    reasoning = "It mentions </think> too."
    text = reasoning + "</think>" + quoted + call + EOS
    # everything the model wrote as ordinary tokens is masked; the real tags are not
    markup = (
        mask_literal(reasoning)
        + "</think>"
        + mask_literal(quoted)
        + call.replace(quoted, mask_literal(quoted))
        + EOS
    )
    assert len(markup) == len(text)
    done = parse_completion(text, thinking=True, markup=markup)
    assert done.reasoning == reasoning and done.content == quoted and not done.problems
    [c] = done.tool_calls
    assert c.arguments == {"path": quoted}
    # without the view, the quoted tags would be read as markup
    naive = parse_completion(text, thinking=True)
    assert naive.reasoning != reasoning


def test_nothing_raises_on_cut_or_damaged_completions():
    """Every prefix of a two-call completion, and every single-character deletion of it, parses;
    each call either has arguments or says what is wrong."""
    text = (
        "plan</think>ok"
        + _block(
            _call("read_file", _param("path", "a.py"), _param("start_line", "3", False)),
            _call("search", _param("pattern", "x")),
        )
        + EOS
    )
    variants = [text[:n] for n in range(len(text) + 1)]
    variants += [text[:i] + text[i + 1 :] for i in range(len(text))]
    for variant in variants:
        for thinking in (True, False):
            done = parse_completion(variant, thinking=thinking)
            for c in done.tool_calls:
                assert (c.arguments is None) == bool(c.parse_error), (variant, c)
                if c.arguments is not None:
                    assert json.loads(c.raw_arguments) == c.arguments
