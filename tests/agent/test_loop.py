"""The loop's limits, its handling of unhelpful models, change tracking and --commit — run
in-process (the library API) against the scripted server on real repositories."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from agent.ask import check_citations, run_ask
from agent.errors import UsageError
from agent.fix import run_fix
from agent.loop import Limits, RunSetup
from agent.transcript import read_transcript
from agent.undo import undo_last
from tests.agent.conftest import (
    FIX_CALL,
    FIXED,
    PLANTED,
    READ,
    UNITTEST,
    assert_append_only,
    tree_state,
)
from tests.conftest import git
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call


@pytest.fixture
def serve(monkeypatch):
    """serve(steps) -> a started ScriptedServer the library's openai provider talks to."""
    servers = []

    def start(steps) -> ScriptedServer:
        srv = ScriptedServer(Scenario(list(steps))).start()
        servers.append(srv)
        for key, value in srv.env().items():
            monkeypatch.setenv(key, value)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def setup_for(root: Path, **kw) -> RunSetup:
    return RunSetup(
        root=root,
        flags={"provider": "openai", "model": "deepseek-v4-flash"},
        test_command=UNITTEST,
        **kw,
    )


def test_ask_stops_at_the_turn_limit_with_exit_4(colorconv_repo, serve):
    srv = serve([Turn.tool_calls([READ])] * 3)
    result = run_ask(setup_for(colorconv_repo), "What is this?", limits=Limits(max_turns=2))
    assert (result.exit_code, result.status, result.limit) == (4, "limit_reached", "turns")
    assert srv.steps_used == 2 and result.turns == 2
    # The question is restated at the end of the conversation after each tool turn.
    assert srv.requests[1].messages[-1]["role"] == "user"
    assert "What is this?" in srv.requests[1].messages[-1]["content"]


def test_fix_out_of_turns_with_tests_failing_exits_3(colorconv_repo, serve):
    srv = serve([Turn.tool_calls([READ], text="plan"), Turn.tool_calls([READ])])
    result = run_fix(setup_for(colorconv_repo), limits=Limits(max_turns=2))
    assert (result.exit_code, result.status, result.limit) == (3, "tests_failing", "turns")
    assert srv.steps_used == 2 and result.changes == []


def test_a_model_that_says_nothing_or_only_talks_ends_cleanly(colorconv_repo, serve):
    srv = serve([Turn.text("")] * 5)
    result = run_ask(setup_for(colorconv_repo), "Anything?")
    assert (result.exit_code, result.limit) == (4, "stuck") and srv.steps_used == 3
    assert "empty" in srv.requests[1].messages[-1]["content"]

    srv = serve([Turn.text("my plan")] + [Turn.text("I would change line 103.")] * 5)
    result = run_fix(setup_for(colorconv_repo))
    assert (result.exit_code, result.status, result.limit) == (3, "tests_failing", "stuck")
    assert srv.steps_used == 4 and result.plan == "my plan"
    assert "Go ahead" in srv.requests[1].messages[-1]["content"]
    assert "does not change any file" in srv.requests[2].messages[-1]["content"]


def test_the_same_failing_call_three_times_ends_the_run(colorconv_repo, serve):
    bad = call(
        "edit_file", {"path": "colorconv.py", "old_string": "no such text", "new_string": "x"}
    )
    srv = serve([Turn.tool_calls([bad], text="plan")] + [Turn.tool_calls([bad])] * 4)
    result = run_fix(setup_for(colorconv_repo))
    assert (result.exit_code, result.limit) == (3, "stuck") and srv.steps_used == 3
    second = srv.requests[2].messages[-1]["content"]
    assert "same failing call 2 times" in second  # the model was warned before the run ended


def test_timeout_interrupts_a_slow_model(colorconv_repo, serve):
    serve([Fault.slow_first_byte(30, Turn.text("too late"))])
    started = time.monotonic()
    result = run_ask(setup_for(colorconv_repo), "Hello?", limits=Limits(max_turns=5, timeout_s=2))
    assert time.monotonic() - started < 15
    assert (result.exit_code, result.status, result.limit) == (4, "limit_reached", "time")


def test_tests_already_passing_means_no_model_call(colorconv_repo, serve):
    path = colorconv_repo / "colorconv.py"
    path.write_text(path.read_text().replace(PLANTED, FIXED))
    srv = serve([Turn.text("never requested")])
    result = run_fix(setup_for(colorconv_repo))
    assert (result.exit_code, result.status, result.already_passing) == (0, "ok", True)
    assert srv.requests == [] and result.patch == "" and result.turns == 0
    assert result.tests_before["ok"] is True


def test_no_test_command_is_a_usage_error(make_git_repo, serve):
    root = make_git_repo({"README.md": "# nothing to test\n"})
    serve([])
    with pytest.raises(UsageError, match="--test-cmd"):
        run_fix(RunSetup(root=root, flags={"provider": "openai"}))


def test_files_changed_by_a_command_are_tracked_and_undone(colorconv_repo, serve):
    before = tree_state(colorconv_repo)
    script = "open('gen.txt','w').write('generated'); open('notes.txt','a').write('appended by a command')"
    command = call(
        "run_command", {"command": f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"}
    )
    serve([Turn.tool_calls([command], text="plan"), Turn.tool_calls([FIX_CALL])])
    result = run_fix(setup_for(colorconv_repo, yes=True))
    assert result.exit_code == 0
    assert sorted(c.path for c in result.changes) == ["colorconv.py", "gen.txt", "notes.txt"]
    assert result.iterations == 2  # a command that changed files counts as an edit: tests re-ran
    events = [e["event"] for e in read_transcript(Path(result.transcript))]
    assert events.count("edit") == 3
    undone = undo_last(colorconv_repo)
    assert undone.deleted == ["gen.txt"] and sorted(undone.restored) == [
        "colorconv.py",
        "notes.txt",
    ]
    assert tree_state(colorconv_repo) == before


def test_commit_holds_only_the_fix_and_keeps_the_users_changes_uncommitted(colorconv_repo, serve):
    (colorconv_repo / "README.md").write_text("# colorconv\n\nstaged by the user\n")
    git(colorconv_repo, "add", "README.md")
    (colorconv_repo / "notes.txt").write_text("unstaged user work\n")
    serve([Turn.text("m2 uses the wrong sign for l <= 0.5; flip it."), Turn.tool_calls([FIX_CALL])])
    result = run_fix(setup_for(colorconv_repo), commit=True)
    assert result.exit_code == 0 and result.commit
    assert git(colorconv_repo, "rev-parse", "HEAD").strip() == result.commit
    assert git(colorconv_repo, "show", "--name-only", "--format=", "HEAD").split() == [
        "colorconv.py"
    ]
    message = git(colorconv_repo, "log", "-1", "--format=%B")
    assert message.startswith("Fix failing tests: m2 uses the wrong sign")
    assert UNITTEST in message and "before: FAILED" in message
    status = set(git(colorconv_repo, "status", "--porcelain").splitlines())
    assert status == {"M  README.md", " M notes.txt"}  # still staged / unstaged, not committed
    assert (
        git(colorconv_repo, "show", "HEAD:README.md")
        == "# colorconv\n\nColour space conversions (a copy of the stdlib's colorsys).\n"
    )


def test_citations_are_checked_against_the_repository(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("a\nb\nc\n")
    (tmp_path / "setup.cfg").write_text("x")
    answer = (
        "See src/app.py:2, `src/app.py:1-3`, ./setup.cfg:1, src/app.py:4, src/app.py:3-2, "
        "gone.py:1, ../etc/passwd:1, http://example.com:8080 and version 3.11:5."
    )
    found = {c["citation"]: c["valid"] for c in check_citations(tmp_path, answer)}
    assert found == {
        "src/app.py:2": True,
        "src/app.py:1-3": True,
        "setup.cfg:1": True,
        "src/app.py:4": False,
        "src/app.py:3-2": False,
        "gone.py:1": False,
        "../etc/passwd:1": False,
    }


def test_each_iteration_restates_the_task_and_the_latest_failures_at_the_end(colorconv_repo, serve):
    broken = call(  # a different failure than the planted bug: a NameError
        "edit_file",
        {
            "path": "colorconv.py",
            "old_string": PLANTED.strip(),
            "new_string": "m2 = l * (1.0+undefined_factor)",
        },
    )
    repair = call(
        "edit_file",
        {
            "path": "colorconv.py",
            "old_string": "m2 = l * (1.0+undefined_factor)",
            "new_string": FIXED.strip(),
        },
    )
    srv = serve(
        [
            Turn.tool_calls([broken], text="plan", reasoning="m2 looks wrong"),
            Turn.tool_calls([READ], reasoning="check the readme"),  # a turn without changes
            Turn.tool_calls([repair]),
        ]
    )
    result = run_fix(setup_for(colorconv_repo))
    assert (result.exit_code, result.iterations) == (0, 2)
    assert_append_only(srv.requests)
    first_task = srv.requests[0].messages[-1]["content"]
    assert "undefined_factor" not in first_task
    reminder = srv.requests[1].messages[-1]
    assert reminder["role"] == "user"  # the very last message of the next request
    assert "iteration 1 of at most 10" in reminder["content"]
    assert "Task (restated)" in reminder["content"] and UNITTEST in reminder["content"]
    assert "undefined_factor" in reminder["content"]  # the new failures, not the first ones
    # A turn that changed nothing adds no reminder: the next request ends with the tool result.
    assert srv.requests[2].messages[-1]["role"] == "tool"
