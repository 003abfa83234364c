"""torch CPU threads for the local provider: prefill and decode speed with 1, 2, ... threads.

One process, the thread counts interleaved (1, 2, 1, 2, ...) so a change in the machine's load
hits them alike; medians per count. Each measurement is one LocalProvider.complete(): a fresh
cache, the prompt (about --context tokens) prefilled, then --decode tokens generated (steered to
ordinary text, so every run decodes the same number of tokens). The load average is printed
before and after: figures are only meaningful on a quiet machine (load < 1).

    python bench/local_threads.py --context 4096 --decode 32 --threads 1 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import torch

    from agent.providers.local import LocalProvider
    from agent.providers.sampling import SamplingParams
    from agent.tokenizer import load_tokenizer
    from model import build_engine
    from model.presets import preset

    engine = build_engine(preset(args.preset), device="cpu")
    tok = load_tokenizer(None)
    filler = "".join(f"line {i}: value {i * 7} is kept.\n" for i in range(args.context // 9))
    messages = [{"role": "user", "content": filler}]
    word = tok.encode(" kept")[0]

    def steer(generated, logits):  # the same ordinary token every step: no early stop
        forced = torch.full_like(logits, float("-inf"))
        forced[word] = 0.0
        return forced

    def measure(threads: int) -> tuple[float, float, int]:
        torch.set_num_threads(threads)
        provider = LocalProvider(
            engine,
            tok,
            processors=[steer],
            sampling=SamplingParams(seed=0),
            max_output_tokens=args.decode,
            context_tokens=args.context * 2 + 1024,
        )
        stats = provider.complete(messages, []).extra["_v4_stats"]
        prefill = stats["prefilled"] / stats["prefill_s"]
        decode = stats["generated"] / stats["decode_s"]
        return prefill, decode, stats["prefilled"]

    load_before = os.getloadavg()
    measure(args.threads[0])  # warm-up: first-call allocations, lazy imports
    results: dict[int, list[tuple[float, float, int]]] = {n: [] for n in args.threads}
    started = time.perf_counter()
    for _ in range(args.repeat):
        for n in args.threads:
            results[n].append(measure(n))
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    cores = os.cpu_count()
    print(
        f"engine: {args.preset} on cpu (fp32); {cores} CPUs; load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f}; {elapsed:.0f} s; medians of "
        f"{args.repeat}, thread counts interleaved"
    )
    print()
    print(
        "| torch threads | prompt tokens | prefill tok/s | decode tok/s | prefill vs 1 | decode vs 1 |"
    )
    print("|---|---|---|---|---|---|")
    base = None
    for n in args.threads:
        prefill = statistics.median(r[0] for r in results[n])
        decode = statistics.median(r[1] for r in results[n])
        if base is None:
            base = (prefill, decode)
        print(
            f"| {n} | {results[n][0][2]:,} | {prefill:,.0f} | {decode:.1f} "
            f"| {prefill / base[0]:.2f}x | {decode / base[1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
