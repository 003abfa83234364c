"""The scripted server itself: what other test packages rely on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call

SCENARIOS = Path(__file__).parents[1] / "support" / "scenarios"


def post(srv: ScriptedServer, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=5, **kw)


def chat(content: str = "hi", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_scenario_file_drives_a_conversation(client_for):
    scenario = Scenario.load(SCENARIOS / "read_then_answer.toml")
    assert scenario.keepalive and len(scenario.steps) == 3
    tools = [
        {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    ]
    with ScriptedServer(scenario) as srv:
        client = client_for(srv)
        msgs = [{"role": "user", "content": "What is main?"}]
        r1 = client.complete(msgs, tools)
        msgs += [
            r1.to_message(),
            {"role": "tool", "tool_call_id": r1.tool_calls[0].id, "content": "1\tdef main():"},
        ]
        r2 = client.complete(msgs, tools)
        srv.assert_done()
    assert r1.tool_calls[0].arguments == {"path": "a.py"}
    assert r2.text.startswith("`a.py:1`")


def test_json_scenario_and_unknown_keys(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {
                "usage": "openai",
                "steps": [
                    {"fault": "server_error", "status": 502},
                    {"fault": "cut_stream", "after_chunks": 2, "turn": {"text": "partial"}},
                    {"tool_calls": [{"name": "search", "raw": "{bad"}]},
                ],
            }
        )
    )
    s = Scenario.load(path)
    assert s.usage == "openai" and s.steps[0].status == 502 and s.steps[1].turn.text == "partial"
    assert s.steps[2].calls[0].raw == "{bad"
    with pytest.raises(ValueError, match="unknown turn keys"):
        Scenario.from_dict({"steps": [{"txt": "typo"}]})
    with pytest.raises(ValueError, match="unknown fault"):
        Scenario.from_dict({"steps": [{"fault": "explode"}]})
    with pytest.raises(ValueError, match="usage must be"):
        Scenario(usage="anthropic")


def test_exhausted_scenario_answers_500_and_sets_the_flag():
    with ScriptedServer([]) as srv:
        resp = post(srv, chat())
        assert resp.status_code == 500 and resp.headers["retry-after"] == "0"
        assert resp.json()["error"]["type"] == "scenario_exhausted"
        assert srv.exhausted
        with pytest.raises(AssertionError, match="scenario exhausted"):
            srv.assert_done()


def test_unused_steps_fail_assert_done():
    with ScriptedServer([Turn.text("a"), Turn.text("b")]) as srv:
        post(srv, chat())
        with pytest.raises(AssertionError, match="1 scenario step"):
            srv.assert_done()


def test_expectations_answer_400_and_are_listed():
    check = lambda req: None if req.body.get("temperature") == 0 else "temperature must be 0"  # noqa: E731
    steps = [
        Turn.text("x", expect=["needle"]),
        Turn.text("y", expect=[check]),
        Turn.text("z", expect_tools=["run_tests"]),
    ]
    with ScriptedServer(steps) as srv:
        assert post(srv, chat("hay")).status_code == 400
        assert post(srv, chat("a needle")).status_code == 400  # step 2: the callable
        assert post(srv, chat(temperature=0)).status_code == 400  # step 3: no tools offered
        assert len(srv.errors) == 3 and "needle" in srv.errors[0] and "run_tests" in srv.errors[2]


def test_protocol_rules_do_not_consume_steps():
    tool_turn = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_x",
                "type": "function",
                "function": {"name": "read_file", "arguments": "{}"},
            }
        ],
    }
    with ScriptedServer([Turn.text("ok")]) as srv:
        # a tool call left without its result
        resp = post(
            srv,
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "q"},
                    tool_turn,
                    {"role": "user", "content": "next"},
                ],
            },
        )
        assert resp.status_code == 400 and "tool_call_id" in resp.json()["error"]["message"]
        # a tool result for a call nobody made
        resp = post(
            srv,
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "tool_call_id": "nope", "content": ""},
                ],
            },
        )
        assert resp.status_code == 400
        # a private key leaking into a message
        resp = post(
            srv, {"model": "m", "messages": [{"role": "user", "content": "q", "_raw": "x"}]}
        )
        assert resp.status_code == 400 and "_raw" in resp.json()["error"]["message"]
        assert srv.steps_left == 1
        assert post(srv, chat()).status_code == 200
        assert len(srv.errors) == 3


def test_reasoning_rule_is_switchable_and_respects_thinking_off():
    def conversation(srv, reasoning_back: bool, **extra):
        r = post(srv, chat(stream=False)).json()["choices"][0]["message"]
        msg = {"role": "assistant", "content": "", "tool_calls": r["tool_calls"]}
        if reasoning_back:
            msg["reasoning_content"] = r["reasoning_content"]
        tool = {"role": "tool", "tool_call_id": r["tool_calls"][0]["id"], "content": "x"}
        return post(
            srv, {"model": "m", "messages": [{"role": "user", "content": "hi"}, msg, tool], **extra}
        )

    steps = lambda: [Turn.tool_calls([call("read_file", {})], reasoning="why"), Turn.text("ok")]  # noqa: E731
    with ScriptedServer(Scenario(steps(), reasoning_rule=True)) as srv:
        assert conversation(srv, False).status_code == 400
    with ScriptedServer(Scenario(steps(), reasoning_rule=True)) as srv:
        assert conversation(srv, True).status_code == 200
    with ScriptedServer(Scenario(steps(), reasoning_rule=True)) as srv:
        assert conversation(srv, False, thinking={"type": "disabled"}).status_code == 200
    with ScriptedServer(Scenario(steps(), reasoning_rule=False)) as srv:
        assert conversation(srv, False).status_code == 200


def test_models_endpoint_and_key_check():
    with ScriptedServer([Turn.text("ok")], check_key=True) as srv:
        assert httpx.get(f"{srv.base_url}/models").status_code == 401
        ok = httpx.get(f"{srv.base_url}/models", headers={"Authorization": f"Bearer {srv.api_key}"})
        assert ok.json()["data"][0]["id"] == "deepseek-v4-flash"
        assert post(srv, chat()).status_code == 401 and srv.steps_left == 1
        assert srv.env() == {"OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": srv.api_key}


def test_steps_can_be_added_while_running():
    with ScriptedServer([]) as srv:
        srv.add(Turn.text("late", stream=False), Fault.status(418, "teapot"))
        assert post(srv, chat()).json()["choices"][0]["message"]["content"] == "late"
        assert post(srv, chat()).status_code == 418
        srv.assert_done()
