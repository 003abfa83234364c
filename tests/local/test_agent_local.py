"""The agent loop on the local provider, in one process (the tiny random engine, steered): what
the model sees when its DSML call is malformed, and that it can then recover."""

from __future__ import annotations

import pytest

from agent.ask import run_ask
from agent.loop import RunSetup
from agent.providers import v4_format as fmt
from agent.providers.local import LocalProvider
from agent.providers.sampling import SamplingParams
from tests.local.forcing import ForceTokens, script_ids

pytest.importorskip("torch")

D = "｜DSML｜"
EOS = "<｜end▁of▁sentence｜>"


def _ask(repo, tok, engine, scripts):
    events = []
    provider = LocalProvider(
        engine,
        tok,
        processors=[ForceTokens([script_ids(s, tok) for s in scripts])],
        sampling=SamplingParams(seed=0),
        context_tokens=16384,
    )
    setup = RunSetup(root=repo, provider=provider, listeners=[events.append])
    return run_ask(setup, "What does add do?"), events, provider


def test_a_malformed_call_is_explained_and_the_model_recovers(make_git_repo, tiny_engine, tok):
    repo = make_git_repo({"calc.py": "def add(a, b):\n    return a - b\n"})
    broken = (
        f'Read it.</think>\n\n<{D}tool_calls>\n<{D}invoke nme="read_file">\n'
        f'<{D}parameter name="path" string="true">calc.py</{D}parameter>\n'
        f"</{D}invoke>\n</{D}tool_calls>{EOS}"
    )
    fixed = broken.replace("nme=", "name=")
    answer = f"Done.</think>`add` subtracts (calc.py:2).{EOS}"
    result, events, _ = _ask(repo, tok, tiny_engine, [broken, fixed, answer])
    assert result.exit_code == 0 and result.answer == "`add` subtracts (calc.py:2)."
    results = [e for e in events if e.get("event") == "tool_result"]
    first, second = results
    # the model is told what was wrong with how the call was written, not only "unknown tool"
    assert not first["ok"] and 'must start with <｜DSML｜invoke name="TOOL">' in first["text"]
    assert first["text"].count("Error:") == 1
    assert second["ok"] and "return a - b" in second["text"]
    # every later turn continued on the live cache
    turns = [e for e in events if e.get("event") == "turn"]
    assert [t["reply"]["_v4_stats"]["reused_live"] > 0 for t in turns] == [False, True, True]
    # the observation went back to the model as a <tool_result> of the next prompt
    conv = turns[0]["new_messages"] + [turns[0]["reply"]] + turns[1]["new_messages"]
    text = fmt.to_text(fmt.render(conv, [t.schema() for t in _ask_tools(repo)]))
    assert "<tool_result>" + first["text"] in text


def _ask_tools(repo):
    from tools import build_tools
    from tools.base import ToolContext

    return build_tools("ask", ToolContext(root=repo))
