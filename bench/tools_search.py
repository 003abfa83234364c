"""Benchmark: the `search` tool on a ~4 MB (~1M-token) repository of real code, against grep.

    python bench/tools_search.py [--mb 4] [--repeat 7]

Builds a git repository from the Python standard library's own .py files (real code on every
machine), then times, per query, the whole tool call (file listing with the context engine's
ignore rules + search + formatting) and the search alone, next to `git grep -n` and
`grep -rn` over the same files. Prints a markdown table; quote the ratios, not the absolute
times (the machine is shared).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import build_tools, dispatch  # noqa: E402
from tools.base import ToolContext  # noqa: E402
from tools.repo import visible_files  # noqa: E402
from tools.search import search_files  # noqa: E402

QUERIES = [
    ("literal, rare", "SequenceMatcher", False),
    ("literal, common", "return None", False),
    ("regex", r"def \w+_cache\(", True),
]


def build_repo(dest: Path, megabytes: float) -> tuple[int, int]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget = int(megabytes * 1024 * 1024)
    total = files = 0
    for src in sorted(stdlib.rglob("*.py")):
        rel = src.relative_to(stdlib)
        if "site-packages" in rel.parts or "test" in rel.parts[:1]:
            continue
        data = src.read_bytes()
        if total + len(data) > budget:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        total += len(data)
        files += 1
        if total > budget * 0.99:
            break
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    return files, total


def timed(fn, repeat: int) -> float:
    fn()  # warm the page cache and imports
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(root: Path, tools, paths, label: str, pattern: str, regex: bool, repeat: int) -> str:
    """One table row: the tool, the bare search, and the two grep peers on one query."""
    args = {"pattern": pattern, "regex": regex}
    matches = dispatch(tools, "search", args).data["matched_lines"]
    tool_s = timed(lambda: dispatch(tools, "search", args), repeat)
    core_s = timed(lambda: search_files(root, paths, pattern, regex=regex), repeat)
    flag = "-E" if regex else "-F"
    posix = pattern.replace(r"\w", "[[:alnum:]_]").replace(r"\(", "[(]") if regex else pattern
    git_cmd = ["git", "grep", "-n", "-I", flag, posix]
    grep_cmd = ["grep", "-rn", "-I", flag, "--exclude-dir=.git", posix, "."]
    git_s = timed(lambda: subprocess.run(git_cmd, cwd=root, capture_output=True), repeat)
    grep_s = timed(lambda: subprocess.run(grep_cmd, cwd=root, capture_output=True), repeat)
    git_n = len(subprocess.run(git_cmd, cwd=root, capture_output=True).stdout.splitlines())
    return (
        f"| {label} `{pattern}` | {matches} (git grep {git_n}) | {tool_s * 1000:.0f} ms "
        f"| {core_s * 1000:.0f} ms | {git_s * 1000:.0f} ms | {grep_s * 1000:.0f} ms "
        f"| {tool_s / git_s:.2f}x | {tool_s / grep_s:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="v4code-bench-") as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        files, size = build_repo(root, args.mb)
        tools = build_tools("ask", ToolContext(root=root))
        paths = visible_files(root).paths()
        version = sys.version.split()[0]
        print(f"repository: {files} files, {size / 1e6:.2f} MB (Python {version} stdlib)")
        print(f"machine: {sys.platform}, median of {args.repeat} runs after one warm-up\n")
        listing = timed(lambda: visible_files(root).paths(), args.repeat)
        print(f"file listing (RepoFiles.paths()): {listing * 1000:.1f} ms\n")
        print(
            "| query | matches | search tool call | search_files only | git grep -n | grep -rn "
            "| tool / git grep | tool / grep |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, pattern, regex in QUERIES:
            print(measure(root, tools, paths, label, pattern, regex, args.repeat))
    if shutil.which("rg") is None:
        print("\n(ripgrep is not installed here, so it is not in the table)")


if __name__ == "__main__":
    main()
