"""The CLI contract around `ask` and `fix`, through the real CLI and the scripted server: exit
codes for every limit, the jsonl result being the json object, the options reaching the run
(--base-url, --model, --budget, --yes, --patch, stdin), clear usage errors before anything
runs, secrets from any source kept off stdout, and no colours with NO_COLOR."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.agent.conftest import FIX_CALL, OPENAI, PY, READ, TEST_CMD, tree_state
from tests.support.cli import cli_command, cli_env, v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call

# A cold 1M-token prompt: ~$0.14 at the default V4-Flash prices.
EXPENSIVE = {"prompt_tokens": 1_000_000, "cached_tokens": 0, "completion_tokens": 10}


@pytest.mark.parametrize(
    "command,options,steps,code,status,limit,requests",
    [
        # ask: every limit is exit 4
        (
            "ask",
            ["--max-turns", "1"],
            [Turn.tool_calls([READ])] * 2,
            4,
            "limit_reached",
            "turns",
            1,
        ),
        (
            "ask",
            ["--max-cost", "0.1"],
            [Turn.tool_calls([READ], usage=EXPENSIVE), Turn.text("never")],
            4,
            "limit_reached",
            "cost",
            1,
        ),
        (
            "ask",
            ["--timeout", "2"],
            [Fault.slow_first_byte(30, Turn.text("too late"))],
            4,
            "limit_reached",
            "time",
            1,
        ),
        # fix: out of turns with tests failing is exit 3; cost and time limits are exit 4
        (
            "fix",
            ["--max-turns", "1"],
            [Turn.text("plan"), Turn.text("x")],
            3,
            "tests_failing",
            "turns",
            1,
        ),
        (
            "fix",
            ["--max-cost", "0.1"],
            [Turn.text("plan", usage=EXPENSIVE), Turn.text("never")],
            4,
            "limit_reached",
            "cost",
            1,
        ),
        (
            "fix",
            ["--timeout", "2", "--test-cmd", f"{PY} -c 'import time; time.sleep(30)'"],
            [Turn.text("never requested")],
            4,
            "limit_reached",
            "time",
            0,  # the first test run used up the time: --timeout is the whole run's wall clock
        ),
    ],
    ids=["ask-turns", "ask-cost", "ask-time", "fix-turns", "fix-cost", "fix-time"],
)
def test_every_limit_has_its_exit_code(
    colorconv_repo, command, options, steps, code, status, limit, requests
):
    before = tree_state(colorconv_repo)
    args = [command] + (["What is this?"] if command == "ask" else [])
    if command == "fix" and "--test-cmd" not in options:
        args += TEST_CMD
    started = time.monotonic()
    with ScriptedServer(Scenario(list(steps))) as srv:
        run = v4code(
            *args, *OPENAI, *options, "--output-format", "json", cwd=colorconv_repo, server=srv
        )
        assert srv.steps_used == requests
    assert time.monotonic() - started < 25
    assert run.returncode == code, run.stderr
    result = run.json()
    assert (result["status"], result["limit"]) == (status, limit)
    assert result["error"] and status in run.stderr  # said on stderr too
    assert tree_state(colorconv_repo) == before


def test_the_jsonl_result_is_the_json_object_even_with_a_long_patch(colorconv_repo, tmp_path):
    table = "".join(f"ROW_{i:05d} = {i}\n" for i in range(3000))  # a ~50 KB new file
    steps = [
        Turn.text("Fix m2; add the table."),
        Turn.tool_calls([call("write_file", {"path": "table.py", "content": table}), FIX_CALL]),
    ]
    patch_file = tmp_path / "fix.patch"
    with ScriptedServer(Scenario(steps)) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--patch",
            str(patch_file),
            "--output-format",
            "jsonl",
            cwd=colorconv_repo,
            server=srv,
        )
    assert run.returncode == 0, run.stderr
    result = run.events()[-1]
    assert result["event"] == "result" and result["changed_files"] == ["colorconv.py", "table.py"]
    assert len(result["patch"]) > 50_000
    assert result["patch"] == patch_file.read_text()  # whole, not elided like long events


def test_options_and_stdin_reach_the_run(colorconv_repo):
    instructions = "Keep the public API of colorconv unchanged."
    steps = [
        Turn.text("Flip the sign.", expect=[instructions, "Result before any change: FAILED"]),
        Turn.tool_calls([FIX_CALL]),
    ]
    with ScriptedServer(Scenario(steps)) as srv:
        env = {k: v for k, v in srv.env().items() if k != "OPENAI_BASE_URL"}
        run = v4code(
            "fix",
            "--provider",
            "openai",
            "--base-url",
            srv.base_url,  # the only place the server's address is given
            "--model",
            "my-served-model",
            "--budget",
            "60000",
            *TEST_CMD,
            "--output-format",
            "json",
            cwd=colorconv_repo,
            stdin=instructions + "\n",  # piped text joins the task
            **env,
        )
        srv.assert_done()
        assert {r.body["model"] for r in srv.requests} == {"my-served-model"}
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert result["model"] == "my-served-model" and result["context"]["budget"] == 60000
    assert result["status"] == "ok" and result["changed_files"] == ["colorconv.py"]


def test_a_blank_question_with_piped_text_reviews_the_text(colorconv_repo):
    # The reminder after a tool call restates the question; a blank one means "review the text".
    steps = [
        Turn.tool_calls([call("list_files", {})], expect=["Review the text below."]),
        Turn.text("`colorconv.py:1` is fine.", expect=["The question: Review the text below."]),
    ]
    with ScriptedServer(Scenario(steps)) as srv:
        run = v4code(
            "ask", "   ", *OPENAI, cwd=colorconv_repo, server=srv, stdin="diff --git a b\n"
        )
        srv.assert_done()
    assert run.returncode == 0, run.stderr


def test_commands_need_yes_without_a_terminal(colorconv_repo):
    touch = call("run_command", {"command": "touch made_by_a_command.txt"})
    steps = [
        Turn.tool_calls([touch], text="plan"),
        Turn.tool_calls([FIX_CALL], expect=["--yes"]),  # the refusal says how to approve
    ]
    with ScriptedServer(Scenario(steps)) as srv:
        run = v4code(
            "fix", *OPENAI, *TEST_CMD, "--output-format", "json", cwd=colorconv_repo, server=srv
        )
        srv.assert_done()
        refusal = srv.requests[1].messages[-1]["content"]
    assert run.returncode == 0, run.stderr
    assert "touch" in refusal and not (colorconv_repo / "made_by_a_command.txt").exists()


def test_bad_input_is_refused_before_anything_runs(colorconv_repo, tmp_path):
    before = tree_state(colorconv_repo)
    marker = tmp_path / "tests-ran"
    tests = ["--test-cmd", f"touch {shlex.quote(str(marker))}; false"]
    cases = [
        (["fix", *tests, "--patch", str(tmp_path)], "is a directory"),  # a directory, not a file
        (["fix", "--test-cmd", "no-such-test-runner --all"], "could not run"),
        (["ask", ""], "empty question"),
    ]
    with ScriptedServer(Scenario([Turn.text("never requested")])) as srv:
        for args, message in cases:
            run = v4code(*args, *OPENAI, "--output-format", "json", cwd=colorconv_repo, server=srv)
            assert run.returncode == 2, (args, run.stderr)
            assert message in run.stderr and message in run.json()["error"]
        assert srv.steps_used == 0  # no model call, no money spent
    assert not marker.exists()  # the --patch check came before the test run
    assert tree_state(colorconv_repo) == before


def test_secrets_from_the_environment_or_the_config_file_never_reach_stdout(colorconv_repo):
    # Text mode prints the answer: a key the model repeats is redacted there too.
    with ScriptedServer(Scenario([])) as srv:
        srv.add(Turn.text(f"The key is {srv.api_key}."))
        run = v4code("ask", "Key?", *OPENAI, cwd=colorconv_repo, server=srv)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "The key is ***.\n"

    # A key that only the user's config file holds is redacted as well.
    config_key = "sk-from-the-config-file-0123456789"
    with ScriptedServer(Scenario([]), api_key=config_key) as srv:
        config = Path(os.environ["XDG_CONFIG_HOME"]) / "v4code" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[openai]\nbase_url = "{srv.base_url}"\napi_key = "{config_key}"\n')
        for fmt in ("text", "json"):
            srv.add(Turn.text(f"It is {config_key}."))
            run = v4code(
                "ask", "Key?", "--provider", "openai", "--output-format", fmt, cwd=colorconv_repo
            )
            assert run.returncode == 0, run.stderr
            assert config_key not in run.stdout + run.stderr and "It is ***." in run.stdout


_COLOUR = re.compile(rb"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;5;\d+)m")


def _screen(repo: Path, extra_env: dict[str, str]) -> bytes:
    """What `v4code ask` draws on a terminal stderr (stdout stays a pipe)."""
    main, secondary = pty.openpty()
    env = {k: v for k, v in cli_env().items() if k != "NO_COLOR"} | extra_env
    steps = [Turn.tool_calls([call("read_file", {"path": "nope.txt"}), READ]), Turn.text("Done.")]
    with ScriptedServer(Scenario(steps)) as srv:
        env.update(srv.env())
        proc = subprocess.Popen(
            [*cli_command(), "ask", "What is this?", *OPENAI],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        screen = b""
        while True:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        assert proc.stdout.read() == b"Done.\n"
        proc.wait(timeout=30)
        os.close(main)
    return screen


def test_the_live_view_has_colours_on_a_terminal_but_none_with_no_color(colorconv_repo):
    coloured = _screen(colorconv_repo, {"TERM": "xterm-256color"})
    assert _COLOUR.search(coloured)
    for shown in (b"v4code ask", b"read_file README.md", b"tokens:"):
        assert shown in coloured, shown  # the step, the tool calls, tokens and cost
    plain = _screen(colorconv_repo, {"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert b"read_file README.md" in plain and not _COLOUR.search(plain)


def test_an_error_message_with_brackets_keeps_its_exit_code_and_one_json_object(colorconv_repo):
    message = "model 'x' not found; see [/docs/models] and [Errno 2]"
    with ScriptedServer(Scenario([Fault.status(404, message)])) as srv:
        run = v4code(
            "ask", "Hi?", *OPENAI, "--output-format", "json", cwd=colorconv_repo, server=srv
        )
    assert run.returncode == 5, run.stderr  # the provider's code, not 1 from a display error
    result = run.json()  # exactly one JSON object on stdout
    assert result["status"] == "provider_error" and "[/docs/models]" in result["error"]
    assert "[/docs/models] and [Errno 2]" in run.stderr  # shown as written, not as markup
