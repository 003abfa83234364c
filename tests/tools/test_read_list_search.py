"""read_file, list_files and search on real repositories."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from tools import read_file as read_file_module
from tools.search import MAX_PER_FILE, MAX_RESULTS


def test_read_file_numbers_lines(repo: Path, toolbox):
    obs = toolbox(repo)("read_file", path="src/app.py")
    assert obs.ok
    lines = obs.text.split("\n")
    assert lines[0] == "src/app.py (6 lines)"
    assert lines[1].split("\t") == ["     1", "def add(a, b):"]
    assert lines[6].split("\t") == ["     6", "    return a - b"]


def test_read_file_range_and_paging_hint(repo: Path, toolbox, monkeypatch):
    (repo / "big.txt").write_text("".join(f"line {n}\n" for n in range(1, 2501)))
    tools = toolbox(repo)
    obs = tools("read_file", path="big.txt")
    assert "big.txt (2500 lines)" in obs.text
    assert "\tline 1000\n" in obs.text and "line 1001" not in obs.text
    assert obs.text.endswith(
        "[showing lines 1-1000 of 2500; call read_file again with start_line=1001 to continue]"
    )
    obs = tools("read_file", path="big.txt", start_line=2400)
    assert "  2400\tline 2400" in obs.text and obs.text.endswith(
        "[showing lines 2400-2500 of 2500]"
    )
    obs = tools("read_file", path="big.txt", start_line=10, end_line=12)
    assert [ln.split("\t")[1] for ln in obs.text.split("\n")[1:4]] == [
        "line 10",
        "line 11",
        "line 12",
    ]
    # A page is also bounded in characters (long lines).
    monkeypatch.setattr(read_file_module, "PAGE_CHARS", 100)
    obs = tools("read_file", path="big.txt")
    assert "call read_file again with start_line=" in obs.text
    assert obs.data["end_line"] < 20


def test_read_file_errors_are_actionable(repo: Path, toolbox):
    tools = toolbox(repo)
    obs = tools("read_file", path="src/ap.py")
    assert not obs.ok and "did you mean: src/app.py" in obs.text
    obs = tools("read_file", path="app.py")
    assert "did you mean: src/app.py" in obs.text
    obs = tools("read_file", path="src")
    assert not obs.ok and "is a directory; use list_files" in obs.text
    obs = tools("read_file", path="src/app.py", start_line=50)
    assert not obs.ok and "past the end of src/app.py (6 lines)" in obs.text
    obs = tools("read_file", path="src/app.py", start_line=4, end_line=2)
    assert not obs.ok and "before start_line" in obs.text


def test_read_file_refuses_binary_and_decodes_legacy_text(repo: Path, toolbox):
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (repo / "latin.txt").write_bytes("café crème\n".encode("cp1252"))
    (repo / "utf16.txt").write_bytes("hello\nwörld\n".encode("utf-16"))
    tools = toolbox(repo)
    obs = tools("read_file", path="logo.png")
    assert not obs.ok and "binary file" in obs.text
    obs = tools("read_file", path="latin.txt")
    assert obs.ok and "café crème" in obs.text and "encoding cp1252" in obs.text
    obs = tools("read_file", path="utf16.txt")
    assert obs.ok and "wörld" in obs.text and "utf-16" in obs.text


def test_read_file_shows_crlf_and_missing_final_newline(repo: Path, toolbox):
    (repo / "win.txt").write_bytes(b"a\r\nb\r\nc")
    obs = toolbox(repo)("read_file", path="win.txt")
    assert "(3 lines; CRLF line endings; no newline at end of file)" in obs.text
    assert "\r" not in obs.text


def test_list_files_respects_ignore_rules(repo: Path, toolbox):
    (repo / "build").mkdir()
    (repo / "build/out.js").write_text("x")
    (repo / "debug.log").write_text("x")
    (repo / "node_modules/pkg").mkdir(parents=True)
    (repo / "node_modules/pkg/index.js").write_text("x")
    (repo / ".v4codeignore").write_text("secret_dir/\n")
    (repo / "secret_dir").mkdir()
    (repo / "secret_dir/a.py").write_text("x")
    (repo / "src/new_untracked.py").write_text("x")
    tools = toolbox(repo)
    obs = tools("list_files")
    listed = obs.text.split("\n")[1:]
    assert "src/app.py" in listed and "src/new_untracked.py" in listed
    for hidden in ("build/out.js", "debug.log", "node_modules/pkg/index.js", "secret_dir/a.py"):
        assert hidden not in listed
    assert not any(p.startswith(".git/") for p in listed)
    obs = tools("list_files", path="build")
    assert not obs.ok and "excluded by the repository's ignore rules" in obs.text


def test_list_files_path_and_glob(repo: Path, toolbox):
    tools = toolbox(repo)
    assert tools("list_files", path="src/util").text.split("\n")[1:] == ["src/util/strings.py"]
    assert tools("list_files", pattern="*.py").text.split("\n")[1:] == [
        "src/app.py",
        "src/util/strings.py",
    ]
    assert tools("list_files", pattern="src/*.py").text.split("\n")[1:] == ["src/app.py"]
    assert tools("list_files", pattern="src/**/*.py").data["count"] == 2
    assert tools("list_files", pattern="*.{md,py}").data["count"] == 3
    obs = tools("list_files", pattern="*.rs")
    assert obs.ok and obs.text == "No files matching '*.rs' in the repository."
    assert not tools("list_files", path="nope").ok
    assert "outside" in tools("list_files", path="..").text


def test_list_files_caps_long_listings(repo: Path, toolbox):
    (repo / "many").mkdir()
    for n in range(620):
        (repo / f"many/f{n:04}.txt").write_text("x")
    obs = toolbox(repo)("list_files")
    assert obs.data == {"count": 624, "shown": 500}
    assert (
        "[... 124 more files not shown (in many/ (122), src/ (2)); narrow the listing" in obs.text
    )


def test_search_literal_by_default(repo: Path, toolbox):
    (repo / "src/regexy.py").write_text("x = a.b(c)\nx = aXb(c)\n")
    tools = toolbox(repo)
    obs = tools("search", pattern="return a")
    assert obs.text.split("\n") == [
        "2 matching lines in 1 files:",
        "src/app.py:2:     return a + b",
        "src/app.py:6:     return a - b",
    ]
    obs = tools("search", pattern="a.b(c)")
    assert obs.text.split("\n")[1:] == ["src/regexy.py:1: x = a.b(c)"]
    obs = tools("search", pattern=r"a.b\(c\)", regex=True)
    assert obs.data["matched_lines"] == 2


def test_search_path_glob_and_errors(repo: Path, toolbox):
    tools = toolbox(repo)
    assert tools("search", pattern="def", path="src/util").data["matched_files"] == 1
    assert tools("search", pattern="def", path="src/app.py").data["matched_lines"] == 2
    assert tools("search", pattern="demo", glob="*.py").data["matched_lines"] == 0
    assert tools("search", pattern="demo", glob="*.md").data["matched_lines"] == 1
    obs = tools("search", pattern="def (", regex=True)
    assert not obs.ok and "invalid regular expression" in obs.text
    obs = tools("search", pattern="nothing-like-this")
    assert obs.ok and "No matches" in obs.text and "literal and case-sensitive" in obs.text
    assert not tools("search", pattern="").ok
    assert "outside" in tools("search", pattern="x", path="../").text


def test_search_skips_ignored_and_binary_files(repo: Path, toolbox):
    (repo / "debug.log").write_text("needle\n")
    (repo / "blob.bin").write_bytes(b"\x00\x01needle\x00")
    (repo / "notes.txt").write_text("a needle here\n")
    obs = toolbox(repo)("search", pattern="needle")
    assert obs.text.split("\n")[1:] == ["notes.txt:1: a needle here"]


def test_search_caps_results_and_counts_the_rest(repo: Path, toolbox):
    for n in range(12):
        (repo / f"f{n:02}.txt").write_text("hit\n" * 30)
    obs = toolbox(repo)("search", pattern="hit")
    shown = [ln for ln in obs.text.split("\n") if ln.startswith("f")]
    assert len(shown) == MAX_RESULTS
    assert sum(1 for ln in shown if ln.startswith("f00.txt:")) == MAX_PER_FILE
    assert obs.data["matched_lines"] == 360
    cut = 360 - MAX_RESULTS
    assert f"[... {cut} more matching lines not shown" in obs.text


def test_search_long_lines_are_clipped_around_the_match(repo: Path, toolbox):
    (repo / "min.js").write_text("a" * 5000 + "NEEDLE" + "b" * 5000 + "\n")
    obs = toolbox(repo)("search", pattern="NEEDLE")
    line = obs.text.split("\n")[1]
    assert "NEEDLE" in line and len(line) < 400


def test_search_finds_text_in_non_utf8_files(repo: Path, toolbox):
    (repo / "legacy.txt").write_bytes("prix: 5€ café\n".encode("cp1252"))
    obs = toolbox(repo)("search", pattern="café")
    assert obs.text.split("\n")[1:] == ["legacy.txt:1: prix: 5€ café"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("regex", [False, True])
def test_search_finds_text_in_utf16_and_utf32_files(repo: Path, toolbox, encoding, regex):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(
        encoding, codecs.BOM_UTF32_LE if encoding == "utf-32-le" else codecs.BOM_UTF32_BE
    )
    (repo / "wide.txt").write_bytes(bom + "first\nneedle_here = 1\n".encode(encoding))
    obs = toolbox(repo)("search", pattern="needle_here", regex=regex)
    assert obs.text.split("\n")[1:] == ["wide.txt:2: needle_here = 1"]


def test_files_the_pack_holds_back_by_content_are_not_shown_either(repo: Path, toolbox):
    # A planted cloud key (the packer's content rules), deep in a large file, and a clean twin.
    key = "AKIA" + "Q7RZ2MX4WB9KD3HN"
    body = "".join(f"VALUE_{i} = {i}\n" for i in range(8000))  # ~100 KB: past any head-only check
    (repo / "settings.py").write_text(body + f"aws_id = '{key}'\n")
    (repo / "clean.py").write_text(body)
    tools = toolbox(repo)
    obs = tools("read_file", path="settings.py")
    assert not obs.ok and "looks like it holds secrets" in obs.text and key not in obs.text
    assert tools("read_file", path="clean.py").ok
    obs = tools("edit_file", path="settings.py", old_string="VALUE_1 = 1\n", new_string="")
    assert not obs.ok and key not in obs.text
    assert key in (repo / "settings.py").read_text()
    obs = tools("search", pattern="VALUE_7999 ")
    assert obs.text.split("\n")[1:] == ["clean.py:8000: VALUE_7999 = 7999"]
    assert tools("search", pattern="AKIA").data["matched_lines"] == 0


def test_read_only_tools_never_write(repo: Path, toolbox):
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if ".git" not in p.parts}
    tools = toolbox(repo)
    tools("read_file", path="src/app.py")
    tools("list_files")
    tools("search", pattern="def")
    after = {p: p.stat().st_mtime_ns for p in repo.rglob("*") if ".git" not in p.parts}
    assert before == after


def test_secret_files_are_not_shown_to_the_model(repo: Path, toolbox):
    (repo / ".env").write_text("OPENAI_API_KEY=sk-canary-123\n")
    (repo / "deploy.pem").write_text("-----BEGIN PRIVATE KEY-----\ncanary\n")
    (repo / ".npmrc").write_text("//registry.npmjs.org/:_authToken=npm-canary\n")
    (repo / "plain/.npmrc").parent.mkdir()
    (repo / "plain/.npmrc").write_text("save-exact=true\n")
    tools = toolbox(repo)
    for path in (".env", "deploy.pem", ".npmrc"):
        obs = tools("read_file", path=path)
        assert not obs.ok and "looks like it holds secrets" in obs.text
        assert "canary" not in obs.text
    assert tools("read_file", path="plain/.npmrc").ok
    obs = tools("edit_file", path=".env", old_string="sk-canary-123", new_string="x")
    assert not obs.ok and "canary" not in obs.text
    assert "sk-canary-123" in (repo / ".env").read_text()
    assert tools("search", pattern="canary").data["matched_lines"] == 0
    assert ".env" not in tools("list_files").text.split("\n")
