"""Harness overhead per turn of `v4code fix` on a ~1M-token repository.

Everything except the model's own time: the loop, tool calls, change tracking and snapshots,
token counting for --max-cost, the transcript. The model is the scripted OpenAI-compatible
server (in its own process, so it never competes for the GIL); the time inside
`provider.complete()` — the request, the server, the streamed answer — is the model's and is
subtracted. Test runs (the user's own test suite) and the one-time packing are reported apart.

Peer, same run: mini-swe-agent (the style model for our loop), given the same ~1M-token packed
repository as its task and an equivalent bash action per turn, against the same server; its
model time (`model.query`) is subtracted the same way. Installed in its own venv under
bench/.work/peer-venv (`python3 -m venv bench/.work/peer-venv &&
bench/.work/peer-venv/bin/pip install mini-swe-agent==2.4.6`); skipped when absent.

    python bench/harness.py [--tokens 1000000] [--repeat 3] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(ROOT))

STDLIB = Path(sysconfig.get_paths()["stdlib"])
BUG, PLANTED = "        m2 = l * (1.0+s)\n", "        m2 = l * (1.0-s)\n"
PEER_PYTHON = WORK / "peer-venv" / "bin" / "python"


# --- the repository ---------------------------------------------------------------------------


def build_repo(tokens: int) -> Path:
    """A git repo of stdlib modules (sorted, whole files) up to `tokens`, plus colorconv with a bug."""
    from agent.tokenizer import get_tokenizer

    repo = WORK / f"harness-{tokens // 1000}k"
    if (repo / ".complete").exists():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    tok, total = get_tokenizer(), 0
    for src in sorted(STDLIB.rglob("*.py")):
        rel = src.relative_to(STDLIB)
        if rel.parts[0] in ("test", "idlelib", "lib2to3", "site-packages") or "tests" in rel.parts:
            continue
        text = src.read_text(encoding="utf-8", errors="replace")
        count = tok.count(text)
        if total + count > tokens:
            break
        total += count
        (repo / "lib" / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / "lib" / rel).write_text(text, encoding="utf-8")
    (repo / "colorconv.py").write_text((STDLIB / "colorsys.py").read_text().replace(BUG, PLANTED))
    tests = (STDLIB / "test" / "test_colorsys.py").read_text()
    (repo / "test_colorconv.py").write_text(
        tests.replace("import colorsys\n", "import colorconv as colorsys\n")
    )
    (repo / ".gitignore").write_text("__pycache__/\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    (repo / ".git" / "info" / "exclude").write_text(".complete\n")
    (repo / ".complete").write_text(str(total))
    return repo


def reset_repo(repo: Path) -> None:
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)
    subprocess.run(["git", "clean", "-qfd", "-e", ".complete"], cwd=repo, check=True)


# --- the scripted model ------------------------------------------------------------------------

FIXED = PLANTED.replace("(1.0-s)", "(1.0+s)")


def fix_scenario() -> dict[str, Any]:
    """Eight turns a model typically takes: plan, read, search, regex search, list, a wrong edit
    (tests run and fail), read the tests, the right edit (tests run and pass)."""

    def calls(name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": name, "arguments": args}]}

    return {
        "steps": [
            {"text": "m2 has the wrong sign for l <= 0.5 in hls_to_rgb; I will fix that line."},
            calls("read_file", {"path": "colorconv.py", "start_line": 95, "end_line": 110}),
            calls("search", {"pattern": "def hls_to_rgb"}),
            calls("search", {"pattern": r"m2 = l \* \(1\.0[-+]s\)", "regex": True}),
            calls("list_files", {"path": "lib/email"}),
            calls(
                "edit_file",
                {
                    "path": "colorconv.py",
                    "old_string": PLANTED.strip(),
                    "new_string": PLANTED.strip() + "  # first attempt",
                },
            ),
            calls("read_file", {"path": "test_colorconv.py", "start_line": 1, "end_line": 40}),
            calls(
                "edit_file",
                {
                    "path": "colorconv.py",
                    "old_string": PLANTED.strip() + "  # first attempt",
                    "new_string": FIXED.strip(),
                },
            ),
        ]
    }


def peer_scenario(repo: Path) -> dict[str, Any]:
    """The same eight turns as bash actions (mini-swe-agent's one tool), then its exit command."""
    py = shlex.quote(sys.executable)
    commands = [
        "echo plan: fix the sign of m2 in hls_to_rgb",
        "sed -n 95,110p colorconv.py",
        "grep -rn --include='*.py' 'def hls_to_rgb' . | head -50",
        r"grep -rnE --include='*.py' 'm2 = l \* \(1\.0[-+]s\)' . | head -50",
        "ls lib/email",
        "sed -i 's/m2 = l \\* (1.0-s)$/m2 = l * (1.0-s)  # first attempt/' colorconv.py && "
        f"{py} -m unittest test_colorconv 2>&1 | tail -5",
        "sed -n 1,40p test_colorconv.py",
        "sed -i 's/m2 = l \\* (1.0-s)  # first attempt/m2 = l * (1.0+s)/' colorconv.py && "
        f"{py} -m unittest test_colorconv 2>&1 | tail -5",
        "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT",
    ]
    return {
        "steps": [
            {"tool_calls": [{"name": "bash", "arguments": {"command": c}}]} for c in commands
        ],
        "strict_messages": False,
        "reasoning_rule": False,
    }


class ServerProcess:
    """The scripted server in its own process (so its work never overlaps the harness's)."""

    def __init__(self, scenario: dict[str, Any]):
        self.file = Path(tempfile.mkstemp(suffix=".json", prefix="v4code-scenario-")[1])
        self.file.write_text(json.dumps(scenario))
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]);"
            "from tests.support.scripted_server import ScriptedServer, Scenario;"
            "srv = ScriptedServer(Scenario.load(sys.argv[1])).start();"
            "print(srv.base_url, srv.api_key, flush=True); sys.stdin.read(); srv.stop()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(self.file), str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url, self.api_key = self.proc.stdout.readline().split()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.file.unlink(missing_ok=True)


# --- v4code ------------------------------------------------------------------------------------


class TimedProvider:
    """Delegates to the real provider and adds up the time spent inside complete()."""

    def __init__(self, inner: Any):
        self.inner, self.name, self.model, self.model_s = inner, inner.name, inner.model, 0.0

    def complete(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.complete(*args, **kwargs)
        finally:
            self.model_s += time.perf_counter() - started

    def cost(self, usage: Any) -> float:
        return self.inner.cost(usage)

    def close(self) -> None:
        self.inner.close()


def run_v4code(repo: Path, budget: int) -> dict[str, float]:
    from agent.config import load_settings
    from agent.fix import run_fix
    from agent.loop import Limits, RunSetup
    from agent.providers.factory import make_provider

    reset_repo(repo)
    server = ServerProcess(fix_scenario())
    os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=server.api_key)
    marks: dict[str, float] = {}
    tools_s = [0.0]

    def listen(record: dict[str, Any]) -> None:
        event = record.get("event")
        if event in ("start", "context") or (
            event == "test_run" and record.get("phase") == "before"
        ):
            marks[event] = time.perf_counter()
        if event == "test_run":
            marks["tests"] = marks.get("tests", 0.0) + record["duration_s"]
        if event == "tool_result":
            tools_s[0] += record["elapsed_s"]

    try:
        settings = load_settings(repo, provider="openai", model="deepseek-v4-flash")
        provider = TimedProvider(make_provider(settings))
        setup = RunSetup(
            root=repo,
            provider=provider,
            flags={"provider": "openai"},
            budget=budget,
            listeners=[listen],
            test_command=f"{shlex.quote(sys.executable)} -m unittest test_colorconv",
        )
        started = time.perf_counter()
        result = run_fix(setup, limits=Limits(max_turns=20))
        wall = time.perf_counter() - started
    finally:
        server.close()
    assert result.status == "ok" and result.turns == 8, (result.status, result.error)
    pack_s = marks["context"] - marks["test_run"]
    loop_s = wall - (marks["context"] - started)  # from the packed prompt to the result
    tests_after = marks["tests"] - _before_tests(result)
    overhead = loop_s - provider.model_s - tests_after
    return {
        "turns": result.turns,
        "context_tokens": result.context["tokens"],
        "wall_s": wall,
        "pack_s": pack_s,
        "model_s": provider.model_s,
        "tests_s": tests_after,
        "tools_s": tools_s[0],
        "overhead_per_turn_ms": 1000 * overhead / result.turns,
        "bookkeeping_per_turn_ms": 1000 * (overhead - tools_s[0]) / result.turns,
    }


def _before_tests(result: Any) -> float:
    return float((result.tests_before or {}).get("duration_s", 0.0))


# --- the peer: mini-swe-agent --------------------------------------------------------------

PEER_CODE = r"""
import json, sys, time
from pathlib import Path
import yaml, minisweagent
from minisweagent.agents.default import DefaultAgent
from minisweagent.environments.local import LocalEnvironment
from minisweagent.models.litellm_model import LitellmModel
base_url, api_key, repo, task_file, trajectory = sys.argv[1:6]
cfg = yaml.safe_load((Path(minisweagent.__file__).parent / "config" / "mini.yaml").read_text())
agent_cfg = {k: v for k, v in cfg["agent"].items() if k != "mode"}
model_cfg = dict(cfg["model"])
model_cfg["model_kwargs"] = {**model_cfg.get("model_kwargs", {}), "api_base": base_url, "api_key": api_key}
model = LitellmModel(model_name="openai/deepseek-v4-flash", cost_tracking="ignore_errors", **model_cfg)
spent = [0.0]
query = model.query
def timed(*a, **k):
    t = time.perf_counter()
    try:
        return query(*a, **k)
    finally:
        spent[0] += time.perf_counter() - t
model.query = timed
env = LocalEnvironment(cwd=repo, **cfg.get("environment", {}))
tests = [0.0]
execute = env.execute
def timed_execute(action, *a, **k):
    t = time.perf_counter()
    try:
        return execute(action, *a, **k)
    finally:
        if "-m unittest" in action.get("command", ""):
            tests[0] += time.perf_counter() - t
env.execute = timed_execute
agent = DefaultAgent(model, env, **{**agent_cfg, "cost_limit": 0, "step_limit": 20,
                                    "output_path": Path(trajectory)})
t = time.perf_counter()
result = agent.run(open(task_file).read())
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "model_s": spent[0], "tests_s": tests[0], "turns": agent.n_calls,
                  "exit": result.get("exit_status")}))
"""


def run_peer(repo: Path, pack_text: str) -> dict[str, float] | None:
    if not PEER_PYTHON.exists():
        return None
    reset_repo(repo)
    server = ServerProcess(peer_scenario(repo))
    task = Path(tempfile.mkstemp(suffix=".txt", prefix="v4code-peer-task-")[1])
    task.write_text(pack_text + "\n\nMake the failing tests in test_colorconv.py pass.\n")
    try:
        proc = subprocess.run(
            [
                str(PEER_PYTHON),
                "-c",
                PEER_CODE,
                server.base_url,
                server.api_key,
                str(repo),
                str(task),
                str(task) + ".traj.json",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "MSWEA_CONFIGURED": "true", "LITELLM_LOG": "ERROR"},
        )
    finally:
        server.close()
        task.unlink(missing_ok=True)
        Path(str(task) + ".traj.json").unlink(missing_ok=True)
    if proc.returncode != 0:
        print("peer failed:\n" + proc.stderr[-3000:], file=sys.stderr)
        return None
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["exit"] == "Submitted" and data["turns"] == 9, data
    # Its two test runs are bash actions; their time is subtracted, as for v4code's test runs.
    busy = data["model_s"] + data["tests_s"]
    data["overhead_per_turn_ms"] = 1000 * (data["wall_s"] - busy) / data["turns"]
    return data


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokens", type=int, default=1_000_000, help="repository size in V4 tokens"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="v4code-bench-state-"))
    os.environ.update(
        XDG_STATE_HOME=str(state / "state"),
        XDG_CACHE_HOME=str(state / "cache"),
        XDG_CONFIG_HOME=str(state / "config"),
    )
    repo = build_repo(args.tokens)
    budget = int(args.tokens * 1.1)
    print(f"repository: {repo} ({(repo / '.complete').read_text()} tokens of source)", flush=True)
    runs = []
    for i in range(args.repeat):
        runs.append(run_v4code(repo, budget))
        print(
            f"v4code run {i + 1}: "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in runs[-1].items()
            ),
            flush=True,
        )
    peers = []
    if not args.no_peer:
        from agent.context import pack_repository

        pack_text = pack_repository(repo, budget=budget).text
        for i in range(args.repeat):
            peer = run_peer(repo, pack_text)
            if peer is None:
                break
            peers.append(peer)
            print(f"peer run {i + 1}: " + json.dumps(peer), flush=True)
    reset_repo(repo)
    shutil.rmtree(state, ignore_errors=True)

    warm = runs[1:] or runs
    med = {
        k: statistics.median(r[k] for r in warm) for k in warm[0] if isinstance(warm[0][k], float)
    }
    print(
        "\n| measure (median of warm runs) | v4code |"
        + (" mini-swe-agent 2.4.6 |" if peers else "")
    )
    print("|---|---|" + ("---|" if peers else ""))
    print(
        f"| context tokens | {warm[0]['context_tokens']:,} |"
        + (" same text as its task |" if peers else "")
    )
    print(f"| turns | {warm[0]['turns']} |" + (f" {peers[0]['turns']} |" if peers else ""))
    peer_med = statistics.median(p["overhead_per_turn_ms"] for p in peers) if peers else None
    print(
        f"| harness overhead per turn (ms) | {med['overhead_per_turn_ms']:.1f} |"
        + (f" {peer_med:.1f} |" if peers else "")
    )
    print(f"| of which tools (ms/turn) | {1000 * med['tools_s'] / warm[0]['turns']:.1f} | |")
    print(f"| of which bookkeeping (ms/turn) | {med['bookkeeping_per_turn_ms']:.1f} | |")
    print(
        f"| one-time pack, cold run 1 / warm (s) | {runs[0]['pack_s']:.2f} / {med['pack_s']:.2f} | |"
    )
    print(
        f"| model time, all turns (s) | {med['model_s']:.2f} |"
        + (f" {statistics.median(p['model_s'] for p in peers):.2f} |" if peers else "")
    )
    if peers:
        print(
            f"\nratio peer / v4code (overhead per turn): {peer_med / med['overhead_per_turn_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()
