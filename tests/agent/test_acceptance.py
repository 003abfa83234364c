"""The six acceptance scenarios of issue 4, on a real repository (the stdlib's colorsys and its
own unit tests, with a planted bug), driven through the real `v4code` CLI against the scripted
OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from agent.transcript import read_transcript
from tests.agent.conftest import (
    FIX_CALL,
    FIXED,
    OPENAI,
    PLANTED,
    TEST_CMD,
    assert_append_only,
    changed_lines,
    git_state,
    tree_state,
)
from tests.conftest import git
from tests.support.cli import CONTRACT_KEYS, cli_command, cli_env, v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call

PLAN = "The HLS conversion is wrong for l <= 0.5: m2 should be l * (1.0+s), not l * (1.0-s).\nI will fix that line."
# Scenario 2 finds the test command itself (pytest); the others pass TEST_CMD (faster to start).


def _no_key_anywhere(srv: ScriptedServer, run, result: dict) -> None:
    """The API key never reaches stdout, stderr or the transcript."""
    assert srv.api_key not in run.stdout and srv.api_key not in run.stderr
    if result.get("transcript"):
        assert srv.api_key not in Path(result["transcript"]).read_text()


def test_1_ask_answers_with_checked_citations_and_changes_nothing(colorconv_repo: Path):
    before = tree_state(colorconv_repo)
    answer = (
        "`hls_to_rgb` is defined at colorconv.py:99 and picks m2 at colorconv.py:102-105; "
        "the tests live in test_colorconv.py:1. (colorconv.py:9999 does not exist.)"
    )
    scenario = Scenario(
        [
            Turn.tool_calls(
                [call("search", {"pattern": "def hls_to_rgb"})],
                expect=["def hls_to_rgb", "Where is"],
            ),
            Turn.tool_calls(
                [call("read_file", {"path": "colorconv.py", "start_line": 99, "end_line": 107})],
                expect=["colorconv.py:99"],
            ),
            Turn.text(answer, expect=["m2 = l * (1.0-s)"]),
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "ask",
            "Where is hls_to_rgb and how does it choose m2?",
            *OPENAI,
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
        )
        assert run.returncode == 0, run.stderr
        srv.assert_done()
        assert srv.requests[0].tool_names == [
            "read_file",
            "list_files",
            "search",
        ]  # read-only tools only
        assert_append_only(srv.requests)
    result = run.json()
    assert set(result) >= CONTRACT_KEYS | {"answer"}
    assert (result["command"], result["status"], result["error"]) == ("ask", "ok", None)
    assert result["answer"] == answer and result["turns"] == 3
    assert result["provider"] == "openai" and result["model"] == "deepseek-v4-flash"
    assert set(result["usage"]) == {
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_usd",
    }
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["cost_usd"] > 0
    assert result["context"]["files"] >= 3 and result["context"]["tokens"] > 1000
    assert result["invalid_citations"] == ["colorconv.py:9999"]
    assert {c["citation"] for c in result["citations"] if c["valid"]} == {
        "colorconv.py:99",
        "colorconv.py:102-105",
        "test_colorconv.py:1",
    }
    _no_key_anywhere(srv, run, result)
    assert tree_state(colorconv_repo) == before
    assert git(colorconv_repo, "status", "--porcelain") == ""


def test_2_fix_repairs_the_planted_bug_writes_the_patch_and_undo_restores(
    colorconv_repo: Path, tmp_path: Path
):
    # The user's own uncommitted work, elsewhere: a fix must never touch or commit it.
    (colorconv_repo / "notes.txt").write_text("user notes\nwork in progress\n")
    (colorconv_repo / "README.md").write_text("# colorconv\n\nstaged by the user\n")
    git(colorconv_repo, "add", "README.md")
    before, git_before = tree_state(colorconv_repo), git_state(colorconv_repo)
    patch_file = tmp_path / "fix.patch"
    scenario = Scenario(
        [
            Turn.text(
                PLAN, expect=["test_colorconv", "FAILED"]
            ),  # tests ran first; their failures are in the task
            Turn.tool_calls([FIX_CALL], expect=["Go ahead"]),
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            "--patch",
            str(patch_file),
            "--output-format",
            "jsonl",
            cwd=colorconv_repo,
            server=srv,
        )
        assert run.returncode == 0, run.stderr
        srv.assert_done()
        assert_append_only(srv.requests)
        assert {"edit_file", "run_tests", "run_command"} <= set(srv.requests[0].tool_names)
    events = run.events()
    result = events[-1]
    assert result["event"] == "result" and result["status"] == "ok"
    kinds = [e["event"] for e in events]
    for name in (
        "start",
        "test_run",
        "context",
        "turn",
        "plan",
        "tool_call",
        "tool_result",
        "edit",
        "usage",
    ):
        assert name in kinds, name
    assert kinds.index("test_run") < kinds.index("context") < kinds.index("turn")  # tests first
    assert result["tests_before"]["ok"] is False and result["tests_before"]["failed"] >= 1
    assert result["tests_after"]["ok"] is True and result["iterations"] == 1
    assert result["plan"] == PLAN and result["changed_files"] == ["colorconv.py"]
    # The patch is exactly the fix: what git itself reports for colorconv.py (the only change
    # there), less git's blob ids and the function names it adds to hunk headers.
    patch = patch_file.read_text()
    assert patch == result["patch"]
    expected = git(colorconv_repo, "diff", "--no-color", "--", "colorconv.py")
    expected = re.sub(r"(?m)^index .*\n", "", expected)
    expected = re.sub(r"(?m)^(@@ [^@]* @@).*$", r"\1", expected)
    assert patch == expected
    assert changed_lines(patch) == ["-" + PLANTED.rstrip("\n"), "+" + FIXED.rstrip("\n")]
    assert (colorconv_repo / "notes.txt").read_text() == "user notes\nwork in progress\n"
    after = tree_state(colorconv_repo)
    assert {k for k in after if after[k] != before.get(k)} == {"colorconv.py"}
    transcript = read_transcript(Path(result["transcript"]))
    assert [e["event"] for e in transcript] == kinds  # the same events, recorded
    _no_key_anywhere(srv, run, result)

    undo = v4code("undo", "--output-format", "json", cwd=colorconv_repo)
    assert undo.returncode == 0, undo.stderr
    assert undo.json()["restored"] == ["colorconv.py"]
    assert tree_state(colorconv_repo) == before  # pre-fix state, the user's change kept
    assert git_state(colorconv_repo) == git_before  # index, status, diffs, stash, HEAD as they were
    git(colorconv_repo, "apply", "--check", str(patch_file))  # and the patch applies to it again


def test_3_the_models_usual_mistakes_become_observations(colorconv_repo: Path, tmp_path: Path):
    (colorconv_repo / "notes.txt").write_text("uncommitted user work\n")
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n")
    wrong_indent = call(
        "edit_file",
        {  # dedented by 4: found by the whitespace-tolerant match
            "path": "colorconv.py",
            "old_string": "if l <= 0.5:\n    m2 = l * (1.0-s)",
            "new_string": "if l <= 0.5:\n    m2 = l * (1.0+s)",
        },
    )
    mistakes = [
        call(
            "edit_file",
            {"path": "colorconv.py", "old_string": "rc = (maxc-r) / rangec", "new_string": "x"},
        ),
        call("read_file", {"path": "no/such/file.py"}),
        call("edit_file", raw='{"path": "colorconv.py", "old_string": "m2 = l'),  # malformed JSON
        call("edit_file", {"path": "../outside.py", "old_string": "x = 1", "new_string": "x = 2"}),
        call("run_command", {"command": "git reset --hard"}),
        call("delete_everything", {}),
    ]
    scenario = Scenario(
        [
            Turn.text(PLAN),
            Turn.tool_calls(mistakes),
            Turn.tool_calls(
                [wrong_indent],
                expect=["occurs 2 times", "outside the repository", "not valid JSON"],
            ),
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--yes",
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
        )
        assert run.returncode == 0, run.stderr
        srv.assert_done()
        observations = [m["content"] for m in srv.requests[2].messages if m["role"] == "tool"]
    assert len(observations) == len(mistakes)
    non_unique, missing, malformed, escape, destructive, unknown = observations
    assert "2" in non_unique and "replace_all" in non_unique
    assert "no/such/file.py" in missing
    assert "JSON" in malformed
    assert "outside" in escape
    assert "refused" in destructive.lower()
    assert "delete_everything" in unknown and "edit_file" in unknown
    result = run.json()
    assert result["status"] == "ok" and result["changed_files"] == ["colorconv.py"]
    assert FIXED in (colorconv_repo / "colorconv.py").read_text()
    assert outside.read_text() == "x = 1\n"
    assert (
        colorconv_repo / "notes.txt"
    ).read_text() == "uncommitted user work\n"  # no reset happened


def test_4_a_model_that_never_fixes_it_exits_3_and_undo_restores_its_last_attempt(
    colorconv_repo: Path,
):
    before = tree_state(colorconv_repo)
    # Each attempt edits the previous one: the planted line, then "# attempt 1" -> "# attempt 2".
    attempts = [
        call(
            "edit_file",
            {
                "path": "colorconv.py",
                "old_string": PLANTED.strip() + old,
                "new_string": PLANTED.strip() + new,
            },
        )
        for old, new in (("", "  # attempt 1"), ("  # attempt 1", "  # attempt 2"))
    ]
    scenario = Scenario(
        [
            Turn.tool_calls([attempts[0]], text=PLAN),
            Turn.tool_calls([attempts[1]], expect=["iteration 1 of at most 2", "FAILED"]),
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--max-iterations",
            "2",
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
        )
        srv.assert_done()
    assert run.returncode == 3, run.stderr
    result = run.json()
    assert result["status"] == "tests_failing" and result["iterations"] == 2
    assert result["tests_after"]["ok"] is False and "iterations" in result["error"]
    assert "# attempt 2" in (colorconv_repo / "colorconv.py").read_text()  # the last attempt stays
    assert v4code("undo", cwd=colorconv_repo).returncode == 0
    assert tree_state(colorconv_repo) == before

    # --max-cost: the first turn reports a cold 1M-token prompt (~$0.14 at V4-Flash prices); the
    # second pushes the total past $0.2, so the run stops with exit 4 and makes no third request.
    expensive = {"prompt_tokens": 1_000_000, "cached_tokens": 0, "completion_tokens": 10}
    scenario = Scenario(
        [
            Turn.text(PLAN, usage=expensive),
            Turn.tool_calls([call("read_file", {"path": "README.md"})], usage=expensive),
            Turn.text("never requested"),
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--max-cost",
            "0.2",
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
        )
        assert srv.steps_used == 2
    assert run.returncode == 4, run.stderr
    result = run.json()
    assert result["status"] == "limit_reached" and result["limit"] == "cost"
    assert 0.2 < result["usage"]["cost_usd"] < 0.3 and "cost limit" in result["error"]
    # A limit below what even a fully cached first request costs stops before any request.
    with ScriptedServer(Scenario([Turn.text("never requested")])) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--max-cost",
            "0.000001",
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
        )
        assert srv.steps_used == 0
    assert run.returncode == 4 and "would exceed" in run.json()["error"]


def test_5_provider_faults_mid_run_do_not_lose_the_run(colorconv_repo: Path):
    scenario = Scenario(
        [
            Turn.text(PLAN),
            Fault.rate_limit(retry_after=0),
            Fault.cut_stream(Turn.tool_calls([FIX_CALL]), after_chunks=4),
            Turn.tool_calls([FIX_CALL]),  # the retry after the cut gets the whole answer
        ]
    )
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix", *OPENAI, *TEST_CMD, "--output-format", "json", cwd=colorconv_repo, server=srv
        )
        assert run.returncode == 0, run.stderr
        srv.assert_done()
        assert_append_only(srv.requests)
        sent = [r.messages for r in srv.requests]
    result = run.json()
    assert (
        result["status"] == "ok"
        and result["turns"] == 2
        and result["changed_files"] == ["colorconv.py"]
    )
    # The transcript is the whole run: the conversation rebuilt from it is exactly what each
    # request sent, every tool call has its result, and the retries the turn survived are there.
    events = read_transcript(Path(result["transcript"]))
    turns = [e for e in events if e["event"] == "turn"]
    conversation: list[dict] = []
    rebuilt = []
    for turn in turns:
        conversation += turn["new_messages"]
        # private "_" keys (the repository's cache breakpoint) are recorded, never sent
        rebuilt.append(
            [{k: v for k, v in m.items() if not k.startswith("_")} for m in conversation]
        )
        conversation.append(turn["reply"])
    assert rebuilt == [sent[0], sent[3]]  # requests 2 and 3 were the 429 and the cut stream
    assert sent[1] == sent[2] == sent[3]
    assert [len(t["retries"]) for t in turns] == [0, 2]
    assert "429" in turns[1]["retries"][0] or "rate" in turns[1]["retries"][0].lower()
    calls = [e["id"] for e in events if e["event"] == "tool_call"]
    assert calls and calls == [e["id"] for e in events if e["event"] == "tool_result"]
    assert [e["turn"] for e in events if e["event"] == "usage"] == [1, 2]
    assert events[-1]["event"] == "result" and events[-1]["usage"] == result["usage"]
    # A provider that stays down ends the run with exit 5 after the edit it made survives (undoable).
    git(colorconv_repo, "checkout", "-q", "--", "colorconv.py")
    wrong = call(
        "edit_file",
        {
            "path": "colorconv.py",
            "old_string": PLANTED.strip(),
            "new_string": PLANTED.strip() + "  # not it",
        },
    )
    scenario = Scenario([Turn.tool_calls([wrong], text=PLAN)] + [Fault.server_error(503)] * 10)
    with ScriptedServer(scenario) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
            V4CODE_MAX_RETRIES="1",
            V4CODE_RETRY_MAX_TIME="2",
        )
    assert run.returncode == 5, run.stderr
    result = run.json()
    assert result["status"] == "provider_error" and result["changed_files"] == ["colorconv.py"]
    assert v4code("undo", cwd=colorconv_repo).returncode == 0
    assert PLANTED in (colorconv_repo / "colorconv.py").read_text()


def test_6_git_diff_piped_into_ask_in_a_pipeline(colorconv_repo: Path):
    (colorconv_repo / "colorconv.py").write_text(
        (colorconv_repo / "colorconv.py")
        .read_text()
        .replace("ONE_THIRD = 1.0/3.0", "ONE_THIRD = 0.33")
    )
    review = "The change at colorconv.py:28 loses precision: keep ONE_THIRD = 1.0/3.0."
    scenario = Scenario(
        [Turn.text(review, expect=["-ONE_THIRD = 1.0/3.0", "+ONE_THIRD = 0.33", "review this"])]
    )
    with ScriptedServer(scenario) as srv:
        command = (
            " ".join(cli_command()) + " ask 'review this' --provider openai --output-format json"
        )
        proc = subprocess.run(
            f"git diff | {command} | python -c 'import json,sys; print(json.load(sys.stdin)[\"status\"])'",
            shell=True,
            cwd=colorconv_repo,
            env=cli_env(srv),
            capture_output=True,
            text=True,
            timeout=120,
        )
        srv.assert_done()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    # And on its own: stdout is exactly one JSON object.
    with ScriptedServer(Scenario([Turn.text(review)])) as srv:
        diff = git(colorconv_repo, "diff")
        run = v4code(
            "ask",
            "review this",
            "--provider",
            "openai",
            "--output-format",
            "json",
            cwd=colorconv_repo,
            server=srv,
            stdin=diff,
        )
    assert run.returncode == 0
    result = json.loads(run.stdout)
    assert result["answer"] == review and result["citations"][0]["valid"] is True
