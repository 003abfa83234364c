"""Engine speed benchmark (issue 5), compared in the same run with transformers' implementation.

    python bench/engine.py                 # the full run (several minutes on 2 cores)
    python bench/engine.py --quick         # short contexts, no 1M layer step (a smoke run)
    python bench/engine.py --device cuda   # on a GPU (bf16; transformers runs in bf16 too)

Both engines load the same random-weight checkpoint (the `bench` preset: 4 layers, hidden 256,
8 heads x 128, SWA/CSA/HCA/CSA, V4-Flash's other widths scaled down - see model/presets.py).
Every measurement runs in a fresh subprocess so its peak memory is its own. Both peers use the
same number of CPU threads (default 1: on shared, oversubscribed cores OpenMP's thread
hand-offs make wall times erratic; --threads 2 for a quiet 2-core machine).

Measured: 4K prefill time and peak RSS for both (transformers computes only the last position's
logits, like ours: `logits_to_keep=1`); 64K prefill time and peak (ours; transformers' dense
masks would need ~130 GB); decode tokens/s at 4K (both) and 64K (ours); one decode step of a
single V4-Flash-shaped CSA and HCA layer at 1,048,576 tokens (ms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- jobs (each runs in its own process) ------------------------------------------------------


def job_ours(path: str, context: int, decode: int, device: str) -> dict:
    from model import load_model
    from model.bench import bench_engine

    engine = load_model(path, device=device)
    return bench_engine(engine, context, decode) | {"engine": "v4code"}


def job_hf(path: str, context: int, decode: int, device: str) -> dict:
    import torch
    from transformers import DeepseekV4ForCausalLM, DynamicCache

    from model.bench import peak_memory, random_ids
    from model.device import default_dtype, pick_device, synchronize

    dev = pick_device(device)
    dtype = default_dtype(dev)  # what load_model picks for ours
    model = DeepseekV4ForCausalLM.from_pretrained(path, dtype=dtype).to(dev).eval()
    warm = 1 if decode else 0  # one untimed decode step, as for ours
    ids = random_ids(context + warm + decode, model.config.vocab_size).to(dev)
    cache = DynamicCache(config=model.config) if decode else None
    with torch.no_grad(), peak_memory(dev) as mem:
        synchronize(dev)
        t0 = time.perf_counter()
        c0 = time.process_time()
        model(ids[:, :context], past_key_values=cache, use_cache=bool(decode), logits_to_keep=1)
        synchronize(dev)
        prefill, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = None
    if decode:
        with torch.no_grad():
            for i in range(context, context + warm):
                model(ids[:, i : i + 1], past_key_values=cache, use_cache=True)
            t0 = time.perf_counter()
            for i in range(context + warm, context + warm + decode):
                model(ids[:, i : i + 1], past_key_values=cache, use_cache=True)
        synchronize(dev)
        steps = time.perf_counter() - t0
    return {
        "engine": "transformers",
        "context": context,
        "prefill_s": round(prefill, 3),
        "prefill_cpu_s": round(cpu, 3),
        "prefill_tok_s": round(context / prefill, 1),
        "decode_tokens": decode,
        "decode_tok_s": round(decode / steps, 2) if steps else None,
        "peak_bytes": mem["peak_bytes"],
        "peak_delta_bytes": mem["peak_bytes"] - mem["base_bytes"],
        "device": str(dev),
        "dtype": str(dtype).removeprefix("torch."),
    }


def job_layer(kind: str, context: int, device: str) -> dict:
    from model.bench import bench_layer_decode
    from model.device import default_dtype, pick_device
    from model.presets import preset

    dev = pick_device(device)
    return bench_layer_decode(preset("v4-flash"), kind, context, dev, default_dtype(dev))


JOBS = {"ours": job_ours, "hf": job_hf, "layer": job_layer}


def run_median(name: str, *args, threads: int, repeats: int) -> dict:
    """Run a job `repeats` times (each in a fresh process); every numeric field is the median
    over the runs, and `runs` keeps them all."""
    runs = [run_job(name, *args, threads=threads) for _ in range(repeats)]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    merged = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = sorted(r[key] for r in ok if isinstance(r.get(key), (int, float)))
            merged[key] = values[len(values) // 2]
    merged["runs"] = runs
    return merged


def run_job(name: str, *args, threads: int) -> dict:
    """Run one job in a fresh interpreter; returns its JSON result (or an error record)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--job", json.dumps([name, *args]), "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {
            "job": name,
            "args": args,
            "error": proc.stderr.strip().splitlines()[-1:] or ["failed"],
        }
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["job_wall_s"] = round(time.perf_counter() - t0, 1)
    return result


# ---- the report ------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1K/8K contexts, no 1M layer step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.job:
        name, *job_args = json.loads(args.job)
        print(json.dumps(JOBS[name](*job_args)))
        return

    short, long_, layer_ctx = (1024, 8192, 0) if args.quick else (4096, 65536, 1_048_576)
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "device": args.device,
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        from model.init import init_checkpoint

        path = str(Path(tmp) / "bench")
        init_checkpoint(path, "bench", seed=0)
        print(f"checkpoint: preset bench, random weights, in {path}", file=sys.stderr)
        d = args.decode_tokens
        plan = [
            ("hf_short", "hf", path, short, 0, args.device),
            ("ours_short", "ours", path, short, d, args.device),
            ("hf_short_decode", "hf", path, short, d, args.device),
            ("ours_long", "ours", path, long_, d, args.device),
        ]
        if layer_ctx:
            plan += [
                ("layer_csa", "layer", "csa", layer_ctx, args.device),
                ("layer_hca", "layer", "hca", layer_ctx, args.device),
            ]
        for key, name, *job_args in plan:
            print(f"running {key} ...", file=sys.stderr)
            results[key] = run_median(name, *job_args, threads=args.threads, repeats=args.repeats)
            print(f"  {json.dumps(results[key])}", file=sys.stderr)

    hf, ours, hfd, long_r = (
        results["hf_short"],
        results["ours_short"],
        results["hf_short_decode"],
        results["ours_long"],
    )
    lines = [
        f"machine: {results['machine']}; device {args.device}; {args.threads} thread(s) for both engines; "
        f"median of {args.repeats} run(s) each",
        "",
        "| measurement | transformers | v4code | ratio |",
        "|---|---|---|---|",
    ]
    if "error" not in hf and "error" not in ours:
        lines += [
            f"| {short:,}-token prefill, wall time | {hf['prefill_s']:.2f} s | {ours['prefill_s']:.2f} s | "
            f"{hf['prefill_s'] / ours['prefill_s']:.1f}x faster |",
            f"| {short:,}-token prefill, process CPU time | {hf['prefill_cpu_s']:.2f} s | {ours['prefill_cpu_s']:.2f} s | "
            f"{hf['prefill_cpu_s'] / ours['prefill_cpu_s']:.1f}x less |",
            f"| {short:,}-token prefill, peak RSS | {mib(hf['peak_bytes'])} MiB | {mib(ours['peak_bytes'])} MiB | "
            f"{ours['peak_bytes'] / hf['peak_bytes']:.2f} of it |",
            f"| {short:,}-token prefill, peak above the loaded model | {mib(hf['peak_delta_bytes'])} MiB | "
            f"{mib(ours['peak_delta_bytes'])} MiB | {ours['peak_delta_bytes'] / max(hf['peak_delta_bytes'], 1):.3f} of it |",
        ]
    if "error" not in hfd and "error" not in ours:
        lines.append(
            f"| decode at {short:,} context | {hfd['decode_tok_s']:.1f} tok/s | {ours['decode_tok_s']:.1f} tok/s | "
            f"{ours['decode_tok_s'] / hfd['decode_tok_s']:.1f}x |"
        )
    if "error" not in long_r:
        lines += [
            f"| {long_:,}-token prefill, time | (dense masks: ~{8 * long_ * long_ * 4 / 2**30:.0f} GiB per layer) | "
            f"{long_r['prefill_s']:.1f} s ({long_r['prefill_tok_s']:.0f} tok/s) | |",
            f"| {long_:,}-token prefill, peak RSS | | {mib(long_r['peak_bytes'])} MiB | |",
            f"| decode at {long_:,} context | | {long_r['decode_tok_s']:.1f} tok/s | |",
        ]
    for key in ("layer_csa", "layer_hca"):
        r = results.get(key)
        if r and "error" not in r:
            lines.append(
                f"| one decode step, V4-Flash {r['kind'].upper()} layer at {r['context']:,} tokens "
                f"({r['attended']:,} entries attended, {r['dtype']}) | | {r['ms_median']:.1f} ms | |"
            )
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["", f"errors: {errors}"]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
