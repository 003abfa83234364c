"""Benchmark: exact DeepSeek-V4 token counting, v4code (tiktoken path) against `tokenizers`.

    python bench/tokenizer.py [--runs 5] [--threads 2] [--files N] [--load-runs 5]

Corpus: every .py file of the installed Python standard library (real code on every machine,
~8M V4 tokens). Both engines run in this process on the same texts: `tokenizers` with
--threads threads (RAYON_NUM_THREADS, set before it is imported), v4code with one thread per
CPU it may use, so the two match only when --threads equals that count (2 here); runs alternate
between engines and the table shows medians. The ids are checked equal before timing.

Load time is measured in fresh processes (the figure excludes interpreter start-up and imports):
v4code from its rank cache, v4code on first use (empty cache: JSON parse, ranks, cache write),
and `tokenizers.Tokenizer.from_file`. Quote the ratios; the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per engine")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--files", type=int, default=0, help="use only the first N files")
    parser.add_argument("--load-runs", type=int, default=5, help="fresh processes per load figure")
    return parser.parse_args()


ARGS = parse_args()
os.environ["RAYON_NUM_THREADS"] = str(ARGS.threads)  # before tokenizers starts its pool
sys.path.insert(0, str(ROOT))

from tokenizers import Tokenizer  # noqa: E402

import agent.tokenizer as tk  # noqa: E402


def corpus(limit: int) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(stdlib.rglob("*.py")):
        if {"site-packages", "dist-packages"} & set(path.relative_to(stdlib).parts):
            continue
        texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return texts[:limit] if limit else texts


LOAD_SNIPPET = {
    "v4code, cached ranks": (
        "import agent.tokenizer as tk; tk.load_tokenizer()",  # warms the cache
        "tk.load_tokenizer()",
    ),
    "v4code, first use (no cache)": ("import agent.tokenizer as tk", "tk.load_tokenizer()"),
    "tokenizers.from_file": (
        "import agent.tokenizer as tk; from tokenizers import Tokenizer",
        "Tokenizer.from_file(tk.tokenizer_json_path())",
    ),
}


def load_time(setup: str, stmt: str, runs: int) -> float:
    """Median seconds of `stmt` in fresh processes, each with an empty XDG cache that `setup` may
    fill first (so "cached" means cached by an earlier process, as for a user)."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); {setup}\n"
        f"t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "XDG_CACHE_HOME": cache}
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    texts = corpus(ARGS.files)
    ours = tk.load_tokenizer()
    theirs = Tokenizer.from_file(tk.tokenizer_json_path())
    chars = sum(map(len, texts))

    # Equality first: a fast wrong answer is worthless.
    expected = [len(e.ids) for e in theirs.encode_batch(texts, add_special_tokens=False)]
    got = ours.count_many(texts)
    if got != expected:
        bad = sum(a != b for a, b in zip(got, expected, strict=True))
        sys.exit(f"MISMATCH: {bad} files count differently")
    tokens = sum(expected)

    engines = {
        "v4code count_many (tiktoken)": lambda: ours.count_many(texts),
        "v4code encode_many (tiktoken)": lambda: ours.encode_many(texts),
        "tokenizers encode_batch": lambda: theirs.encode_batch(texts, add_special_tokens=False),
    }
    if hasattr(theirs, "encode_batch_fast"):  # tokenizers >= 0.21: no offsets
        engines["tokenizers encode_batch_fast"] = lambda: theirs.encode_batch_fast(
            texts, add_special_tokens=False
        )
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(ARGS.runs):
        for name, run in engines.items():  # interleaved, so drift hits every engine alike
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    peer = statistics.median(times["tokenizers encode_batch"])

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import tiktoken
    import tokenizers

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, load average {load}")
    print(
        f"Python {platform.python_version()}, tiktoken {tiktoken.__version__}, "
        f"tokenizers {tokenizers.__version__}"
    )
    print(f"corpus: {len(texts)} stdlib .py files, {chars / 1e6:.1f}M chars, {tokens:,} V4 tokens")
    mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"threads: tokenizers {ARGS.threads}, v4code {mine}; median of {ARGS.runs} runs\n")
    print("| engine | median s | M tokens/s | vs tokenizers |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {tokens / median / 1e6:.2f} | {peer / median:.2f}x |")

    print(f"\nload (median of {ARGS.load_runs} fresh processes, imports excluded)\n")
    print("| load | median s |")
    print("|---|---:|")
    for name, (setup, stmt) in LOAD_SNIPPET.items():
        print(f"| {name} | {load_time(setup, stmt, ARGS.load_runs):.3f} |")


if __name__ == "__main__":
    main()
