"""Never losing the user's work, through the real CLI and the scripted server on real repositories:
a dirty index and edits in the fixed file itself, a second fix after an undo and undo twice,
commands that delete, rename, chmod and rewrite binary files in a subdirectory of a repository,
a repository with no commits, a non-UTF-8 source file, and Ctrl-C in the middle of an edit."""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from pathlib import Path

import pytest

from agent.transcript import read_transcript
from tests.agent.conftest import (
    FIX_CALL,
    FIXED,
    OPENAI,
    PLANTED,
    PY,
    TEST_CMD,
    changed_lines,
    colorconv_sources,
    git_state,
    modes,
    tree_state,
)
from tests.conftest import git
from tests.support.cli import start_v4code, v4code
from tests.support.scripted_server import Fault, Scenario, ScriptedServer, Turn, call


def test_dirty_index_and_edits_in_the_fixed_file_survive_fix_undo_fix_undo(colorconv_repo: Path):
    root = colorconv_repo
    module = root / "colorconv.py"
    # Staged work in the very file the fix edits, more unstaged work on top of it, a staged
    # change elsewhere and an untracked file.
    module.write_text(module.read_text().replace("This modules provides", "This module provides"))
    git(root, "add", "colorconv.py")
    module.write_text(module.read_text().replace("ONE_SIXTH = 1.0/6.0", "ONE_SIXTH = 1.0 / 6.0"))
    (root / "README.md").write_text("# colorconv\n\nstaged by the user\n")
    git(root, "add", "README.md")
    (root / "scratch.txt").write_text("untracked user notes\n")
    files_before, git_before = tree_state(root), git_state(root)

    for round_ in (1, 2):  # a second fix after an undo is undone just as well
        with ScriptedServer(
            Scenario([Turn.text("Flip the sign."), Turn.tool_calls([FIX_CALL])])
        ) as srv:
            run = v4code("fix", *OPENAI, *TEST_CMD, "--output-format", "json", cwd=root, server=srv)
            srv.assert_done()
        assert run.returncode == 0, (round_, run.stderr)
        result = run.json()
        assert result["changed_files"] == ["colorconv.py"]
        # The patch is the fix alone, not the user's uncommitted edits of the same file.
        changed = changed_lines(result["patch"])
        assert changed == ["-" + PLANTED.rstrip("\n"), "+" + FIXED.rstrip("\n")]
        text = module.read_text()
        assert FIXED in text and "This module provides" in text and "1.0 / 6.0" in text
        # The fix never stages anything: the index is exactly the user's.
        assert git(root, "ls-files", "-s") == git_before["ls-files -s"]

        undo = v4code("undo", "--output-format", "json", cwd=root)
        assert undo.returncode == 0, undo.stderr
        assert undo.json()["restored"] == ["colorconv.py"]
        assert tree_state(root) == files_before  # byte for byte, the user's edits included
        assert git_state(root) == git_before  # staged stays staged, nothing else moved

    again = v4code("undo", cwd=root)  # undo twice: a clear refusal that changes nothing
    assert again.returncode == 2 and "already undone" in again.stderr
    assert tree_state(root) == files_before and git_state(root) == git_before


def _subdir_repo(make_git_repo) -> Path:
    module, tests = colorconv_sources()
    top = make_git_repo(
        {
            "README.md": "top-level readme\n",
            "pkg/colorconv.py": module,
            "pkg/test_colorconv.py": tests,
            "pkg/tool.sh": "#!/bin/sh\necho tool\n",
            "pkg/data.bin": bytes(range(256)) * 8,
            "pkg/old_name.txt": "to be renamed\n",
            "pkg/obsolete.txt": "to be deleted\n",
            ".gitignore": "__pycache__/\n",
        },
        commit=False,
    )
    os.chmod(top / "pkg/tool.sh", 0o755)
    git(top, "add", "-A")
    git(top, "commit", "-q", "-m", "initial")
    return top


def test_commands_that_delete_rename_chmod_and_rewrite_binaries_in_a_subdirectory(
    make_git_repo, tmp_path: Path
):
    top = _subdir_repo(make_git_repo)
    pkg = top / "pkg"
    (top / "README.md").write_text("top-level readme, edited by the user\n")  # unstaged, elsewhere
    files_before, modes_before = tree_state(top), modes(top)
    rewrite = (
        "d=open('data.bin','rb').read(); open('data.bin','wb').write(d[:100]+b'\\0FIXED'+d[100:])"
    )
    calls = [
        call("run_command", {"command": "mv old_name.txt new_name.txt"}),
        call("run_command", {"command": "rm obsolete.txt"}),
        call("run_command", {"command": "chmod -x tool.sh"}),
        call("run_command", {"command": f"{PY} -c {shlex.quote(rewrite)}"}),
        call("write_file", {"path": "extra/new.py", "content": "NEW = 1\n"}),
        FIX_CALL,
    ]
    patch_file = tmp_path / "fix.patch"
    with ScriptedServer(Scenario([Turn.tool_calls(calls, text="Fix m2 and tidy up.")])) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--yes",
            "--patch",
            str(patch_file),
            "--commit",
            "--output-format",
            "json",
            cwd=pkg,  # the fix runs in a subdirectory of the repository
            server=srv,
        )
        srv.assert_done()
    assert run.returncode == 0, run.stderr
    result = run.json()
    expected = [
        "colorconv.py",
        "data.bin",
        "extra/new.py",
        "new_name.txt",
        "obsolete.txt",
        "old_name.txt",
        "tool.sh",
    ]
    assert result["changed_files"] == expected and result["unrestorable_files"] == []
    assert result["commit"] == git(top, "rev-parse", "HEAD").strip()
    assert sorted(git(top, "show", "--no-renames", "--name-only", "--format=", "HEAD").split()) == [
        f"pkg/{p}" for p in expected
    ]
    assert git(top, "ls-tree", "HEAD", "pkg/tool.sh").startswith("100644 ")  # chmod committed
    assert git(top, "status", "--porcelain").splitlines() == [" M README.md"]  # still the user's

    # The patch reproduces the commit exactly (binary file and mode change included).
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(top), str(clone))
    git(clone, "checkout", "-q", "HEAD~1")
    git(clone, "apply", "--index", "--directory=pkg", str(patch_file))
    assert git(clone, "write-tree").strip() == git(top, "rev-parse", "HEAD^{tree}").strip()

    # `undo` from the top of the repository finds the fix made in pkg/ and restores it all.
    undo = v4code("undo", cwd=top)
    assert undo.returncode == 0, undo.stderr
    assert sorted(undo.stdout.splitlines()) == [  # paths as seen from where undo ran
        "deleted  pkg/extra/new.py (the fix created it)",
        "deleted  pkg/new_name.txt (the fix created it)",
        "restored pkg/colorconv.py",
        "restored pkg/data.bin",
        "restored pkg/obsolete.txt",
        "restored pkg/old_name.txt",
        "restored pkg/tool.sh",
    ]
    assert tree_state(top) == files_before and modes(top) == modes_before
    assert not (pkg / "extra").exists()


def test_a_repository_without_commits(make_git_repo):
    module, tests = colorconv_sources()
    root = make_git_repo(
        {"colorconv.py": module, "test_colorconv.py": tests, ".gitignore": "__pycache__/\n"},
        commit=False,
    )
    git(root, "add", "test_colorconv.py")  # one file staged, one untracked
    files_before, status_before = tree_state(root), git(root, "status", "--porcelain")

    with ScriptedServer(Scenario([Turn.text("never requested")])) as srv:
        run = v4code("fix", *OPENAI, *TEST_CMD, "--commit", cwd=root, server=srv)
        assert srv.steps_used == 0  # refused before the tests or the model ran
    assert run.returncode == 2 and "no commits yet" in run.stderr

    with ScriptedServer(
        Scenario([Turn.text("Flip the sign."), Turn.tool_calls([FIX_CALL])])
    ) as srv:
        run = v4code("fix", *OPENAI, *TEST_CMD, "--output-format", "json", cwd=root, server=srv)
    assert run.returncode == 0, run.stderr
    assert run.json()["snapshot_ref"], "the snapshot works without a HEAD"
    assert v4code("undo", cwd=root).returncode == 0
    assert tree_state(root) == files_before
    assert git(root, "status", "--porcelain") == status_before


LEGACY = (
    "# -*- coding: latin-1 -*-\n"
    "# Auteur : Fran\xe7ois\n"
    "def total(prices):\n"
    "    # somme des \xe9l\xe9ments\n"
    "    return sum(prices) - 1\n"
).encode("latin-1")
LEGACY_TEST = (
    "import unittest\nfrom legacy import total\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_total(self):\n        self.assertEqual(total([1, 2]), 3)\n"
)


def test_a_latin1_source_file_is_fixed_patched_and_undone_byte_for_byte(
    make_git_repo, tmp_path: Path
):
    root = make_git_repo({"legacy.py": LEGACY, "test_legacy.py": LEGACY_TEST})
    edit = call(
        "edit_file",
        {"path": "legacy.py", "old_string": "sum(prices) - 1", "new_string": "sum(prices)"},
    )
    patch_file = tmp_path / "fix.patch"
    with ScriptedServer(Scenario([Turn.text("Drop the - 1."), Turn.tool_calls([edit])])) as srv:
        run = v4code(
            "fix",
            *OPENAI,
            "--test-cmd",
            f"{PY} -m unittest test_legacy",
            "--patch",
            str(patch_file),
            "--output-format",
            "jsonl",
            cwd=root,
            server=srv,
        )
    assert run.returncode == 0, run.stderr
    events = run.events()  # every line is JSON
    assert events[-1]["status"] == "ok" and events[-1]["changed_files"] == ["legacy.py"]
    fixed = LEGACY.replace(b"sum(prices) - 1", b"sum(prices)")
    assert (root / "legacy.py").read_bytes() == fixed  # Latin-1 kept
    read_transcript(Path(events[-1]["transcript"]))  # valid JSONL too
    assert v4code("undo", cwd=root).returncode == 0
    assert (root / "legacy.py").read_bytes() == LEGACY
    git(root, "apply", str(patch_file))  # the patch file holds the exact bytes
    assert (root / "legacy.py").read_bytes() == fixed


# Where the Ctrl-C lands depends on the machine: at once it usually hits the snapshot, after
# 0.08 s the write or its journal, after 0.3 s the test run that follows the edit.
@pytest.mark.parametrize("delay", [0.0, 0.08, 0.3])
def test_ctrl_c_while_a_large_edit_is_written_leaves_whole_files_and_an_undoable_run(
    colorconv_repo: Path, delay: float
):
    root = colorconv_repo
    files_before = tree_state(root)
    big = ("# padding line to make the write take a while\n" * 60_000) + "X = 1\n"  # ~2.8 MB
    write = call("write_file", {"path": "notes.txt", "content": big})
    scenario = Scenario(
        [
            Turn.tool_calls([write], text="plan", arg_chunk_chars=500_000),
            Fault.slow_first_byte(60, Turn.text("too late")),  # the run is still going on
        ]
    )
    with ScriptedServer(scenario) as srv:
        proc = start_v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--output-format",
            "jsonl",
            cwd=root,
            server=srv,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if json.loads(line)["event"] == "tool_call":
                break
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group (git, tests too)
        rest, err = proc.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in lines]  # no line torn by the interrupt
    result = events[-1]
    assert result["event"] == "result" and result["status"] == "interrupted"
    notes = (root / "notes.txt").read_bytes()
    assert notes in (files_before["notes.txt"], big.encode())  # old or new, never half
    assert result["changed_files"] == (["notes.txt"] if notes != files_before["notes.txt"] else [])
    assert [p.name for p in root.rglob("*") if "v4tmp" in p.name] == []
    transcript = read_transcript(Path(result["transcript"]))
    assert transcript[-1]["event"] == "result"
    undo = v4code("undo", cwd=root)
    if result["changed_files"]:
        assert undo.returncode == 0, undo.stderr
    else:  # interrupted before anything changed: there is nothing to undo either way
        assert undo.returncode == 2 or "nothing to restore" in undo.stdout, undo.stderr
    assert tree_state(root) == files_before


def test_ctrl_c_during_a_command_that_changed_files_keeps_the_run_undoable(colorconv_repo: Path):
    root = colorconv_repo
    files_before = tree_state(root)
    script = (
        "open('notes.txt', 'w').write('rewritten by a command\\n'); "
        "open('made.txt', 'w').write('new\\n'); import time; time.sleep(60)"
    )
    slow = call("run_command", {"command": f"{PY} -c {shlex.quote(script)}"})
    with ScriptedServer(Scenario([Turn.tool_calls([slow], text="plan")])) as srv:
        proc = start_v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--yes",
            "--output-format",
            "json",
            cwd=root,
            server=srv,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not (root / "made.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # the command dies half-way through its work
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["status"] == "interrupted"
    assert result["changed_files"] == ["made.txt", "notes.txt"]  # what it did before it died
    assert v4code("undo", cwd=root).returncode == 0
    assert tree_state(root) == files_before


def test_ctrl_c_after_the_run_ended_still_gives_one_whole_result(colorconv_repo: Path, tmp_path):
    # The run stops at --max-iterations 1 right after the test run that follows the command;
    # its wrap-up (journal, the patch of a 400,000-line file, the result) takes a moment: the
    # Ctrl-C lands there.
    script = "open('made.txt', 'w').writelines(f'line {i}\\n' for i in range(400_000))"
    make = call("run_command", {"command": f"{PY} -c {shlex.quote(script)}"})
    patch_file = tmp_path / "fix.patch"
    with ScriptedServer(Scenario([Turn.tool_calls([make], text="plan")])) as srv:
        proc = start_v4code(
            "fix",
            *OPENAI,
            *TEST_CMD,
            "--yes",
            "--max-iterations",
            "1",
            "--patch",
            str(patch_file),
            "--output-format",
            "jsonl",
            cwd=colorconv_repo,
            server=srv,
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            event = json.loads(line)
            if event["event"] == "test_run" and event["phase"] == "after":
                break
        time.sleep(0.3)  # into the wrap-up (~0.8 s here), past the end of the loop
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    results = [e for e in map(json.loads, lines + rest.splitlines()) if e["event"] == "result"]
    assert len(results) == 1, err  # one result, and it is the whole object
    result = results[0]
    assert result["changed_files"] == ["made.txt"] and result["patch_file"] == str(patch_file)
    assert proc.returncode == {"tests_failing": 3, "interrupted": 130}[result["status"]]
    git(colorconv_repo, "apply", "--check", "-R", str(patch_file))  # the patch is whole
