"""`v4code doctor` through the real CLI (subprocesses) and its library function."""

from __future__ import annotations

import json

from agent.commands.doctor_cmd import diagnose, render_text
from agent.paths import user_config_file
from tests.support.cli import v4code
from tests.support.scripted_server import ScriptedServer


def test_fresh_machine_explains_what_to_do_exit_0(tmp_path):
    proc = v4code("doctor", "--no-accelerators", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Provider: none configured" in out
    assert "DEEPSEEK_API_KEY" in out and "OPENAI_BASE_URL" in out and "--model-path" in out
    assert str(user_config_file()) in out
    assert "deepseek  not usable  no API key: set DEEPSEEK_API_KEY" in out


def test_json_report_shows_sources_and_masked_key(tmp_path):
    key = "sk-doctor-key-abcdefghijklmnopqrstuvwxyz"
    (tmp_path / ".v4code.toml").write_text('model = "deepseek-v4-pro"\nreserve = 200000\n')
    proc = v4code(
        "doctor",
        "--output-format",
        "json",
        "--no-accelerators",
        cwd=tmp_path,
        DEEPSEEK_API_KEY=key,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["provider"] == "deepseek" and report["model"] == "deepseek-v4-pro"
    settings = report["settings"]
    assert settings["api_key"] == {
        "value": "…wxyz",
        "shown": "…wxyz",
        "source": "env DEEPSEEK_API_KEY",
    }
    assert settings["reserve"]["value"] == 200000 and settings["reserve"]["source"].startswith(
        "project config"
    )
    assert settings["model"]["source"].startswith("project config")
    assert settings["prices"]["value"] == {
        "cache_hit": 0.003625,
        "cache_miss": 0.435,
        "output": 0.87,
    }
    assert report["providers"]["deepseek"]["usable"] is True
    assert (
        report["providers"]["openai"]["usable"] is False and report["providers"]["openai"]["reason"]
    )
    assert report["config_files"]["project"]["exists"] is True
    assert key not in proc.stdout + proc.stderr


def test_accelerators_listed_when_torch_is_installed(tmp_path):
    proc = v4code("doctor", "--output-format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    acc = json.loads(proc.stdout)["accelerators"]
    try:
        import torch
    except ModuleNotFoundError:
        assert acc["torch"] is None and "not installed" in acc["note"]
    else:
        assert acc["torch"] == torch.__version__
        assert any(d["type"] == "cpu" for d in acc["devices"])
        assert any(d["type"] == "cuda" for d in acc["devices"]) == torch.cuda.is_available()


def test_broken_config_is_exit_2_naming_the_file(tmp_path):
    path = user_config_file()
    path.parent.mkdir(parents=True)
    path.write_text("provider = [oops")
    proc = v4code("doctor", "--output-format", "json", "--no-accelerators", cwd=tmp_path)
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["status"] == "config_error" and str(path) in result["error"]


def test_ping_checks_the_server_and_the_key(tmp_path, monkeypatch):
    with ScriptedServer([], check_key=True) as srv:
        report = diagnose(tmp_path, with_accelerators=False, with_ping=True, base_url=srv.base_url)
        assert report["ping"]["ok"] is False and "HTTP 401" in report["ping"]["detail"]
        monkeypatch.setenv("OPENAI_API_KEY", srv.api_key)
        report = diagnose(tmp_path, with_accelerators=False, with_ping=True, base_url=srv.base_url)
        assert report["ping"]["ok"] is True and "deepseek-v4-flash" in report["ping"]["detail"]
        assert "Ping: ok" in render_text(report)
    assert [r.bearer for r in srv.other_requests] == [None, srv.api_key]
