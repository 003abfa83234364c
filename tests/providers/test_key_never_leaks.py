"""The API key never appears in logs, exceptions, reprs, sink messages, doctor output or JSON.

Every flow that could print something runs with one distinctive key; then all of it is scanned.
"""

from __future__ import annotations

import json
import logging

import pytest

from agent.commands.doctor_cmd import diagnose, render_text
from agent.config import load_settings
from agent.errors import ProviderError
from agent.paths import user_config_file
from agent.providers.factory import make_provider
from tests.providers.conftest import RecordingSink
from tests.support.cli import v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn

KEY = "sk-LEAKCHECK-9f8e7d6c5b4a39281706"
USER = [{"role": "user", "content": "hi"}]


def test_key_never_leaks_anywhere(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and our own loggers at their most verbose
    seen: list[str] = []
    steps = [
        Fault.unauthorized(),  # the server echoes the key in its error body
        Fault.rate_limit(retry_after=0),
        Fault.cut_stream(after_chunks=2),
        Turn.text("fine"),
        Fault.context_length(limit=10),
        Fault.server_error(503),
        Fault.server_error(503),
    ]
    with ScriptedServer(Scenario(steps), api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("V4CODE_MAX_RETRIES", "1")
        settings = load_settings(tmp_path)
        provider = make_provider(settings)
        provider._sleep = lambda s: None  # no real waiting in this test
        sink = RecordingSink()
        for _ in range(5):
            try:
                reply = provider.complete(USER, [], stream_to=sink)
                seen += [repr(reply), json.dumps(reply.to_message())]
            except ProviderError as exc:
                seen += [str(exc), repr(exc), exc.hint or "", exc.message]
        assert srv.steps_left == 0 and all(r.bearer == KEY for r in srv.requests)  # it was sent
        seen += sink.retries + sink.text
        seen += [
            repr(settings),
            str(settings.__dict__),
            json.dumps(settings.to_dict()),
            repr(provider),
        ]
        report = diagnose(tmp_path, with_accelerators=False, with_ping=True)
        seen += [json.dumps(report, ensure_ascii=False), render_text(report)]
        provider.close()

        # The CLI, with the key in the environment and in the user's config file.
        user_config_file().parent.mkdir(parents=True, exist_ok=True)
        user_config_file().write_text(f'[deepseek]\napi_key = "{KEY}"\n')
        for args in (
            ["doctor"],
            ["doctor", "--output-format", "json"],
            ["doctor", "--ping", "--provider", "openai", "--verbose"],
            ["doctor", "--provider", "deepseek", "--output-format", "json"],
        ):
            proc = v4code(*args, "--no-accelerators", cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            seen += [proc.stdout, proc.stderr]

    seen += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any("HTTP 401" in s for s in seen) and any("retrying" in s for s in seen)
    assert any("Ping: ok" in s for s in seen)
    leaks = [s for s in seen if KEY in s]
    assert leaks == [], f"the key leaked into: {leaks[0][:300]!r}"
    assert any("…1706" in s for s in seen)  # the masked form is what people see


@pytest.mark.parametrize("where", ["repr", "str", "format"])
def test_settings_with_a_key_print_masked(tmp_path, monkeypatch, where):
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    s = load_settings(tmp_path)
    shown = {"repr": repr(s), "str": str(s), "format": f"{s.api_key}"}[where]
    assert KEY not in shown
