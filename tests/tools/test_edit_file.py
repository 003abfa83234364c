"""edit_file: exact and whitespace-tolerant matching, helpful failures, faithful writes."""

from __future__ import annotations

import codecs
import os
import stat
import subprocess
from pathlib import Path

import pytest

PY = (
    "class Greeter:\n"
    "    def __init__(self, name):\n"
    "        self.name = name\n"
    "\n"
    "    def greet(self):\n"
    "        if self.name:\n"
    "            return 'hello ' + self.name\n"
    "        return 'hello'\n"
)


@pytest.fixture
def tools(repo: Path, toolbox):
    (repo / "greet.py").write_text(PY)
    return toolbox(repo)


def read(repo: Path, rel: str) -> bytes:
    return (repo / rel).read_bytes()


def test_exact_match_and_diff(repo: Path, tools):
    obs = tools(
        "edit_file",
        path="greet.py",
        old_string="            return 'hello ' + self.name\n",
        new_string="            return f'hello {self.name}!'\n",
    )
    assert obs.ok, obs.text
    assert obs.text.startswith("Edited greet.py: replaced 1 occurrence at line 7.")
    assert "     7\t            return f'hello {self.name}!'" in obs.text
    assert (
        read(repo, "greet.py")
        == PY.replace("'hello ' + self.name", "f'hello {self.name}!'").encode()
    )
    assert obs.data["path"] == "greet.py" and obs.data["changed_paths"] == ["greet.py"]
    assert obs.data["match"] == "exact"
    assert (
        "-            return 'hello ' + self.name\n+            return f'hello {self.name}!'\n"
        in obs.data["diff"]
    )
    # The diff is a real patch: git applies it in reverse to get the original back.
    subprocess.run(["git", "apply", "-R"], input=obs.data["diff"].encode(), cwd=repo, check=True)
    assert read(repo, "greet.py") == PY.encode()


def test_wrong_indentation_is_matched_and_new_string_reindented(repo: Path, tools):
    # The model dropped the method's indentation (a common slip when copying from a diff).
    obs = tools(
        "edit_file",
        path="greet.py",
        old_string="def greet(self):\n    if self.name:\n        return 'hello ' + self.name",
        new_string=(
            "def greet(self, excited=False):\n"
            "    if self.name:\n"
            "        suffix = '!' if excited else ''\n"
            "        return 'hello ' + self.name + suffix"
        ),
    )
    assert obs.ok, obs.text
    assert obs.data["match"] == "whitespace" and "re-indented" in obs.text
    assert read(repo, "greet.py").decode() == PY.replace(
        "    def greet(self):\n        if self.name:\n            return 'hello ' + self.name\n",
        "    def greet(self, excited=False):\n"
        "        if self.name:\n"
        "            suffix = '!' if excited else ''\n"
        "            return 'hello ' + self.name + suffix\n",
    )


def test_trailing_blanks_and_surrounding_blank_lines_are_tolerated(repo: Path, toolbox):
    (repo / "t.py").write_text("a = 1   \nb = 2\t\nc = 3\n")
    obs = toolbox(repo)(
        "edit_file",
        path="t.py",
        old_string="\n\na = 1\nb = 2\n\n",
        new_string="\n\na = 10\nb = 20\n\n",
    )
    assert obs.ok, obs.text
    assert read(repo, "t.py") == b"a = 10\nb = 20\nc = 3\n"


def test_tabs_in_file_spaces_from_model(repo: Path, toolbox):
    (repo / "main.go").write_text("func f() {\n\tif x {\n\t\treturn 1\n\t}\n\treturn 2\n}\n")
    obs = toolbox(repo)(
        "edit_file",
        path="main.go",
        old_string="    if x {\n        return 1\n    }",
        new_string="    if x {\n        if y {\n            return 3\n        }\n        return 1\n    }",
    )
    assert obs.ok, obs.text
    assert read(repo, "main.go") == (
        b"func f() {\n\tif x {\n\t\tif y {\n\t\t\treturn 3\n\t\t}\n\t\treturn 1\n\t}\n\treturn 2\n}\n"
    )


def test_line_number_prefixes_copied_from_read_file_are_ignored(repo: Path, tools):
    obs = tools(
        "edit_file",
        path="greet.py",
        old_string="     8\t        return 'hello'",
        new_string="     8\t        return 'hi'",
    )
    assert obs.ok, obs.text
    assert b"        return 'hi'\n" in read(repo, "greet.py")


def test_crlf_file_keeps_crlf(repo: Path, toolbox):
    (repo / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    obs = toolbox(repo)(
        "edit_file", path="win.txt", old_string="two\nthree", new_string="2\n2.5\n3"
    )
    assert obs.ok, obs.text
    assert read(repo, "win.txt") == b"one\r\n2\r\n2.5\r\n3\r\n"


def test_crlf_file_tolerant_match_keeps_crlf(repo: Path, toolbox):
    (repo / "win.py").write_bytes(b"def f():\r\n    return 1\r\n")
    obs = toolbox(repo)(
        "edit_file", path="win.py", old_string="def f():\nreturn 1", new_string="def f():\nreturn 2"
    )
    assert obs.ok, obs.text
    assert read(repo, "win.py") == b"def f():\r\n    return 2\r\n"


def test_mixed_line_endings_only_change_the_edited_lines(repo: Path, toolbox):
    (repo / "mixed.txt").write_bytes(b"a\r\nb\nc\r\nd\n")
    obs = toolbox(repo)("edit_file", path="mixed.txt", old_string="b", new_string="B")
    assert obs.ok
    assert read(repo, "mixed.txt") == b"a\r\nB\nc\r\nd\n"


def test_bom_and_legacy_encodings_are_kept(repo: Path, toolbox):
    (repo / "bom.txt").write_bytes(codecs.BOM_UTF8 + "héllo\nwörld\n".encode())
    (repo / "latin.txt").write_bytes("prix = '5 €'\nnom = 'café'\n".encode("cp1252"))
    (repo / "utf16.txt").write_bytes("alpha\nbeta\n".encode("utf-16"))
    tools = toolbox(repo)
    assert tools("edit_file", path="bom.txt", old_string="wörld", new_string="mönde").ok
    assert read(repo, "bom.txt") == codecs.BOM_UTF8 + "héllo\nmönde\n".encode()
    assert tools("edit_file", path="latin.txt", old_string="café", new_string="crème").ok
    assert read(repo, "latin.txt") == "prix = '5 €'\nnom = 'crème'\n".encode("cp1252")
    assert tools("edit_file", path="utf16.txt", old_string="beta", new_string="gamma").ok
    assert read(repo, "utf16.txt") == "alpha\ngamma\n".encode("utf-16")
    obs = tools("edit_file", path="latin.txt", old_string="crème", new_string="日本")
    assert not obs.ok and "cp1252" in obs.text
    assert read(repo, "latin.txt") == "prix = '5 €'\nnom = 'crème'\n".encode("cp1252")


def test_final_newline_presence_is_kept(repo: Path, toolbox):
    (repo / "nofinal.txt").write_bytes(b"first\nlast")
    (repo / "final.txt").write_bytes(b"first\nlast\n")
    tools = toolbox(repo)
    assert tools("edit_file", path="nofinal.txt", old_string="last", new_string="LAST\n").ok
    assert read(repo, "nofinal.txt") == b"first\nLAST"
    assert tools("edit_file", path="final.txt", old_string="last\n", new_string="LAST").ok
    assert read(repo, "final.txt") == b"first\nLAST\n"


def test_non_unique_match_reports_count_and_lines(repo: Path, tools):
    obs = tools("edit_file", path="greet.py", old_string="self.name", new_string="self.who")
    assert not obs.ok
    assert "occurs 3 times in greet.py (starting at lines 3, 6, 7)" in obs.text
    assert "replace_all=true" in obs.text
    assert read(repo, "greet.py") == PY.encode()


def test_non_unique_tolerant_match_reports_lines(repo: Path, toolbox):
    (repo / "dup.py").write_text("if a:\n    x()\nif b:\n        x()\n")
    obs = toolbox(repo)("edit_file", path="dup.py", old_string="  x()", new_string="  y()")
    assert not obs.ok and "occurs 2 times in dup.py (starting at lines 2, 4)" in obs.text


def test_replace_all(repo: Path, tools):
    obs = tools(
        "edit_file",
        path="greet.py",
        old_string="self.name",
        new_string="self.who",
        replace_all=True,
    )
    assert obs.ok and "replaced 3 occurrences" in obs.text
    assert read(repo, "greet.py").decode() == PY.replace("self.name", "self.who")


def test_not_found_shows_closest_candidates_with_line_numbers(repo: Path, tools):
    obs = tools(
        "edit_file",
        path="greet.py",
        old_string="def greet(self):\n    if self.nme:\n        return 'hello' + self.name",
        new_string="x",
    )
    assert not obs.ok
    assert "old_string was not found in greet.py" in obs.text
    assert "--- lines 5-7" in obs.text
    assert "5\t    def greet(self):" in obs.text
    assert "7\t            return 'hello ' + self.name" in obs.text
    assert read(repo, "greet.py") == PY.encode()


def test_not_found_without_anything_similar(repo: Path, tools):
    obs = tools("edit_file", path="greet.py", old_string="zzzz qqqq", new_string="x")
    assert not obs.ok and "No similar lines" in obs.text


def test_mistakes_that_change_nothing(repo: Path, tools):
    assert (
        "old_string is empty"
        in tools("edit_file", path="greet.py", old_string="", new_string="x").text
    )
    assert "identical" in tools("edit_file", path="greet.py", old_string="a", new_string="a").text
    obs = tools("edit_file", path="missing.py", old_string="a", new_string="b")
    assert not obs.ok and "use write_file" in obs.text
    assert "directory" in tools("edit_file", path="src", old_string="a", new_string="b").text
    (repo / "img.bin").write_bytes(b"\x00\x01\x02")
    assert "binary" in tools("edit_file", path="img.bin", old_string="a", new_string="b").text
    assert (
        "inside .git" in tools("edit_file", path=".git/config", old_string="a", new_string="b").text
    )
    assert read(repo, "greet.py") == PY.encode()


def test_permissions_are_kept_and_no_temp_file_is_left(repo: Path, toolbox):
    script = repo / "run.sh"
    script.write_text("#!/bin/sh\necho one\n")
    script.chmod(0o750)
    obs = toolbox(repo)("edit_file", path="run.sh", old_string="one", new_string="two")
    assert obs.ok
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert script.read_text() == "#!/bin/sh\necho two\n"
    assert sorted(os.listdir(repo)) == sorted([".git", ".gitignore", "README.md", "src", "run.sh"])


def test_edit_through_an_inside_symlink_keeps_the_link(repo: Path, toolbox):
    os.symlink("src/app.py", repo / "app_link.py")
    obs = toolbox(repo)("edit_file", path="app_link.py", old_string="a + b", new_string="b + a")
    assert obs.ok and obs.data["path"] == "src/app.py"
    assert (repo / "app_link.py").is_symlink()
    assert "return b + a" in (repo / "src/app.py").read_text()
