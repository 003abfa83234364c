"""KV reuse of the local provider: what a second run on the same repository saves.

Two modes, each printing a table (markdown) with the peer measured in the same run:

* provider (default): LocalProvider on a random-weight engine (a preset, or --model-path).
  For each repository size: the peer answers question B with no disk cache at all (prefill
  only), run 1 answers question A with an empty disk cache (prefill + storing the repository
  prefix), run 2 is a new provider (a new process, in effect) asking question B with the cache
  run 1 left. Columns: prompt tokens, tokens prefilled, tokens served from disk, states saved,
  seconds spent saving, time to the first generated token, and that time over the peer's.
* cli (--cli DIR): `v4code ask` twice through the whole stack on the checkpoint DIR (as a user
  runs it), with the second run reusing the first one's persisted prefix; wall time and the
  first turn's prefilled tokens of each run, from `--output-format jsonl`.

--repeat N repeats every measurement N times (fresh caches each time) and prints medians.

    python bench/local_reuse.py --sizes 2000 8000 32000 --device cpu --threads 1 --repeat 3
    python bench/local_reuse.py --cli /tmp/tiny-ckpt --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _repo_text(tokens: int) -> str:
    """Python-looking source of about `tokens` V4 tokens (deterministic)."""
    lines, i = [], 0
    while len(lines) * 21 < tokens:  # ~21 tokens per line below
        lines.append(
            f"def helper_{i}(value, scale={i % 7}):\n    return (value * scale) % {i + 3}\n"
        )
        i += 1
    return '<file path="helpers.py">\n' + "".join(lines) + "</file>"


def _messages(repo: str, question: str) -> list[dict]:
    from agent.providers.v4_format import CACHE_BREAKPOINT

    repository = f"Here is the repository.\n\n{repo}"
    return [
        {"role": "system", "content": "You are v4code, answering questions about one repository."},
        {
            "role": "user",
            "content": f"{repository}\n\n# Question\n\n{question}",
            CACHE_BREAKPOINT: len(repository),  # as the agent marks it
        },
    ]


def provider_mode(args: argparse.Namespace) -> None:
    import torch

    from agent.providers.kvstore import KVStore
    from agent.providers.local import LocalProvider
    from agent.providers.sampling import SamplingParams
    from agent.tokenizer import load_tokenizer
    from model import build_engine, load_model
    from model.presets import preset

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_path:
        engine = load_model(args.model_path, device=args.device)
        tok = load_tokenizer(args.model_path)
    else:
        engine = build_engine(preset(args.preset), device=args.device)
        tok = load_tokenizer(None)
    tools = [
        {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    ]

    def run(store_dir: Path | None, repo: str, question: str) -> dict:
        provider = LocalProvider(
            engine,
            tok,
            store=KVStore(store_dir, align=128) if store_dir else None,
            sampling=SamplingParams(seed=0),
            max_output_tokens=1,
            context_tokens=max(args.sizes) * 2 + 8192,
        )
        started = time.perf_counter()
        reply = provider.complete(_messages(repo, question), tools)
        _sync(engine)
        stats = reply.extra["_v4_stats"]
        stats["first_token_s"] = time.perf_counter() - started
        return stats

    def median_stats(runs: list[dict]) -> dict:
        out = dict(runs[0])
        for key in ("first_token_s", "save_s", "load_s", "prefill_s"):
            out[key] = statistics.median([r.get(key, 0.0) for r in runs])
        return out

    rows, disk = [], {}
    for size in args.sizes:
        repo = _repo_text(size)
        peers, firsts, seconds = [], [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as warm:
                peers.append(run(None, repo, "Which helper has the largest modulus?"))
                firsts.append(run(Path(warm), repo, "What does helper_3 return?"))
                seconds.append(run(Path(warm), repo, "Which helper has the largest modulus?"))
                disk[size] = KVStore(Path(warm), align=128).usage_bytes()
        rows.append((size, median_stats(peers), median_stats(firsts), median_stats(seconds)))

    print(
        f"engine: {args.model_path or args.preset} on {engine.device} ({engine.dtype}), "
        f"torch threads {torch.get_num_threads()}, medians of {args.repeat}"
    )
    print()
    print(
        "| repo tokens | run | prompt | prefilled | from disk | saved | save s | first token s "
        "| vs peer |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, peer, first, second in rows:
        for name, s in (
            ("peer: question B, no disk cache", peer),
            ("1: question A, empty cache", first),
            ("2: question B, warm cache", second),
        ):
            ratio = s["first_token_s"] / peer["first_token_s"]
            print(
                f"| {size:,} | {name} | {s['prompt_tokens']:,} | {s['prefilled']:,} "
                f"| {s['reused_disk']:,} | {len(s['saved_prefixes'])} | {s.get('save_s', 0):.3f} "
                f"| {s['first_token_s']:.3f} | {ratio:.2f}x |"
            )
    print()
    for size, *_ in rows:
        print(f"disk cache after runs 1-2, {size:,}-token repository: {disk[size] / 2**20:.1f} MiB")


def _sync(engine) -> None:
    try:
        from model.device import synchronize

        synchronize(engine.device)
    except ImportError:
        pass


def cli_mode(args: argparse.Namespace) -> None:
    pairs = [_cli_pair(args) for _ in range(args.repeat)]
    print(
        f"checkpoint: {args.cli}; repository of ~{args.cli_tokens:,} tokens; `v4code ask`; "
        f"medians of {args.repeat} pairs"
    )
    print()
    print(
        "| run | exit | wall s | prompt | prefilled | from disk | load s | save s | prefill s "
        "| wall vs 1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    walls = [statistics.median([pair[i][1] for pair in pairs]) for i in (0, 1)]
    for i in (0, 1):
        codes = sorted({pair[i][0] for pair in pairs})
        s = pairs[0][i][2]
        timing = {
            k: statistics.median([pair[i][2].get(k, 0.0) for pair in pairs])
            for k in ("load_s", "save_s", "prefill_s")
        }
        print(
            f"| {i + 1} | {','.join(map(str, codes))} | {walls[i]:.2f} | {s.get('prompt_tokens', 0):,} "
            f"| {s.get('prefilled', 0):,} | {s.get('reused_disk', 0):,} | {timing['load_s']:.3f} "
            f"| {timing['save_s']:.3f} | {timing['prefill_s']:.3f} | {walls[i] / walls[0]:.2f}x |"
        )


def _cli_pair(args: argparse.Namespace) -> list[tuple[int, float, dict]]:
    """Two `v4code ask` runs with different questions on one repository, one fresh cache."""
    with tempfile.TemporaryDirectory() as home:
        repo = Path(home) / "repo"
        repo.mkdir()
        source = _repo_text(args.cli_tokens).split("\n", 1)[1].rsplit("</file>", 1)[0]
        (repo / "helpers.py").write_text(source)
        # The random checkpoint is steered to the same short answer in both runs
        # (tests/local/forcing.py), so they differ only in what they prefill.
        script = Path(home) / "script.json"
        script.write_text(json.dumps(["Done.</think>See helpers.py:1.<｜end▁of▁sentence｜>"]))
        env = dict(
            os.environ,
            XDG_CACHE_HOME=f"{home}/cache",
            XDG_STATE_HOME=f"{home}/state",
            XDG_CONFIG_HOME=f"{home}/config",
            NO_COLOR="1",
            PYTHONPATH=str(ROOT),
            V4CODE_LOCAL_LOGITS_PROCESSOR="tests.local.forcing:from_env",
            V4CODE_TEST_FORCE_SCRIPT=str(script),
        )
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        results = []
        for question in ("What does helper_3 return?", "Which helper has the largest modulus?"):
            command = [sys.executable, "-m", "agent.cli", "ask", question, "--repo", str(repo)]
            command += ["--provider", "local", "--model-path", args.cli]
            command += ["--output-format", "jsonl", "--max-turns", "1"]
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
            wall = time.perf_counter() - started
            events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
            turns = [e for e in events if e.get("event") == "turn"]
            stats = turns[0]["reply"].get("_v4_stats", {}) if turns else {}
            results.append((proc.returncode, wall, stats))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model-path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--cli", metavar="CHECKPOINT", help="run `v4code ask` twice on this checkpoint"
    )
    parser.add_argument("--cli-tokens", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (medians are shown)")
    args = parser.parse_args()
    if args.cli:
        cli_mode(args)
    else:
        provider_mode(args)


if __name__ == "__main__":
    main()
