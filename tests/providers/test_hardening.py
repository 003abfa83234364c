"""Edge cases found in review: servers without usage, odd Retry-After forms, chunks of the wrong
shape, keys that cannot be sent as a header, base URLs that try to look trusted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Secret, load_settings
from agent.errors import ConfigError, ExitCode
from agent.paths import user_config_file
from agent.providers.base import BadRequest, Usage
from agent.providers.factory import make_provider
from agent.providers.openai_compat import OpenAICompatProvider, parse_retry_after, scrub_key
from tests.providers.conftest import RecordingSink
from tests.support.cli import v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call

USER = [{"role": "user", "content": "Explain the repository in one line." * 20}]


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra}


# ----------------------------------------------------------------------------- missing usage


@pytest.mark.parametrize("stream", [True, False])
def test_server_without_usage_gets_an_estimate_not_zero(client_for, stream):
    answer = "An answer of a few words, long enough to count." * 3
    with ScriptedServer(Scenario([Turn.text(answer)], usage="none")) as srv:
        client = client_for(srv, stream=stream)
        reply = client.complete(USER, [])
        sent = len(srv.requests[0].raw)
    usage = reply.usage
    assert usage.estimated
    assert usage.input_tokens == -(-sent // 4)  # ~4 bytes a token, rounded up
    assert usage.output_tokens == -(-len(answer) // 4)
    assert client.cost(usage) > 0  # a --max-cost guard still sees money being spent
    assert set(usage.to_dict()) == {"input_tokens", "cached_input_tokens", "output_tokens"}
    assert (usage + Usage(1, 0, 1)).estimated


def test_stream_cut_between_finish_and_usage_keeps_the_answer_and_estimates(client_for):
    # OpenAI style sends usage in its own chunk after the finishing one; the cut lands between.
    turn = Turn.text("complete answer", chunk_chars=100)
    steps = [Fault.cut_stream(turn, after_chunks=3)]  # role, content, finish; then the cut
    with ScriptedServer(Scenario(steps, usage="openai")) as srv:
        reply = client_for(srv, name="openai").complete(USER, [])
        srv.assert_done()
    assert reply.text == "complete answer" and reply.finish_reason == "stop"
    assert reply.usage.estimated and reply.usage.input_tokens > 0


def test_reported_usage_is_not_flagged_as_estimated(client_for):
    with ScriptedServer(
        [Turn.text("x", usage={"prompt_tokens": 7, "completion_tokens": 2})]
    ) as srv:
        reply = client_for(srv).complete(USER, [])
    assert reply.usage == Usage(7, 0, 2) and not reply.usage.estimated


def test_nonsense_usage_values_do_not_crash(client_for):
    events = [
        chunk({"role": "assistant", "content": "ok"}),
        chunk({}, "stop", usage={"prompt_tokens": "lots", "completion_tokens": None}),
        "[DONE]",
    ]
    with ScriptedServer([Fault.raw_sse(events)]) as srv:
        reply = client_for(srv).complete(USER, [])
    assert reply.text == "ok" and reply.usage.estimated


# ----------------------------------------------------------------------------- Retry-After


def test_retry_after_forms_that_are_easy_to_get_wrong():
    now = 1_700_000_000.0
    # An HTTP-date with "-0000" parses as a naive datetime; it is still GMT, not local time.
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 -0000", now=now) == pytest.approx(20.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == pytest.approx(20.0)
    for junk in ("inf", "nan", "-inf", "1e999", "Tue, 99 Foo 2023"):
        assert parse_retry_after(junk, now=now) is None, junk
    assert parse_retry_after("-3") == 0.0


def test_retry_after_ms_is_honoured(client_for, sleeps):
    steps = [
        Fault.rate_limit(retry_after=None, headers={"retry-after-ms": "1500"}),
        Fault.rate_limit(retry_after=9, headers={"retry-after-ms": "nonsense"}),
        Turn.text("ok"),
    ]
    with ScriptedServer(steps) as srv:
        assert client_for(srv, retry_max_time=60).complete(USER, []).text == "ok"
    assert sleeps == [1.5, 9.0]


def test_infinite_retry_after_falls_back_to_backoff(client_for, sleeps):
    with ScriptedServer([Fault.server_error(503, retry_after="inf"), Turn.text("ok")]) as srv:
        assert client_for(srv).complete(USER, []).text == "ok"
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


# ----------------------------------------------------------------------------- odd streams


def test_chunk_of_the_wrong_shape_is_retried_not_a_crash(client_for, sleeps):
    bad = [chunk({"role": "assistant", "content": "par"}), {"choices": ["not a choice object"]}]
    with ScriptedServer([Fault.raw_sse(bad), Turn.text("whole answer")]) as srv:
        sink = RecordingSink()
        reply = client_for(srv).complete(USER, [], stream_to=sink)
    assert reply.text == "whole answer"
    assert len(sink.retries) == 1 and "malformed chunk" in sink.retries[0]


def test_two_calls_sharing_index_0_stay_two_calls(client_for):
    # Seen from some proxies: every call arrives with index 0, told apart only by its id.
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "read_file"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": "a.py"}'}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "search"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"pattern": "x"}'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    ]
    with ScriptedServer([Fault.raw_sse(events)]) as srv:
        reply = client_for(srv).complete(USER, [])
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("a", "read_file", {"path": "a.py"}),
        ("b", "search", {"pattern": "x"}),
    ]


def test_usual_index_streams_are_unchanged(client_for):
    turn = Turn.tool_calls([call("read_file", {"path": "a.py"}), call("search", {"pattern": "y"})])
    with ScriptedServer([turn]) as srv:
        reply = client_for(srv).complete(USER, [])
    assert [c.arguments for c in reply.tool_calls] == [{"path": "a.py"}, {"pattern": "y"}]


def test_server_rejecting_stream_options_is_asked_again_without_them(client_for):
    steps = [
        Fault.status(400, "Unrecognized request argument supplied: stream_options"),
        Turn.text("first"),
        Turn.text("second"),
    ]
    with ScriptedServer(Scenario(steps, usage="none")) as srv:
        client = client_for(srv, name="openai")
        assert client.complete(USER, []).text == "first"
        assert client.complete(USER, []).text == "second"
        srv.assert_done()
    bodies = [r.body for r in srv.requests]
    assert "stream_options" in bodies[0]
    assert "stream_options" not in bodies[1] and "stream_options" not in bodies[2]


def test_other_bad_requests_are_not_repeated(client_for):
    with ScriptedServer([Fault.status(400, "bad tool schema")]) as srv:
        with pytest.raises(BadRequest, match="bad tool schema"):
            client_for(srv).complete(USER, [])
    assert len(srv.requests) == 1


# ----------------------------------------------------------------------------- keys


KEY = "sk-review-key-0123456789abcdef"


def test_a_key_with_a_newline_never_reaches_an_error_message(tmp_path):
    # httpx quotes an illegal header value, key included, in its error: refuse such keys early.
    with pytest.raises(ConfigError) as info:
        OpenAICompatProvider(
            model="m", base_url="http://127.0.0.1:9/v1", api_key=Secret(KEY + "\n")
        )
    assert KEY not in str(info.value) and info.value.exit_code == ExitCode.USAGE
    with pytest.raises(ConfigError):
        OpenAICompatProvider(model="m", base_url="http://x/v1", api_key=Secret("sk-é" + KEY))


def test_config_keys_are_trimmed_or_refused_without_being_shown(tmp_path, monkeypatch):
    path = user_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[deepseek]\napi_key = "  {KEY}\\n"\n')
    s = load_settings(tmp_path)
    assert s.api_key == Secret(KEY)  # surrounding whitespace from a copy-paste is dropped
    path.write_text(f'[deepseek]\napi_key = "{KEY[:10]}\\u0007{KEY[10:]}"\n')
    with pytest.raises(ConfigError, match="not shown") as info:
        load_settings(tmp_path)
    assert KEY[:10] not in str(info.value) and str(path) in str(info.value)
    path.write_text("[deepseek]\napi_key = 12345678901234567\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert "12345678901234567" not in str(info.value)
    path.write_text('[deepseek]\napi_key = ""\n')
    assert load_settings(tmp_path).api_key is None  # empty means not set
    path.unlink()
    monkeypatch.setenv("DEEPSEEK_API_KEY", f"{KEY} {KEY}")
    with pytest.raises(ConfigError, match="DEEPSEEK_API_KEY") as info:
        load_settings(tmp_path)
    assert KEY not in str(info.value)


def test_doctor_with_a_broken_key_exits_2_and_shows_no_key(tmp_path):
    path = user_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "{KEY[:8]}\\r{KEY[8:]}"\n'
    )
    proc = v4code("doctor", "--ping", "--no-accelerators", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert KEY[8:] not in proc.stdout + proc.stderr and "not shown" in proc.stderr


def test_scrub_key_masks_escaped_forms():
    secret = Secret(KEY)
    for text in (f"got {KEY}", f"b'Bearer {KEY}'", repr(f"{KEY}")):
        assert KEY not in scrub_key(text, secret)
    assert scrub_key("nothing here", secret) == "nothing here"
    assert scrub_key(f"x {KEY}", None) == f"x {KEY}"


# ----------------------------------------------------------------------------- trust rule


@pytest.mark.parametrize(
    "url",
    [
        "https://api.deepseek.com@127.0.0.1:9/v1",  # userinfo: the host is 127.0.0.1
        "https://api.deepseek.com.evil.example",
        "https://api.deepseek.com:8443",
        "http://api.deepseek.com",  # the key would travel in clear text
        "https://api.deepseek.com/../../other",
        "https://api.deepseek.com\\@evil.example",
    ],
)
def test_lookalike_project_urls_do_not_get_the_key(tmp_path, monkeypatch, url):
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    (tmp_path / ".v4code.toml").write_text(f"[deepseek]\nbase_url = {url!r}\n".replace("'", '"'))
    s = load_settings(tmp_path)
    assert s.api_key is None and "may not redirect your key" in s.key_withheld
    with pytest.raises(ConfigError):
        make_provider(s)


def test_project_url_equal_to_the_default_but_for_a_trailing_slash_is_trusted(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    (tmp_path / ".v4code.toml").write_text('[deepseek]\nbase_url = "https://api.deepseek.com/"\n')
    s = load_settings(tmp_path)
    assert s.api_key == Secret(KEY) and s.base_url == "https://api.deepseek.com"


@pytest.mark.parametrize("var", ["OPENAI_API_BASE", "OPENAI_BASE_URL", "V4CODE_BASE_URL"])
def test_environment_url_beats_the_project_and_gets_the_key(tmp_path, monkeypatch, var):
    with ScriptedServer([Turn.text("mine")]) as mine, ScriptedServer([]) as theirs:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv(var, mine.base_url + "/")
        (tmp_path / ".v4code.toml").write_text(f'[openai]\nbase_url = "{theirs.base_url}"\n')
        provider = make_provider(load_settings(tmp_path, provider="openai"))
        assert provider.complete(USER, []).text == "mine"
        provider.close()
        assert theirs.requests == [] and [r.bearer for r in mine.requests] == [KEY]


def test_api_providers_never_import_torch():
    code = (
        "import sys, agent.config, agent.providers.factory, agent.providers.openai_compat, "
        "agent.commands.doctor_cmd; print('torch' in sys.modules, 'agent.providers.local' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    # Neither torch nor the local engine's provider module (make_provider imports it lazily).
    assert out.stdout.strip() == "False False", out.stderr


def test_a_server_chosen_by_the_project_is_named_in_the_notes(tmp_path):
    (tmp_path / ".v4code.toml").write_text(
        'provider = "openai"\n[openai]\nbase_url = "http://team-vllm:8000/v1"\n'
    )
    s = load_settings(tmp_path)
    assert s.provider == "openai" and s.api_key is None
    assert any(
        n.startswith("requests go to http://team-vllm:8000/v1 (project config") for n in s.notes
    )
