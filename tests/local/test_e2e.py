"""`v4code ask` and `v4code fix --provider local` through the whole stack, in subprocesses, on a
tiny random checkpoint written by `v4code model init`.

Random weights produce noise, so the runs are steered by the test-only forcing processor
(tests/local/forcing.py, plugged in through $V4CODE_LOCAL_LOGITS_PROCESSOR): the engine still
tokenizes, prefills, decodes, parses DSML, runs the tool, re-encodes the result and continues on
the reused cache; only each token's choice is dictated. The turn events of --output-format jsonl
carry the provider's per-turn statistics, which the assertions read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.providers import v4_format as fmt
from tests.local.forcing import script_ids
from tests.support.cli import v4code

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
D = "｜DSML｜"
EOS = "<｜end▁of▁sentence｜>"
CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TESTS = (
    "import unittest\n\nfrom calc import add, mul\n\n\nclass T(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n\n\n"
    'if __name__ == "__main__":\n    unittest.main()\n'
)
# filler so the packed repository is long enough to be worth storing (> 1024 tokens)
NOTES = "".join(
    f"- note {i}: the calculator keeps integers exact; see calc.py.\n" for i in range(120)
)


def _call(name: str, **params: str) -> str:
    body = "".join(
        f'<{D}parameter name="{k}" string="true">{v}</{D}parameter>\n' for k, v in params.items()
    )
    return (
        f'\n\n<{D}tool_calls>\n<{D}invoke name="{name}">\n{body}</{D}invoke>\n</{D}tool_calls>{EOS}'
    )


READ = "I should read calc.py.</think>" + _call("read_file", path="calc.py")
ANSWER = "It subtracts.</think>`add` returns `a - b` instead of `a + b` (calc.py:2)." + EOS
EDIT = "Swap the operator.</think>Fix add." + _call(
    "edit_file", path="calc.py", old_string="a - b", new_string="a + b"
)


@pytest.fixture
def calc_repo(make_git_repo) -> Path:
    return make_git_repo({"calc.py": CALC, "test_calc.py": TESTS, "NOTES.md": NOTES})


def run(
    args: list[str], tmp_path: Path, scripts: list[str] | None, stdin: str | None = None, **env: str
) -> tuple[int, list[dict], str]:
    env = dict(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **env)
    if scripts is not None:
        script = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.json"
        script.write_text(json.dumps(scripts), encoding="utf-8")
        env.update(
            V4CODE_LOCAL_LOGITS_PROCESSOR="tests.local.forcing:from_env",
            V4CODE_TEST_FORCE_SCRIPT=str(script),
            V4CODE_TEST_FORCE_LOG=str(tmp_path / "forced.log"),
        )
    proc = v4code(*args, "--output-format", "jsonl", cwd=ROOT, stdin=stdin, timeout=600, **env)
    return proc.returncode, proc.events(), proc.stderr


def on_local(repo: Path, checkpoint: Path) -> list[str]:
    """The flags that run a command on `repo` with the local provider and `checkpoint`."""
    return ["--repo", str(repo), "--provider", "local", "--model-path", str(checkpoint)]


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e.get("event") == kind]


def test_ask_runs_a_tool_and_answers_on_the_reused_cache(checkpoint, calc_repo, tmp_path, tok):
    code, events, err = run(
        [
            "ask",
            "Why does test_add fail?",
            *on_local(calc_repo, checkpoint),
        ],
        tmp_path,
        [READ, ANSWER],
    )
    assert code == 0, err[-3000:]
    turns = of(events, "turn")
    assert len(turns) == 2
    first, second = (t["reply"]["_v4_stats"] for t in turns)
    # tokenized and prefilled: the whole first prompt, nothing cached yet
    assert first["prefilled"] == first["prompt_tokens"] == turns[0]["usage"]["input_tokens"] > 1000
    # decoded: exactly the scripted completion (the call block ends the turn; EOS is implied)
    assert turns[0]["reply"]["_v4_ids"] == script_ids(READ, tok)
    # DSML parsed into the same call objects as the OpenAI path, and the tool ran
    [call] = of(events, "tool_call")
    assert (call["name"], call["arguments"]) == ("read_file", {"path": "calc.py"})
    [result] = of(events, "tool_result")
    assert result["ok"] and "return a - b" in result["text"]
    # re-encoded and continued on the reused cache: turn 2 prefilled only the new tokens,
    # which include the tool's output
    assert second["reused_live"] == first["prompt_tokens"] + first["generated"] - 1
    assert second["prefilled"] == second["prompt_tokens"] - second["reused_live"]
    assert tok.count(result["text"]) < second["prefilled"] < 400
    assert turns[1]["usage"]["cached_input_tokens"] == second["reused_live"]
    # ... and what it prefilled is exactly the V4 rendering of the conversation after the cached
    # part: the replayed completion, then the tool result as a <tool_result> block
    conversation = turns[0]["new_messages"] + [turns[0]["reply"]] + turns[1]["new_messages"]
    prompt = fmt.to_ids(fmt.render(conversation, _schemas("ask", calc_repo)), tok)
    assert len(prompt) == second["prompt_tokens"]
    assert prompt[: first["prompt_tokens"]] == _first_prompt(turns[0], calc_repo, tok)
    assert "<tool_result>" + result["text"] in tok.decode(prompt[second["reused_live"] :])
    final = of(events, "result")[-1]
    assert (
        final["status"] == "ok"
        and final["answer"] == "`add` returns `a - b` instead of `a + b` (calc.py:2)."
    )
    assert (
        final["usage"]["cached_input_tokens"] == second["reused_live"]
        and final["usage"]["cost_usd"] == 0
    )
    forced = [json.loads(line) for line in (tmp_path / "forced.log").read_text().splitlines()]
    assert forced == [{"turn": 0, "scripted": True}, {"turn": 1, "scripted": True}]


def test_fix_edits_the_file_and_the_tests_pass(checkpoint, calc_repo, tmp_path):
    code, events, err = run(
        [
            "fix",
            *on_local(calc_repo, checkpoint),
            "--test-cmd",
            f"{sys.executable} test_calc.py",
        ],
        tmp_path,
        [READ, EDIT],
    )
    assert code == 0, err[-3000:]
    assert (calc_repo / "calc.py").read_text() == CALC.replace("a - b", "a + b")
    turns = of(events, "turn")
    assert [c["function"]["name"] for t in turns for c in t["reply"].get("tool_calls", [])] == [
        "read_file",
        "edit_file",
    ]
    second = turns[1]["reply"]["_v4_stats"]
    assert (
        second["reused_live"] > 0
        and second["prefilled"] == second["prompt_tokens"] - second["reused_live"]
    )
    final = of(events, "result")[-1]
    assert final["status"] == "ok" and final["changed_files"] == ["calc.py"]


def _schemas(kind: str, repo: Path) -> list[dict]:
    from tools import build_tools
    from tools.base import ToolContext

    return [t.schema() for t in build_tools(kind, ToolContext(root=repo))]


def _first_prompt(turn: dict, repo: Path, tok) -> list[int]:
    return fmt.to_ids(fmt.render(turn["new_messages"], _schemas("ask", repo)), tok)


def test_second_ask_reuses_the_persisted_prefix(checkpoint, calc_repo, tmp_path, tok):
    args = [*on_local(calc_repo, checkpoint), "--max-turns", "1"]
    # the first run reviews a long pasted log (`... | v4code ask`): its prompt ends far past
    # the repository; the second asks something else
    log = "".join(
        f"2025-01-01 12:00:{i % 60:02d} worker {i} finished job {i * 7}\n" for i in range(250)
    )
    code1, events1, err1 = run(["ask", "Is this log fine?", *args], tmp_path, [ANSWER], stdin=log)
    code2, events2, err2 = run(["ask", "What does mul do?", *args], tmp_path, [ANSWER])
    assert code1 == 0 and code2 == 0, err1[-2000:] + err2[-2000:]
    turn1, turn2 = of(events1, "turn")[0], of(events2, "turn")[0]
    first, second = turn1["reply"]["_v4_stats"], turn2["reply"]["_v4_stats"]
    # the first run stored one state: at the end of the packed repository (the system prompt
    # alone is under the 1,024 tokens worth storing)
    [stored] = first["saved_prefixes"]
    prompt1 = _first_prompt(turn1, calc_repo, tok)
    repository = turn1["new_messages"][1]
    end = fmt.to_ids(
        fmt.render(
            [
                turn1["new_messages"][0],
                dict(repository, content=repository["content"][: repository[fmt.CACHE_BREAKPOINT]]),
            ],
            _schemas("ask", calc_repo),
        ),
        tok,
    )
    repository_end = next(i for i, (a, b) in enumerate(zip(prompt1, end, strict=False)) if a != b)
    assert stored == repository_end // 128 * 128
    assert first["reused_disk"] == 0 and stored > 1000
    assert first["prompt_tokens"] - stored > tok.count(log) > 4096
    # the second run loaded it and prefilled only the rest: the question
    assert second["reused_disk"] == stored and second["saved_prefixes"] == []
    assert second["prefilled"] == second["prompt_tokens"] - stored < 300
    assert turn2["usage"]["cached_input_tokens"] == stored


def test_unsteered_noise_ends_cleanly(checkpoint, calc_repo, tmp_path):
    code, events, err = run(
        [
            "ask",
            "Why does test_add fail?",
            *on_local(calc_repo, checkpoint),
            "--max-turns",
            "2",
        ],
        tmp_path,
        None,
        V4CODE_MAX_OUTPUT_TOKENS="24",
    )
    final = of(events, "result")[-1]
    expected = {"ok": 0, "limit_reached": 4}
    assert final["status"] in expected, final
    assert code == expected[final["status"]], err[-2000:]
    assert "Traceback" not in err
    if final["status"] == "limit_reached":  # a clear reason, in the result and on stderr
        assert final["limit"] in ("turns", "stuck") and final["error"]
        assert final["error"] in err
    for turn in of(events, "turn"):
        assert turn["reply"]["_v4_stats"]["generated"] <= 24
