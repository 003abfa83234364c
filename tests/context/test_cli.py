"""`v4code context` as a user runs it: real subprocesses, stdout/stderr split, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from agent.tokenizer import get_tokenizer
from tests.support import cli

MODES = {"full", "skeleton", "listed"}
TIERS = {"source", "tests", "config", "docs", "data"}


def v4code(*args: str, cwd: Path | None = None) -> cli.CliRun:
    """`v4code context ARGS`: the one command of this file."""
    return cli.v4code("context", *args, cwd=cwd, timeout=180)


def test_json_manifest_schema(stdlib_repo, tmp_path: Path):
    root = stdlib_repo(["json", "email"])
    (root / "docs").mkdir()
    (root / "docs/guide.md").write_text("# Guide\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x01")
    out = tmp_path / "packed.md"
    proc = v4code(
        "--repo",
        str(root),
        "--budget",
        "40000",
        "--format",
        "markdown",
        "--output",
        str(out),
        "--output-format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    for key, kind in {
        "root": str,
        "budget": int,
        "total_tokens": int,
        "tokenizer": str,
        "elapsed_s": float,
        "files": list,
        "excluded": list,
        "cost_usd": dict,
    }.items():
        assert isinstance(manifest[key], kind), key
    assert manifest["root"] == str(root.resolve()) and manifest["budget"] == 40_000
    assert manifest["tokenizer"] == "deepseek-v4"
    assert 0 < manifest["total_tokens"] <= 40_000
    assert manifest["cost_usd"]["cold"] > manifest["cost_usd"]["cached"] > 0
    paths = [f["path"] for f in manifest["files"]]
    assert (
        "src/json/decoder.py" in paths
        and "docs/guide.md" in paths
        and all("\\" not in p for p in paths)
    )
    assert {f["mode"] for f in manifest["files"]} <= MODES and {
        f["tier"] for f in manifest["files"]
    } <= TIERS
    assert {f["tier"] for f in manifest["files"]} >= {"source", "config", "docs"}
    assert all(isinstance(f["tokens"], int) and f["tokens"] > 0 for f in manifest["files"])
    assert all(f["encoding"] == "utf-8" for f in manifest["files"])
    assert (
        manifest["header_tokens"]
        + sum(f["tokens"] for f in manifest["files"])
        + manifest["footer_tokens"]
        == (manifest["total_tokens"])
    )
    assert {"path": "logo.png", "reason": "binary (contains NUL bytes)"} in manifest["excluded"]
    text = out.read_text(encoding="utf-8")
    assert get_tokenizer().count(text) == manifest["total_tokens"]
    assert text.startswith(f"# Repository {root.name}\n") and "## src/json/decoder.py" in text


def test_text_mode_summary_on_stderr_and_pack_on_stdout(stdlib_repo):
    root = stdlib_repo(["json"])
    quiet = v4code(cwd=root)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    assert (
        "tokens of a" in quiet.stderr
        and "cost to send" in quiet.stderr
        and "source" in quiet.stderr
    )
    piped = v4code("--output", "-", cwd=root)
    assert piped.returncode == 0
    assert piped.stdout.startswith('<repository name="stdrepo"') and piped.stdout.endswith(
        "</repository>\n"
    )


def test_the_output_file_is_not_packed_into_the_next_pack(stdlib_repo):
    root = stdlib_repo(["json"])
    for _ in range(2):
        proc = v4code("--output", "pack.xml", "--output-format", "json", cwd=root)
        assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert "pack.xml" not in [f["path"] for f in manifest["files"]]
    assert {"path": "pack.xml", "reason": "output of v4code context"} in manifest["excluded"]
    assert (root / "pack.xml").read_text(encoding="utf-8").count(
        '<file path="src/json/decoder.py"'
    ) == 1


def test_exit_code_2_for_bad_paths_and_budgets(tmp_path: Path, stdlib_repo):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory\n")
    for bad in (a_file, tmp_path / "missing"):
        proc = v4code("--repo", str(bad), "--output-format", "json")
        assert proc.returncode == 2, proc.stderr
        error = json.loads(proc.stdout)
        assert error["status"] == "usage_error" and str(bad) in error["error"]
    root = stdlib_repo(["json"])
    proc = v4code("--repo", str(root), "--budget", "20")
    assert proc.returncode == 2 and "smaller than the pack's header" in proc.stderr
    assert v4code("--repo", str(root), "--format", "yaml").returncode == 2
    assert v4code("--repo", str(root), "--max-file-bytes", "0").returncode == 2
    assert v4code("--repo", str(root), "--budget", "0").returncode == 2
    proc = v4code("--repo", str(root / ".git"), "--output-format", "json")
    assert proc.returncode == 2 and "inside a .git directory" in json.loads(proc.stdout)["error"]
    proc = v4code("--repo", str(root), "--output", str(root / "src"))
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_failed_output_write_loses_nothing(stdlib_repo, tmp_path: Path):
    root = stdlib_repo(["json"])
    existing = tmp_path / "keep.xml"
    existing.write_text("precious\n")
    proc = v4code("--repo", str(root), "--output", str(tmp_path / "no/such/dir/pack.xml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = v4code("--repo", str(root), "--budget", "10", "--output", str(existing))
    assert proc.returncode == 2
    assert existing.read_text() == "precious\n"


def test_summary_shows_odd_names_escaped_and_literal(write_tree):
    root = write_tree(
        {"line\nbreak.py": "x = 1\n", "[bold]markup.py": "y = 2\n", "ok.py": "z = 3\n"},
        git_init=True,
        commit=True,
    )
    proc = v4code("--repo", str(root), "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "line\\nbreak.py" in proc.stderr and "[bold]markup.py" in proc.stderr
