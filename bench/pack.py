"""Benchmark `v4code context` against Repomix on the same trees, in the same run.

Trees (built under bench/.work/, which git ignores):
  stdlib   a git repository of every .py file of the installed standard library (~1,800 files,
           ~8.2M V4 tokens)
  subset   a ~1.45M-token git repository of some of its packages (asyncio, email, json, ...)
  --tree PATH  any other git repository, as it is (e.g. bench/.work/pytest, the snapshot of
           pytest-dev/pytest that issue 2's Repomix figure refers to); named by its folder

For each tree, round after round (interleaved, so load on the machine hits all alike):
  repomix      `repomix TREE -o OUT` (npm package, installed into bench/.work on first use)
  whole cold   `v4code context --repo TREE --budget B --output OUT --output-format json` with B
               large enough for every file whole (Repomix packs every file whole: this is the
               like-for-like run), the per-file cache deleted first (the tokenizer's rank
               cache, built once per install, stays)
  whole warm   the same command again (cache hit)
  fit cold/warm  the same with the default budget (917,504: ranking, skeletons, listed files)
Every figure is a whole command: process start-up and imports count. Python runs with its
bytecode cache (as after `pip install`; this machine sets PYTHONDONTWRITEBYTECODE, which the
script unsets for the children). Wall time and CPU time (user + sys of the process and its
threads) are both reported: on a shared machine other people's load stretches wall time, CPU
time much less. The table shows medians and the ratios Repomix / v4code (higher is better).

    python bench/pack.py                         # both trees, 5 rounds
    python bench/pack.py --runs 7 --trees subset
    python bench/pack.py --runs 5 --tree bench/.work/pytest   # only that tree
    python bench/pack.py --secrets               # secret rules vs detect-secrets (stdlib)
    python bench/pack.py --git                   # subprocess git vs gitpython (discovery)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
REPOMIX_VERSION = "1.18.1"
SUBSET = (
    "asyncio",
    "email",
    "json",
    "http",
    "urllib",
    "unittest",
    "logging",
    "concurrent",
    "importlib",
    "xml",
    "multiprocessing",
    "collections",
    "idlelib",
    "test/test_asyncio",
    "test/test_email",
    "test/test_json",
)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@v4code.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@v4code.invalid",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _git_repo(root: Path, files: list[tuple[Path, Path]]) -> None:
    if root.exists():
        shutil.rmtree(root)
    for src, rel in files:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    env = dict(os.environ, **GIT_ENV)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tree"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)


def build_trees() -> dict[str, Path]:
    lib = stdlib_dir()
    every = sorted(
        p
        for p in lib.rglob("*.py")
        if "site-packages" not in p.parts and "__pycache__" not in p.parts
    )
    trees = {"stdlib": WORK / "stdlib", "subset": WORK / "subset"}
    stamp = WORK / f"trees-{sys.version_info.major}.{sys.version_info.minor}.ok"
    if not stamp.exists() or not all((t / ".git").is_dir() for t in trees.values()):
        _git_repo(trees["stdlib"], [(p, p.relative_to(lib)) for p in every])
        chosen = [
            p for p in every if any(str(p.relative_to(lib)).startswith(d + "/") for d in SUBSET)
        ]
        _git_repo(trees["subset"], [(p, p.relative_to(lib)) for p in chosen])
        stamp.write_text("ok\n")
    return trees


def repomix_bin() -> Path | None:
    binary = WORK / "node_modules" / ".bin" / "repomix"
    if not binary.exists():
        if shutil.which("npm") is None:
            return None
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"repomix@{REPOMIX_VERSION}"],
            cwd=WORK,
            check=True,
            capture_output=True,
        )
    return binary


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with .pyc files, as installed
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child and its threads/children, stdout). CPU time is
    the steadier figure on a shared machine: other people's load stretches wall time only."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, proc.stdout


KINDS = ("repomix", "whole cold", "whole warm", "fit cold", "fit warm")


def bench_tree(
    name: str, tree: Path, runs: int, repomix: Path | None, cache_home: Path, whole_budget: int
) -> dict[str, object]:
    out = Path(tempfile.gettempdir()) / f"v4code-bench-{name}"
    env = child_env(XDG_CACHE_HOME=str(cache_home))
    base = [sys.executable, "-m", "agent.cli", "context", "--repo", str(tree)]
    base += ["--output", f"{out}.xml", "--output-format", "json"]
    commands = {"whole": [*base, "--budget", str(whole_budget)], "fit": base}
    db = cache_home / "v4code" / "context.sqlite3"
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    manifests: dict[str, dict[str, object]] = {}

    def run(kind: str, cmd: list[str], run_env: dict[str, str] | None = None) -> str:
        elapsed, used, stdout = timed(cmd, run_env)
        times[kind].append(elapsed)
        cpu[kind].append(used)
        return stdout

    timed(commands["fit"], env)  # writes the .pyc files and the tokenizer's rank cache
    for _ in range(runs):
        if repomix is not None:
            run("repomix", [str(repomix), str(tree), "-o", f"{out}-repomix.xml", "--quiet"])
        for budget, cmd in commands.items():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            run(f"{budget} cold", cmd, env)
            manifests[budget] = json.loads(run(f"{budget} warm", cmd, env))
    return {
        "tree": name,
        "files": {k: len(m.get("files", [])) for k, m in manifests.items()},  # type: ignore[arg-type]
        "tokens_packed": {k: m.get("total_tokens") for k, m in manifests.items()},
        "modes": {k: m.get("counts", {}).get("total") for k, m in manifests.items()},  # type: ignore[union-attr]
        "excluded": {k: len(m.get("excluded", [])) for k, m in manifests.items()},  # type: ignore[arg-type]
        "whole_budget": whole_budget,
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items() if v},
        "median_cpu_s": {k: round(statistics.median(v), 3) for k, v in cpu.items() if v},
        "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "runs_cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
    }


def tree_tokens(tree: Path) -> int:
    """Exact V4 tokens of every tracked text file (what would be packed with no budget and no
    exclusions): the whole budget is sized from it. Files with NUL bytes or not UTF-8 are
    skipped, as the packer skips them."""
    from agent.tokenizer import get_tokenizer

    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=tree, capture_output=True, check=True
    ).stdout.split(b"\0")
    texts = []
    for rel in sorted(name for name in listed if name):
        data = (tree / os.fsdecode(rel)).read_bytes()
        if b"\0" in data:
            continue
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return sum(get_tokenizer().count_many(texts))


def secrets_eval(tree: Path) -> None:
    """Our compiled rules vs detect-secrets (default plugins) on the same files."""
    from agent.context.secrets import scan

    files = sorted(tree.rglob("*.py"))
    texts = {}
    for path in files:
        try:
            texts[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    started = time.perf_counter()
    ours = {str(p.relative_to(tree)): rule for p, text in texts.items() if (rule := scan(text))}
    ours_s = time.perf_counter() - started
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        print("detect-secrets is not installed")
        return
    started = time.perf_counter()
    found: dict[str, set[str]] = {}
    with default_settings():
        collection = SecretsCollection()
        for path in texts:
            collection.scan_file(str(path))
        for filename, secret in collection:
            found.setdefault(str(Path(filename).relative_to(tree)), set()).add(secret.type)
    theirs_s = time.perf_counter() - started
    print(f"{len(texts)} files, {sum(len(t) for t in texts.values()) / 1e6:.1f} MB")
    print(f"{'scanner':<16}{'files flagged':>14}{'seconds':>10}")
    print(f"{'v4code rules':<16}{len(ours):>14}{ours_s:>10.2f}")
    print(f"{'detect-secrets':<16}{len(found):>14}{theirs_s:>10.2f}")
    kinds: dict[str, int] = {}
    for types in found.values():
        for kind in types:
            kinds[kind] = kinds.get(kind, 0) + 1
    print(
        "detect-secrets findings by plugin (files):",
        json.dumps(dict(sorted(kinds.items(), key=lambda kv: -kv[1]))),
    )
    print("v4code findings:", json.dumps(ours))


def git_eval(tree: Path, runs: int) -> None:
    """What gitpython would cost discovery: its import in a fresh process, and the listing
    through it against one `git ls-files` subprocess (what discovery runs)."""
    py = [sys.executable, "-c"]
    env = child_env()
    listing = ["ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard"]
    probes = {
        "python (start-up only)": "pass",
        "import git (gitpython)": "import git",
        "import agent.context.discovery": "import agent.context.discovery",
        "discovery: RepoFiles(tree).candidates()": (
            f"from agent.context import RepoFiles; RepoFiles({str(tree)!r}).candidates()"
        ),
        "gitpython: Repo(tree).git.ls_files(...)": (
            f"import git; git.Repo({str(tree)!r}).git.ls_files(*{listing!r})"
        ),
        "gitpython: Repo(tree).index.entries": f"import git; list(git.Repo({str(tree)!r}).index.entries)",
    }
    print(f"{'process':<44}{'wall s':>8}{'cpu s':>8}")
    for label, code in probes.items():
        walls, cpus = [], []
        for _ in range(runs):
            wall, used, _ = timed([*py, code], env)
            walls.append(wall)
            cpus.append(used)
        print(f"{label:<44}{statistics.median(walls):>8.3f}{statistics.median(cpus):>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--trees", default=None, help="built trees: subset,stdlib (default: both, unless --tree)"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="also (or, without --trees, only) this git repository; repeatable",
    )
    parser.add_argument("--no-repomix", action="store_true")
    parser.add_argument("--secrets", action="store_true")
    parser.add_argument("--git", action="store_true")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    trees = build_trees()
    if args.secrets:
        secrets_eval(trees["stdlib"])
        return
    if args.git:
        git_eval(trees["stdlib"], max(args.runs, 5))
        return
    chosen: dict[str, Path] = {}
    names = args.trees if args.trees is not None else ("" if args.tree else "subset,stdlib")
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in trees:
            parser.error(
                f"unknown tree {name!r} (built trees: {', '.join(trees)}; use --tree PATH)"
            )
        chosen[name] = trees[name]
    for path in args.tree:
        path = path.resolve()
        if not (path / ".git").exists():
            parser.error(f"--tree {path}: not the root of a git repository")
        chosen[path.name] = path
    repomix = None if args.no_repomix else repomix_bin()
    cache_home = Path(tempfile.mkdtemp(prefix="v4code-bench-cache-"))
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}"
    )
    rows = []
    try:
        for name, tree in chosen.items():
            tokens = tree_tokens(tree)
            whole_budget = -(-int(tokens * 1.25) // 100_000) * 100_000  # every file whole
            result = bench_tree(name, tree, args.runs, repomix, cache_home, whole_budget)
            result["tree_tokens"] = tokens
            rows.append(result)
            print(json.dumps(result))
    finally:
        shutil.rmtree(cache_home, ignore_errors=True)
    print()
    print(f"{'tree':<8}{'measure':<8}" + "".join(f"{k:>12}" for k in KINDS) + "  ratios x")
    for r in rows:
        for label, key in (("wall s", "median_s"), ("cpu s", "median_cpu_s")):
            m = r[key]
            rx = m.get("repomix")
            cells = "".join(f"{m[k]:>12.3f}" if k in m else f"{'-':>12}" for k in KINDS)
            ratios = "  ".join(f"{k} {rx / m[k]:.2f}" for k in KINDS[1:] if rx and k in m)
            print(f"{r['tree']:<8}{label:<8}{cells}  {ratios}")
    print(
        f"load after: {os.getloadavg()[0]:.2f}  (x = Repomix / v4code, medians; whole = budget "
        "that fits every file whole, fit = default budget)"
    )


if __name__ == "__main__":
    main()
