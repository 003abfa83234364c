"""Speed measurements of the engine (`v4code model bench`, and bench/engine.py for the peer runs).

Prefill: one forward over `context` random tokens into a fresh cache (last position's logits
only). Decode: `decode_tokens` single-token steps after that prefill. Peak memory: on CPU the
process's peak RSS over the run (Linux VmHWM, reset before the measured region, so weights loaded
earlier count only if they are resident); on accelerators the device allocator's peak.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Any

import torch

from model.device import peak_memory_allocated, reset_peak_memory, synchronize


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"{field}:\s+(\d+)", f.read())
        return int(m[1]) if m else 0
    except OSError:
        return 0


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that receives `peak_bytes` (and `base_bytes`) of the enclosed region: the
    accelerator allocator's peak where torch exposes one, else the process's peak RSS."""
    out: dict[str, int] = {}
    base = reset_peak_memory(device)
    if peak_memory_allocated(device) is not None:
        out["base_bytes"] = base
        yield out
        out["peak_bytes"] = peak_memory_allocated(device)
        return
    try:  # Linux: reset the high-water mark so earlier peaks (loading) do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    out["base_bytes"] = rss_bytes()
    yield out
    out["peak_bytes"] = _status_kb("VmHWM") * 1024


def random_ids(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g)


def make_resident(engine) -> None:
    """Touch every weight once, so memory-mapped weights count before a measured region (as
    they would for a loader that copies them into memory)."""
    with torch.no_grad():
        for t in engine.model.state_dict().values():
            if t.numel() and t.is_floating_point():
                t.sum()


def bench_engine(engine, context: int, decode_tokens: int = 16, seed: int = 0) -> dict[str, Any]:
    """Prefill `context` tokens, then decode `decode_tokens` more; times and peak memory."""
    make_resident(engine)
    warm = 1 if decode_tokens else 0  # one untimed step: first-call allocations are not speed
    ids = random_ids(context + warm + decode_tokens, engine.config.vocab_size, seed).to(
        engine.device
    )
    cache = engine.new_cache(context + warm + decode_tokens)
    with peak_memory(engine.device) as mem:
        synchronize(engine.device)
        t0, c0 = time.perf_counter(), time.process_time()
        engine.forward(ids[:, :context], cache, last_only=True)
        synchronize(engine.device)
        prefill, cpu = time.perf_counter() - t0, time.process_time() - c0
    for i in range(context, context + warm):
        engine.forward(ids[:, i : i + 1], cache)
    t0 = time.perf_counter()
    for i in range(context + warm, context + warm + decode_tokens):
        engine.forward(ids[:, i : i + 1], cache)
    synchronize(engine.device)
    decode = time.perf_counter() - t0
    return {
        "context": context,
        "prefill_s": round(prefill, 3),
        "prefill_cpu_s": round(cpu, 3),  # process CPU time: less sensitive to a busy machine
        "prefill_tok_s": round(context / prefill, 1),
        "decode_tokens": decode_tokens,
        "decode_tok_s": round(decode_tokens / decode, 2) if decode_tokens else None,
        "decode_ms_per_token": round(1000 * decode / decode_tokens, 2) if decode_tokens else None,
        "peak_bytes": mem["peak_bytes"],
        "peak_delta_bytes": mem["peak_bytes"] - mem["base_bytes"],
        "cache_bytes": cache.nbytes(),
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
    }


def bench_layer_decode(
    config, kind: str, context: int, device: torch.device, dtype: torch.dtype, steps: int = 5
):
    """One decode step of a single attention layer of `config`'s shape at `context` tokens.

    The layer's pools are filled with random entries instead of being prefilled (a 1M prefill of
    a Flash-sized layer would take hours on a CPU); the step does exactly the work of a real
    decode step at that length: indexer scores over all CSA keys, top-k gather, or dense HCA."""
    from model.cache import LayerCache
    from model.config import CSA, HCA, SWA
    from model.model import Attention, Rope, params_in

    layer = config.layer_types.index(kind)
    with params_in(dtype):
        attn = Attention(config, layer).to(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    attn.requires_grad_(False)
    lc = LayerCache(config, layer, context + steps, device, dtype)
    start = context
    with torch.no_grad():
        lc.window.copy_(torch.randn(lc.window.shape, generator=g).to(dtype))
        for state in lc.states().values():
            n = start // state.ratio
            for i in range(0, n, 65536):  # fill in slices: bounded temporary memory
                m = min(n, i + 65536) - i
                state.pool[i : i + m] = torch.randn(m, state.out_dim, generator=g).to(dtype)
    rope = Rope(config.rope if kind == SWA else config.compress_rope, config.rope_head_dim, device)
    x = torch.randn(steps, 1, config.dim, generator=g).to(device=device, dtype=dtype)
    times = []
    with torch.no_grad():
        for i in range(steps):
            synchronize(device)
            t0 = time.perf_counter()
            attn(x[i], start + i, lc, rope, False)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    visible = context // config.ratio(layer) if kind in (CSA, HCA) else 0
    return {
        "kind": kind,
        "context": context,
        "compressed_entries": visible,
        "attended": config.window_size
        + (min(visible, config.index_topk) if kind == CSA else visible),
        "ms_median": round(1000 * sorted(times)[len(times) // 2], 2),
        "ms_min": round(1000 * min(times), 2),
        "cache_bytes": sum(t.numel() * t.element_size() for t in lc.tensors()),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "layer": kind,
    }
