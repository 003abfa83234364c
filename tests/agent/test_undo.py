"""Snapshots, the journal, undo and patches on real git repositories and plain directories."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.undo import (
    ChangeTracker,
    FileChange,
    UndoConflict,
    deferred_interrupt,
    undo_last,
    unified_patch,
)
from tests.conftest import git


def _edit(tracker: ChangeTracker, rel: str, data: bytes | None) -> list[FileChange]:
    """What edit_file/write_file do, as the loop sees it: journal, change the file, observe."""
    tracker.before_tool("write_file", {"path": rel})
    path = tracker.root / rel
    if data is None:
        path.unlink()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tracker.after_tool("write_file", {"path": rel})


def test_snapshot_keeps_uncommitted_and_untracked_work_without_touching_the_index(make_git_repo):
    root = make_git_repo({"a.py": "a = 1\n", "b.py": "b = 1\n", ".gitignore": "*.log\n"})
    (root / "a.py").write_text("a = 2  # user's uncommitted change\n")
    git(root, "add", "a.py")
    (root / "b.py").write_text("b = 2  # unstaged\n")
    (root / "new.py").write_text("n = 1  # untracked\n")
    (root / "debug.log").write_text("ignored\n")
    status_before = git(root, "status", "--porcelain")

    tracker = ChangeTracker(root, "run-1")
    _edit(tracker, "a.py", b"a = 3\n")  # the first edit takes the snapshot

    git(
        root, "diff", "--cached", "--quiet", "HEAD", "--", "b.py", "new.py"
    )  # index untouched there
    assert git(root, "diff", "--cached", "--name-only").split() == ["a.py"]
    ref = tracker.snapshot.ref
    assert ref == "refs/v4code/snapshots/run-1"
    assert git(root, "show", f"{ref}:a.py") == "a = 2  # user's uncommitted change\n"
    assert git(root, "show", f"{ref}:b.py") == "b = 2  # unstaged\n"
    assert git(root, "show", f"{ref}:new.py") == "n = 1  # untracked\n"
    assert "debug.log" not in git(root, "ls-tree", "--name-only", ref)
    assert git(root, "stash", "list") == ""
    tracker.finalize()
    undo_last(root)
    assert git(root, "status", "--porcelain") == status_before


def test_undo_restores_exactly_the_fix_and_keeps_the_users_change(make_git_repo):
    root = make_git_repo(
        {"pkg/mod.py": "x = 1\n", "other.py": "o = 1\n", ".gitignore": "local.cfg\n"}
    )
    (root / "other.py").write_text("o = 2  # the user's work in progress\n")
    (root / "local.cfg").write_bytes(b"secret=1\n")
    os.chmod(root / "pkg/mod.py", 0o755)
    tracker = ChangeTracker(root, "run-2")
    assert [c.path for c in _edit(tracker, "pkg/mod.py", b"x = 2\n")] == ["pkg/mod.py"]
    assert _edit(tracker, "pkg/mod.py", b"x = 2\n") == []  # unchanged content is no change
    _edit(tracker, "deep/new/dir/created.py", b"c = 1\n")
    _edit(tracker, "local.cfg", b"secret=2\n")  # ignored by git: the journal still covers it
    changes = tracker.finalize()
    assert sorted(c.path for c in changes) == ["deep/new/dir/created.py", "local.cfg", "pkg/mod.py"]
    (root / "other.py").write_text("o = 3  # the user kept working after the fix\n")

    result = undo_last(root)
    assert sorted(result.restored) == ["local.cfg", "pkg/mod.py"]
    assert result.deleted == ["deep/new/dir/created.py"]
    assert (root / "pkg/mod.py").read_text() == "x = 1\n"
    assert os.stat(root / "pkg/mod.py").st_mode & 0o777 == 0o755
    assert (root / "local.cfg").read_bytes() == b"secret=1\n"
    assert not (root / "deep").exists()  # the directories the fix created are gone too
    assert (root / "other.py").read_text() == "o = 3  # the user kept working after the fix\n"
    with pytest.raises(UsageError, match="already undone"):
        undo_last(root)


def test_undo_refuses_when_a_fixed_file_changed_again_unless_forced(make_git_repo):
    root = make_git_repo({"a.py": "one\n"})
    tracker = ChangeTracker(root, "run-3")
    _edit(tracker, "a.py", b"two\n")
    tracker.finalize()
    (root / "a.py").write_text("three: edited by the user after the fix\n")
    with pytest.raises(UndoConflict, match="a.py") as exc:
        undo_last(root)
    assert exc.value.exit_code == 2 and "--force" in str(exc.value)
    assert (
        root / "a.py"
    ).read_text() == "three: edited by the user after the fix\n"  # nothing touched
    result = undo_last(root, force=True)
    assert result.restored == ["a.py"] and (root / "a.py").read_text() == "one\n"


def test_plain_directory_gets_a_shadow_snapshot_and_undo(tmp_path: Path):
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a.txt").write_bytes(b"alpha\r\nbeta")  # CRLF, no final newline: bytes come back exact
    tracker = ChangeTracker(root, "run-4")
    _edit(tracker, "a.txt", b"gamma\n")
    _edit(tracker, "b.txt", b"new\n")
    assert tracker.snapshot is not None and tracker.snapshot.shadow
    assert tracker.snapshot.original("a.txt") == (b"alpha\r\nbeta", 0o100644)
    assert not (root / ".git").exists()  # the user's directory never becomes a repository
    tracker.finalize()
    undo_last(root)
    assert (root / "a.txt").read_bytes() == b"alpha\r\nbeta"
    assert not (root / "b.txt").exists()


def test_nothing_to_undo_is_a_clear_usage_error(make_git_repo):
    root = make_git_repo({"a.py": "a\n"})
    with pytest.raises(UsageError, match="nothing to undo"):
        undo_last(root)


def test_paths_outside_the_repository_are_never_journalled(make_git_repo, tmp_path):
    root = make_git_repo({"a.py": "a\n"})
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", root / "link.txt")
    tracker = ChangeTracker(root, "run-5")
    for bad in (
        "../outside.txt",
        str(tmp_path / "outside.txt"),
        "link.txt",
        ".git/config",
        "~/x",
        "a\0b",
        "",
    ):
        assert tracker.safe_rel(bad) is None, bad
    assert tracker.safe_rel("./sub/../a.py") == "a.py"


@pytest.mark.parametrize(
    "before,after",
    [
        (b"a\nb\nc\n", b"a\nB\nc\n"),
        (b"a\r\nb\r\n", b"a\r\nb2\r\n"),  # CRLF kept
        (b"no final newline", b"no final newline, still"),
        (b"x\n", b"x\ny"),  # newline removed at the end
        (None, b"created\nfile\n"),
        (b"deleted\n", None),
        (b"\x00binary\x01" * 50, b"\x00binary\x02" * 70),  # git binary patches
        (None, b"\x89PNG\r\n\x1a\n\x00" + bytes(range(256))),
        (bytes(range(256)), None),
    ],
)
def test_patch_applies_with_git_apply_and_reproduces_the_fix(make_git_repo, before, after):
    files = {"f.txt": before} if before is not None else {"keep.txt": b"k\n"}
    root = make_git_repo(files)
    patch = unified_patch([FileChange("f.txt", before, after, 0o100644, 0o100644)])
    (root.parent / "fix.patch").write_text(patch, encoding="utf-8", newline="")
    git(root, "apply", "--check", str(root.parent / "fix.patch"))
    git(root, "apply", str(root.parent / "fix.patch"))
    if after is None:
        assert not (root / "f.txt").exists()
    else:
        assert (root / "f.txt").read_bytes() == after
    # and `patch -p1` reads it too (no git needed to apply a v4code text patch)
    if before is not None and after is not None and b"\0" not in before + after:
        (root / "f.txt").write_bytes(before)
        subprocess.run(
            ["patch", "-p1", "-s", "-i", str(root.parent / "fix.patch")], cwd=root, check=True
        )
        assert (root / "f.txt").read_bytes() == after


def test_sigint_is_held_until_the_critical_block_ends():
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            reached_end = True
    assert reached_end


def _command(tracker: ChangeTracker, action) -> list[FileChange]:
    """What run_command does, as the loop sees it: stat the tree, run, compare."""
    tracker.before_tool("run_command", {"command": "..."})
    action()
    return tracker.after_tool("run_command", {"command": "..."})


def test_a_chmod_by_a_command_is_a_change_and_undo_restores_the_mode(make_git_repo):
    root = make_git_repo({"run.sh": "#!/bin/sh\n", "lib.py": "x = 1\n"})
    os.chmod(root / "run.sh", 0o755)
    git(root, "add", "run.sh")
    tracker = ChangeTracker(root, "run-chmod")
    changes = _command(tracker, lambda: os.chmod(root / "run.sh", 0o644))
    assert [(c.path, c.before == c.after) for c in changes] == [("run.sh", True)]
    patch = unified_patch(tracker.finalize())
    assert "old mode 100755\nnew mode 100644\n" in patch
    undo_last(root)
    assert os.stat(root / "run.sh").st_mode & 0o777 == 0o755


def test_commands_in_a_subdirectory_find_originals_in_the_snapshot(make_git_repo):
    top = make_git_repo({"README": "top\n", "sub/keep.txt": "keep\n", "sub/gone.txt": "gone\n"})
    sub = top / "sub"
    tracker = ChangeTracker(sub, "run-sub")
    _edit(tracker, "keep.txt", b"edited\n")  # the first change takes the snapshot
    assert tracker.snapshot.original("gone.txt") == (b"gone\n", 0o100644)
    changes = _command(tracker, lambda: (sub / "gone.txt").unlink())
    assert [(c.path, c.kind) for c in changes] == [("gone.txt", "deleted")]
    tracker.finalize()
    assert tracker.unrestorable() == []
    result = undo_last(top)  # from the top of the repository
    assert sorted(result.restored) == ["gone.txt", "keep.txt"] and result.root == str(sub)
    assert (sub / "gone.txt").read_text() == "gone\n" and (sub / "keep.txt").read_text() == "keep\n"


def test_originals_from_the_snapshot_come_back_as_they_were_on_disk(make_git_repo):
    # eol=crlf: `git add` stores LF; the file on disk (and after undo) has CRLF.
    root = make_git_repo({".gitattributes": "*.txt text eol=crlf\n", "w.txt": b"a\r\nb\r\n"})
    tracker = ChangeTracker(root, "run-crlf")
    _command(tracker, lambda: (root / "w.txt").write_bytes(b"changed\r\n"))
    tracker.finalize()
    undo_last(root)
    assert (root / "w.txt").read_bytes() == b"a\r\nb\r\n"
