"""agent.fileio.atomic_write: the one writer behind the tools, undo, --patch, --output and the
caches. (The tools' tests add a real mid-write failure under RLIMIT_FSIZE.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.fileio import atomic_write


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_new_file_gets_the_umask_default_and_its_parents(tmp_path: Path, umask_027):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write(target, b"hello\n")
    assert target.read_bytes() == b"hello\n"
    assert mode_of(target) == 0o640  # 0o666 & ~0o027, not a temp file's 0o600


def test_existing_mode_is_kept_and_an_explicit_mode_wins(tmp_path: Path):
    target = tmp_path / "tool.sh"
    target.write_bytes(b"old")
    target.chmod(0o751)
    atomic_write(target, memoryview(b"new"), durable=False)
    assert (target.read_bytes(), mode_of(target)) == (b"new", 0o751)
    atomic_write(target, b"private", mode=0o600)
    assert (target.read_bytes(), mode_of(target)) == (b"private", 0o600)


def test_a_failed_replace_leaves_the_target_and_no_temp_file(tmp_path: Path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(OSError):
        atomic_write(target, b"data")  # os.replace cannot put a file over a directory
    assert (target / "inside").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
