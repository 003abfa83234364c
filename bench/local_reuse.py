"""KV reuse of the local provider: what a second run on the same repository saves.

Two modes, each printing a table (markdown) with the peer measured in the same run:

* provider (default): LocalProvider on a random-weight engine (a preset, or --model-path).
  For each repository size: run 1 answers question A with an empty disk cache (cold), run 2 is a
  new provider (a new process, in effect) asking question B with the cache run 1 left (warm),
  and the peer asks B again with an empty cache. Columns: prompt tokens, tokens prefilled,
  tokens served from disk, time to the first generated token.
* cli (--cli DIR): `v4code ask` twice through the whole stack on the checkpoint DIR (as a user
  runs it), with the second run reusing the first one's persisted prefix; wall time and the
  first turn's prefilled tokens of each run, from `--output-format jsonl`.

    python bench/local_reuse.py --sizes 2000 8000 32000 --device cpu
    python bench/local_reuse.py --cli /tmp/tiny-ckpt
"""

from __future__ import annotations

import argparse
import json
import os
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
    return [
        {"role": "system", "content": "You are v4code, answering questions about one repository."},
        {
            "role": "user",
            "content": f"Here is the repository.\n\n{repo}\n\n# Question\n\n{question}",
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

    def run(store_dir: Path, repo: str, question: str) -> dict:
        provider = LocalProvider(
            engine,
            tok,
            store=KVStore(store_dir, align=128),
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

    rows, disk = [], {}
    for size in args.sizes:
        repo = _repo_text(size)
        with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as cold:
            first = run(Path(warm), repo, "What does helper_3 return?")
            second = run(Path(warm), repo, "Which helper has the largest modulus?")
            peer = run(Path(cold), repo, "Which helper has the largest modulus?")
            disk[size] = KVStore(Path(warm), align=128).usage_bytes()
        rows.append((size, first, second, peer))

    print(
        f"engine: {args.model_path or args.preset} on {engine.device} ({engine.dtype}), "
        f"torch threads {torch.get_num_threads()}"
    )
    print()
    print(
        "| repo tokens | run | prompt | prefilled | from disk | saved | first token s | vs peer |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, first, second, peer in rows:
        for name, s in (
            ("1: question A, empty cache", first),
            ("2: question B, warm cache", second),
            ("peer: question B, empty cache", peer),
        ):
            ratio = s["first_token_s"] / peer["first_token_s"]
            print(
                f"| {size:,} | {name} | {s['prompt_tokens']:,} | {s['prefilled']:,} | {s['reused_disk']:,} "
                f"| {len(s['saved_prefixes'])} | {s['first_token_s']:.3f} | {ratio:.2f}x |"
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
            OMP_NUM_THREADS=str(args.threads or 1),
            PYTHONPATH=str(ROOT),
            V4CODE_LOCAL_LOGITS_PROCESSOR="tests.local.forcing:from_env",
            V4CODE_TEST_FORCE_SCRIPT=str(script),
        )
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
    print(f"checkpoint: {args.cli}; repository of ~{args.cli_tokens:,} tokens; `v4code ask`")
    print()
    print(
        "| run | exit | wall s | prompt | prefilled | from disk | load s | prefill s | wall vs 1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (code, wall, s) in enumerate(results, 1):
        print(
            f"| {i} | {code} | {wall:.2f} | {s.get('prompt_tokens', 0):,} "
            f"| {s.get('prefilled', 0):,} | {s.get('reused_disk', 0):,} | {s.get('load_s', 0):.3f} "
            f"| {s.get('prefill_s', 0):.3f} | {wall / results[0][1]:.2f}x |"
        )


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
    args = parser.parse_args()
    if args.cli:
        cli_mode(args)
    else:
        provider_mode(args)


if __name__ == "__main__":
    main()
