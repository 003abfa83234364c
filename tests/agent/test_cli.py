"""The CLI around the loop: Ctrl-C, secrets in output, stdin handling, exit codes on bad setup."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from agent.transcript import read_transcript
from tests.agent.conftest import OPENAI, PLANTED, TEST_CMD, tree_state
from tests.support.cli import start_v4code, v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_run_exits_130_and_the_run_stays_undoable(colorconv_repo: Path, sig):
    before = tree_state(colorconv_repo)
    attempt = call(
        "edit_file",
        {
            "path": "colorconv.py",
            "old_string": PLANTED.strip(),
            "new_string": PLANTED.strip() + "  # try",
        },
    )
    scenario = Scenario(
        [Turn.tool_calls([attempt], text="plan"), Fault.slow_first_byte(60, Turn.text("too late"))]
    )
    with ScriptedServer(scenario) as srv:
        proc = start_v4code(
            "fix", *OPENAI, *TEST_CMD, "--output-format", "jsonl", cwd=colorconv_repo, server=srv
        )
        events = []
        for line in proc.stdout:  # the tests ran after the edit: the next model call is in flight
            events.append(json.loads(line))
            if events[-1]["event"] == "test_run" and events[-1]["phase"] == "after":
                break
        time.sleep(0.3)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    result = json.loads(rest.splitlines()[-1])
    assert result["status"] == "interrupted" and result["changed_files"] == ["colorconv.py"]
    assert (
        result["plan"] == "plan"
        and result["iterations"] == 1
        and result["tests_after"]["ok"] is False
    )
    assert "# try" in (colorconv_repo / "colorconv.py").read_text()  # whole, not half-written
    leftovers = [p.name for p in colorconv_repo.rglob("*") if "tmp" in p.name.lower()]
    assert leftovers == []
    assert v4code("undo", cwd=colorconv_repo).returncode == 0
    assert tree_state(colorconv_repo) == before


def test_secrets_never_reach_stdout_stderr_or_the_transcript(colorconv_repo: Path):
    token = "ghp_" + "Zx9" * 12
    answer = f"The key is {{KEY}} and the token {token}; see colorconv.py:1."
    with ScriptedServer(Scenario([])) as srv:
        srv.add(Turn.text(answer.replace("{KEY}", srv.api_key)))
        run = v4code(
            "ask",
            "What keys do you know?",
            *OPENAI,
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
            MY_SERVICE_TOKEN=token,
        )
        srv.assert_done()
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert result["answer"] == "The key is *** and the token ***; see colorconv.py:1."
    transcript = Path(result["transcript"]).read_text()
    for secret in (srv.api_key, token):
        assert secret not in run.stdout + run.stderr + transcript
    assert read_transcript(Path(result["transcript"]))[-1]["event"] == "result"

    # Text mode: only the answer on stdout; no live view or progress when stderr is not a terminal.
    with ScriptedServer(Scenario([Turn.text("It converts colours; see colorconv.py:1.")])) as srv:
        run = v4code("ask", "What is this?", *OPENAI, cwd=colorconv_repo, server=srv)
    assert (run.returncode, run.stdout, run.stderr) == (
        0,
        "It converts colours; see colorconv.py:1.\n",
        "",
    )


def test_a_silent_open_stdin_does_not_hang(colorconv_repo: Path):
    read_end, write_end = os.pipe()  # open, never written, never closed (as on some CI runners)
    try:
        with ScriptedServer(Scenario([Turn.text("Fine.")])) as srv:
            proc = start_v4code(
                "ask", "Anything?", *OPENAI, cwd=colorconv_repo, server=srv, stdin=read_end
            )
            out, err = proc.communicate(timeout=60)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert proc.returncode == 0 and out == "Fine.\n"
    assert "standard input stayed silent" in err


def test_no_provider_is_exit_2_with_json_and_nothing_to_undo_is_exit_2(colorconv_repo: Path):
    run = v4code("ask", "Hi?", "--output-format", "json", cwd=colorconv_repo)
    assert run.returncode == 2
    result = run.json()
    assert result["command"] == "ask" and result["status"] == "config_error"
    assert "DEEPSEEK_API_KEY" in run.stderr  # the message says how to configure one

    run = v4code("undo", cwd=colorconv_repo)
    assert run.returncode == 2 and "nothing to undo" in run.stderr
    run = v4code("fix", "--repo", str(colorconv_repo / "missing"), cwd=colorconv_repo)
    assert run.returncode == 2 and "does not exist" in run.stderr
