"""The OpenAI-compatible client against the scripted server: streaming, tool calls, reasoning
round-trip, usage and cost, and every fault the issue lists."""

from __future__ import annotations

import json
import socket
import time

import pytest

from agent.errors import ExitCode, ProviderError
from agent.providers.base import (
    AuthError,
    BadRequest,
    ContextLengthExceeded,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    Usage,
)
from agent.providers.openai_compat import OpenAICompatProvider, parse_retry_after, prepare_messages
from tests.providers.conftest import RecordingSink
from tests.support.scripted_server import (
    Fault,
    Scenario,
    ScriptedServer,
    Turn,
    call,
    retry_after_date,
)

USER = [{"role": "user", "content": "What does a.py do?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "read",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


def follow_up(messages, reply, results="ok"):
    """The conversation after a tool-call turn, as the agent loop builds it."""
    out = [*messages, reply.to_message()]
    out += [{"role": "tool", "tool_call_id": c.id, "content": results} for c in reply.tool_calls]
    return out


# ----------------------------------------------------------------------------- streaming


def test_streamed_text_and_reasoning_reach_sink_and_reply(client_for):
    text = "The answer, with ünïcödé and emoji 🚀 split at awkward places.\nSecond line."
    scenario = Scenario(
        [Turn.text(text, reasoning="First I think… then I answer.", chunk_chars=3)],
        split_bytes=7,
        keepalive=True,
    )
    with ScriptedServer(scenario) as srv:
        sink = RecordingSink()
        reply = client_for(srv).complete(USER, TOOLS, stream_to=sink)
        srv.assert_done()
    assert reply.text == text
    assert reply.reasoning == "First I think… then I answer."
    assert "".join(sink.text) == text and len(sink.text) > 5  # really incremental
    assert "".join(sink.reasoning) == reply.reasoning
    assert reply.finish_reason == "stop" and reply.tool_calls == []
    body = srv.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == TOOLS and body["messages"] == USER
    assert srv.requests[0].headers["accept"] == "text/event-stream"


def test_several_tool_calls_assembled_from_split_deltas(client_for):
    args_a = {"path": "src/ü/a.py", "start_line": 3, "end_line": 40}
    args_b = {"pattern": 'def "main"\\(', "regex": True, "glob": "*.py"}
    raw_c = '{"path": "b.py", "content": "x = {\\"k\\": [1, 2]}\\n"}'
    turn = Turn.tool_calls(
        [call("read_file", args_a), call("search", args_b), call("write_file", raw=raw_c)],
        text="Looking.",
        arg_chunk_chars=3,
    )
    with ScriptedServer(Scenario([turn], split_bytes=11)) as srv:
        reply = client_for(srv).complete(USER, TOOLS)
    assert reply.finish_reason == "tool_calls"
    assert [c.name for c in reply.tool_calls] == ["read_file", "search", "write_file"]
    assert [c.id for c in reply.tool_calls] == ["call_0001", "call_0002", "call_0003"]
    assert reply.tool_calls[0].arguments == args_a
    assert reply.tool_calls[1].arguments == args_b
    assert reply.tool_calls[2].raw_arguments == raw_c
    assert reply.tool_calls[2].arguments == {"path": "b.py", "content": 'x = {"k": [1, 2]}\n'}
    assert reply.text == "Looking."


def test_malformed_tool_arguments_become_a_parse_error_not_a_crash(client_for):
    turn = Turn.tool_calls(
        [call("edit_file", raw='{"path": "a.py", "old_string": "x'), call("read_file", raw="[1]")]
    )
    with ScriptedServer([turn]) as srv:
        reply = client_for(srv).complete(USER, TOOLS)
    bad, not_object = reply.tool_calls
    assert bad.arguments is None and "not valid JSON" in bad.parse_error
    assert bad.raw_arguments == '{"path": "a.py", "old_string": "x'
    assert not_object.arguments is None and "JSON object" in not_object.parse_error


def test_non_streamed_answer(client_for):
    turn = Turn.tool_calls([call("read_file", {"path": "a.py"})], reasoning="r", text="t")
    with ScriptedServer([turn, Turn.text("done")]) as srv:
        client = client_for(srv, stream=False)
        sink = RecordingSink()
        reply = client.complete(USER, TOOLS, stream_to=sink)
        assert (
            srv.requests[0].body["stream"] is False and "stream_options" not in srv.requests[0].body
        )
        assert reply.tool_calls[0].arguments == {"path": "a.py"} and reply.reasoning == "r"
        assert sink.text == ["t"] and sink.reasoning == ["r"]
        reply2 = client.complete(follow_up(USER, reply), TOOLS, stream=True)
        assert reply2.text == "done" and srv.requests[1].body["stream"] is True


def test_server_that_ignores_stream_flag_still_works(client_for):
    with ScriptedServer([Turn.text("plain json", stream=False)]) as srv:
        assert client_for(srv).complete(USER, []).text == "plain json"


# ----------------------------------------------------------------------------- reasoning round-trip


def test_reasoning_is_sent_back_for_tool_call_turns_only(client_for):
    steps = [
        Turn.tool_calls([call("read_file", {"path": "a.py"})], reasoning="I must read a.py."),
        Turn.text("It prints.", reasoning="Now I know."),
        Turn.text("Second answer."),
    ]
    with ScriptedServer(Scenario(steps, reasoning_rule=True)) as srv:
        client = client_for(srv)
        r1 = client.complete(USER, TOOLS)
        msgs = follow_up(USER, r1)
        r2 = client.complete(msgs, TOOLS)
        msgs = [*msgs, r2.to_message(), {"role": "user", "content": "And b.py?"}]
        client.complete(msgs, TOOLS)
        srv.assert_done()
    sent = srv.requests[2].messages
    assert sent[1]["reasoning_content"] == "I must read a.py."  # tool-call turn: round-tripped
    assert "reasoning_content" not in sent[3]  # final answer: not needed, not sent


def test_missing_reasoning_gets_deepseeks_400(client_for):
    steps = [
        Turn.tool_calls([call("read_file", {"path": "a.py"})], reasoning="think"),
        Turn.text("never"),
    ]
    with ScriptedServer(Scenario(steps, reasoning_rule=True)) as srv:
        client = client_for(srv, roundtrip_reasoning=False)
        r1 = client.complete(USER, TOOLS)
        with pytest.raises(
            BadRequest, match="reasoning_content in the thinking mode must be passed back"
        ):
            client.complete(follow_up(USER, r1), TOOLS)
        assert client.last_attempts == 1  # a 400 is not retried
        assert srv.steps_left == 1 and srv.errors


def test_private_keys_are_stripped_before_sending(client_for):
    with ScriptedServer([Turn.text("ok")]) as srv:
        msgs = [{"role": "user", "content": "hi", "_dsml": "<raw bytes>", "_meta": {"x": 1}}]
        client_for(srv).complete(msgs, [])
        assert srv.requests[0].messages == [{"role": "user", "content": "hi"}]
        assert b"_dsml" not in srv.requests[0].raw
    assert prepare_messages(msgs) == [{"role": "user", "content": "hi"}]
    assert msgs[0]["_dsml"] == "<raw bytes>"  # the caller's messages are not modified


def test_thinking_and_effort_options_per_provider_dialect(client_for):
    with ScriptedServer([Turn.text("a"), Turn.text("b"), Turn.text("c")]) as srv:
        deepseek = client_for(srv, thinking=False)
        deepseek.complete(USER, [])
        deepseek.complete(
            USER, [], thinking=True, reasoning_effort="max", max_tokens=50, temperature=0.2
        )
        vllm = client_for(srv, name="openai", extra_body={"top_k": 20})
        vllm.complete(USER, [], thinking=True)
        with pytest.raises(TypeError, match="unknown provider option"):
            vllm.complete(USER, [], thinkng=True)
    b0, b1, b2 = (r.body for r in srv.requests)
    assert b0["thinking"] == {"type": "disabled"} and "reasoning_effort" not in b0
    assert b1["thinking"] == {"type": "enabled"} and b1["reasoning_effort"] == "max"
    assert b1["max_tokens"] == 50 and b1["temperature"] == 0.2
    assert (
        b2["chat_template_kwargs"] == {"thinking": True}
        and b2["top_k"] == 20
        and "thinking" not in b2
    )


# ----------------------------------------------------------------------------- usage and cost


def test_deepseek_usage_with_cache_hits_from_the_shared_prefix(client_for):
    big = "def f():\n    return 1\n" * 400  # a long repository prefix, identical in both requests
    steps = [Turn.tool_calls([call("read_file", {"path": "a.py"})]), Turn.text("done")]
    with ScriptedServer(Scenario(steps, usage="deepseek")) as srv:
        client = client_for(srv)
        msgs = [{"role": "system", "content": big}, *USER]
        r1 = client.complete(msgs, TOOLS)
        r2 = client.complete(follow_up(msgs, r1), TOOLS)
    assert r1.usage.cached_input_tokens == 0 and r1.usage.input_tokens > 2000
    assert r2.usage.input_tokens > r1.usage.input_tokens
    assert r2.usage.cached_input_tokens % 64 == 0
    assert r1.usage.input_tokens - 64 < r2.usage.cached_input_tokens <= r1.usage.input_tokens
    assert r1.usage.output_tokens > 0
    expected = (
        r2.usage.cached_input_tokens * 0.0028
        + (r2.usage.input_tokens - r2.usage.cached_input_tokens) * 0.14
        + r2.usage.output_tokens * 0.28
    ) / 1e6
    assert client.cost(r2.usage) == pytest.approx(expected)


@pytest.mark.parametrize("stream", [True, False])
def test_openai_style_usage_with_cached_tokens(client_for, stream):
    usage = {"prompt_tokens": 1000, "cached_tokens": 640, "completion_tokens": 20}
    with ScriptedServer(Scenario([Turn.text("x", usage=usage)], usage="openai")) as srv:
        reply = client_for(srv, name="openai", stream=stream).complete(USER, [])
    assert reply.usage == Usage(1000, 640, 20)


def test_openai_style_usage_only_when_requested(client_for):
    usage = {"prompt_tokens": 1000, "cached_tokens": 0, "completion_tokens": 20}
    with ScriptedServer(Scenario([Turn.text("x", usage=usage)], usage="openai")) as srv:
        reply = client_for(srv, name="openai", stream_usage=False).complete(USER, [])
    assert "stream_options" not in srv.requests[0].body
    # The server sends none unless asked: the client estimates, and says so.
    assert reply.usage.estimated and reply.usage.input_tokens != 1000


def test_cost_uses_configured_prices(client_for):
    from agent.config import Prices

    with ScriptedServer([]) as srv:
        client = client_for(srv, prices=Prices(1.0, 10.0, 100.0))
        assert client.cost(Usage(1_000_000, 250_000, 10_000)) == pytest.approx(0.25 + 7.5 + 1.0)


# ----------------------------------------------------------------------------- retries


def test_429_honours_retry_after_then_succeeds(client_for, sleeps):
    steps = [
        Fault.rate_limit(retry_after=7),
        Fault.rate_limit(retry_after=retry_after_date(30)),
        Turn.text("ok"),
    ]
    with ScriptedServer(steps) as srv:
        sink = RecordingSink()
        reply = client_for(srv, retry_max_time=600).complete(USER, [], stream_to=sink)
    assert reply.text == "ok"
    assert sleeps[0] == 7.0 and 25 <= sleeps[1] <= 31
    assert len(sink.retries) == 2 and "HTTP 429" in sink.retries[0]
    assert len(srv.requests) == 3


def test_retry_after_is_really_waited(client_for):
    with ScriptedServer([Fault.rate_limit(retry_after=1), Turn.text("ok")]) as srv:
        client = client_for(srv, sleep=time.sleep)
        started = time.monotonic()
        assert client.complete(USER, []).text == "ok"
        waited = srv.requests[1].first_byte_at - srv.requests[0].last_byte_sent_at
    assert 0.95 <= waited and time.monotonic() - started < 5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_retried_with_exponential_backoff_and_jitter(client_for, sleeps, status):
    steps = [Fault.server_error(status)] * 3 + [Turn.text("ok")]
    with ScriptedServer(steps) as srv:
        assert client_for(srv).complete(USER, []).text == "ok"
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps, start=1):
        step = 0.5 * 2 ** (attempt - 1)
        assert step / 2 <= delay <= step  # exponential, jittered within the step's upper half


def test_retries_exhausted_raise_provider_error_exit_5(client_for, sleeps):
    with ScriptedServer([Fault.server_error(503)] * 3) as srv:
        client = client_for(srv, max_retries=2)
        with pytest.raises(ProviderUnavailable) as info:
            client.complete(USER, [])
        srv.assert_done()
    assert info.value.exit_code == ExitCode.PROVIDER and isinstance(info.value, ProviderError)
    assert "after 3 attempts" in str(info.value) and "HTTP 503" in str(info.value)
    assert len(sleeps) == 2


def test_rate_limit_beyond_time_budget_gives_up_at_once(client_for, sleeps):
    with ScriptedServer([Fault.rate_limit(retry_after=3600)]) as srv:
        with pytest.raises(RateLimited, match="asked to wait 3600s") as info:
            client_for(srv, retry_max_time=60).complete(USER, [])
    assert sleeps == [] and "retry budget of 60s" in str(info.value)
    assert info.value.exit_code == ExitCode.PROVIDER


@pytest.mark.parametrize("clean", [False, True])
def test_cut_stream_is_retried_from_the_start_never_truncated(client_for, clean):
    full = "The complete answer, which is rather long so that the cut lands in the middle."
    steps = [Fault.cut_stream(Turn.text(full), after_chunks=4, clean=clean), Turn.text(full)]
    with ScriptedServer(steps) as srv:
        sink = RecordingSink()
        reply = client_for(srv).complete(USER, [], stream_to=sink)
        srv.assert_done()
    assert reply.text == full
    assert len(sink.retries) == 1 and "discarded" in sink.retries[0]
    assert "".join(sink.text).endswith(full) and "".join(sink.text) != full  # the sink was told


def test_stream_cut_on_every_attempt_is_reported(client_for):
    steps = [Fault.cut_stream(after_chunks=2)] * 3
    with ScriptedServer(steps) as srv:
        with pytest.raises(StreamInterrupted, match="stream was cut after 2 chunk") as info:
            client_for(srv, max_retries=2).complete(USER, [])
    assert info.value.exit_code == ExitCode.PROVIDER


def test_dropped_connection_and_garbage_body_are_retried(client_for, sleeps):
    with ScriptedServer([Fault.disconnect(), Fault.garbage(), Turn.text("ok")]) as srv:
        assert client_for(srv).complete(USER, []).text == "ok"
    assert len(sleeps) == 2


def test_slow_first_byte_hits_read_timeout_then_retries(client_for):
    steps = [Fault.slow_first_byte(3.0, Turn.text("too late")), Turn.text("on time")]
    with ScriptedServer(steps) as srv:
        client = client_for(srv, read_timeout=0.3)
        started = time.monotonic()
        assert client.complete(USER, []).text == "on time"
    assert time.monotonic() - started < 2.5


def test_read_timeout_on_every_attempt_is_reported(client_for):
    with ScriptedServer([Fault.slow_first_byte(2.0)] * 2) as srv:
        with pytest.raises(ProviderUnavailable, match="timed out waiting for data"):
            client_for(srv, read_timeout=0.2, max_retries=1).complete(USER, [])


def test_connection_refused_is_reported_with_the_url(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = OpenAICompatProvider(
        model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, sleep=sleeps
    )
    with pytest.raises(ProviderUnavailable, match=f"cannot connect to http://127.0.0.1:{port}/v1"):
        client.complete(USER, [])
    assert len(sleeps) == 1


# ----------------------------------------------------------------------------- errors that are not retried


@pytest.mark.parametrize("style", ["deepseek", "vllm", "openai", "llamacpp"])
def test_context_length_error_names_the_token_numbers(client_for, style):
    msgs = [{"role": "user", "content": "x" * 40_000}]
    with ScriptedServer(
        [Fault.context_length(limit=8192, style=style, completion_tokens=100)]
    ) as srv:
        client = client_for(srv)
        with pytest.raises(ContextLengthExceeded) as info:
            client.complete(msgs, [])
    err = info.value
    assert client.last_attempts == 1 and err.exit_code == ExitCode.PROVIDER
    assert err.limit == 8192 and err.prompt_tokens and err.prompt_tokens > 10_000
    assert "8,192" in str(err) and f"{err.prompt_tokens:,}" in str(err) and "--budget" in str(err)


def test_auth_error_names_the_variable_and_never_the_key(client_for):
    key = "sk-live-SECRET-0123456789abcdefXYZ"
    with ScriptedServer([Fault.unauthorized()], api_key=key) as srv:
        with pytest.raises(AuthError) as info:
            client_for(srv, key_source="env DEEPSEEK_API_KEY").complete(USER, [])
        assert srv.requests[0].bearer == key  # it was sent, and the server echoed it back
    message = str(info.value)
    assert key not in message and key not in repr(info.value)
    assert "DEEPSEEK_API_KEY" in message and "HTTP 401" in message and "…fXYZ" in message


def test_auth_error_without_key_says_what_to_set(client_for):
    with ScriptedServer([Fault.unauthorized()]) as srv:
        with pytest.raises(AuthError, match="No API key was sent: set OPENAI_API_KEY"):
            client_for(srv, name="openai", api_key=None, api_key_env="OPENAI_API_KEY").complete(
                USER, []
            )
        assert "authorization" not in srv.requests[0].headers


def test_other_client_errors_are_reported_not_retried(client_for):
    steps = [
        Fault.status(404, "model not found"),
        Fault.status(402, "Insufficient Balance"),
        Fault.status(422, "bad tool schema"),
    ]
    with ScriptedServer(steps) as srv:
        client = client_for(srv)
        with pytest.raises(BadRequest, match="not found") as info:
            client.complete(USER, [])
        assert "/v1" in info.value.hint
        with pytest.raises(ProviderError, match="payment required"):
            client.complete(USER, [])
        with pytest.raises(BadRequest, match="HTTP 422: bad tool schema"):
            client.complete(USER, [])
    assert len(srv.requests) == 3


def test_exhausted_scenario_fails_loudly_and_fast(client_for):
    with ScriptedServer([Turn.text("only one")]) as srv:
        client = client_for(srv, max_retries=2)
        client.complete(USER, [])
        with pytest.raises(ProviderError, match="scenario exhausted"):
            client.complete(USER, [])
        assert srv.exhausted
        with pytest.raises(AssertionError, match="exhausted"):
            srv.assert_done()


def test_parse_retry_after_forms():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 9 <= parse_retry_after(retry_after_date(10)) <= 11
    assert parse_retry_after(retry_after_date(-100)) == 0.0


def test_request_body_is_plain_json(client_for):
    with ScriptedServer([Turn.text("x")]) as srv:
        client_for(srv).complete([{"role": "user", "content": "é\u2028"}], [])
        assert json.loads(srv.requests[0].raw)["messages"][0]["content"] == "é\u2028"
        assert srv.requests[0].headers["content-type"] == "application/json"
