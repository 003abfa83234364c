"""write_file, and the atomic write both mutating tools use."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def test_create_with_parent_directories(repo: Path, toolbox):
    obs = toolbox(repo)("write_file", path="pkg/sub/mod.py", content="X = 1\n")
    assert obs.ok, obs.text
    assert (repo / "pkg/sub/mod.py").read_bytes() == b"X = 1\n"
    assert obs.text == "Created pkg/sub/mod.py (1 lines, 6 bytes)."
    assert obs.data["created"] is True and obs.data["changed_paths"] == ["pkg/sub/mod.py"]
    assert obs.data["diff"].startswith("--- /dev/null\n+++ b/pkg/sub/mod.py\n")
    # A new file gets the usual permissions (umask), not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((repo / "pkg/sub/mod.py").stat().st_mode) == 0o666 & ~umask


def test_overwrite_keeps_crlf_bom_and_mode(repo: Path, toolbox):
    target = repo / "win.txt"
    target.write_bytes(b"\xef\xbb\xbfold\r\ntext\r\n")
    target.chmod(0o640)
    obs = toolbox(repo)("write_file", path="win.txt", content="new\ncontent\n")
    assert obs.ok and obs.text.startswith("Overwrote win.txt")
    assert target.read_bytes() == b"\xef\xbb\xbfnew\r\ncontent\r\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert "-old\n-text\n+new\n+content\n" in obs.data["diff"]


def test_overwrite_legacy_encoding_falls_back_to_utf8_when_needed(repo: Path, toolbox):
    target = repo / "latin.txt"
    target.write_bytes("café\n".encode("cp1252"))
    tools = toolbox(repo)
    assert tools("write_file", path="latin.txt", content="crème\n").ok
    assert target.read_bytes() == "crème\n".encode("cp1252")
    obs = tools("write_file", path="latin.txt", content="日本\n")
    assert obs.ok and "written as UTF-8" in obs.text
    assert target.read_bytes() == "日本\n".encode()


def test_refusals(repo: Path, toolbox, tmp_path: Path):
    tools = toolbox(repo)
    assert "inside .git" in tools("write_file", path=".git/hooks/post-checkout", content="x").text
    assert "outside" in tools("write_file", path="../evil.txt", content="x").text
    assert "absolute" in tools("write_file", path=str(tmp_path / "x.txt"), content="x").text
    assert "is a directory" in tools("write_file", path="src", content="x").text
    (repo / "file").write_text("x")
    obs = tools("write_file", path="file/child.txt", content="x")
    assert not obs.ok and "cannot create the directory" in obs.text
    assert not (repo / ".git/hooks/post-checkout").exists() and not (tmp_path / "evil.txt").exists()


def test_write_through_symlinked_directory_out_is_refused(repo: Path, toolbox, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, repo / "out")
    obs = toolbox(repo)("write_file", path="out/planted.sh", content="echo pwned\n")
    assert not obs.ok and "outside the repository" in obs.text
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("tool", ["write_file", "edit_file"])
def test_a_failure_mid_write_leaves_the_original_intact(repo: Path, tool: str):
    """A real failure in the middle of writing (the file-size limit hit after 64 KiB, as a full
    disk would) must leave the original bytes and no temporary file behind."""
    original = "keep me\n" * 100
    (repo / "data.txt").write_text(original)
    if tool == "write_file":
        args = {"path": "data.txt", "content": "x" * 1_000_000}
    else:
        args = {"path": "data.txt", "old_string": original, "new_string": "y" * 1_000_000}
    script = textwrap.dedent(
        f"""
        import json, resource, signal, sys
        from pathlib import Path
        from tools import build_tools, dispatch
        from tools.base import ToolContext
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        tools = build_tools("fix", ToolContext(root=Path({str(repo)!r})))
        obs = dispatch(tools, {tool!r}, json.loads(sys.stdin.read()))
        print(json.dumps({{"ok": obs.ok, "text": obs.text}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    result = json.loads(proc.stdout)
    assert not result["ok"] and "File too large" in result["text"]
    assert (repo / "data.txt").read_text() == original
    assert sorted(os.listdir(repo)) == sorted(
        [".git", ".gitignore", "README.md", "src", "data.txt"]
    )
