"""Architecture summary by formula: parameter counts, KV-cache bytes, per-token FLOPs.

Pure Python (no torch): `v4code model info v4-flash` must work on the base install. The cache
formula here is written independently of `model/cache.py`, and a test checks that the cache the
engine really allocates matches it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import CSA, HCA, SWA, ModelConfig

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}

# Serving-format record sizes from vLLM (design doc section 5.1), for the reference rows.
V4_FP8_ENTRY = 584  # 448 FP8 nope + 64 BF16 rope + 7 UE8M0 scales + pad
V4_FP4_INDEX_ENTRY = 68  # 128-dim indexer key as MXFP4
V32_LAYERS = 61
V32_MLA_FP8, V32_INDEX_FP8 = 656, 132
V32_MLA_DIM, V32_INDEX_DIM = 576, 128


def dtype_bytes(dtype: str) -> int:
    try:
        return DTYPE_BYTES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (use float32 or bfloat16)") from None


# ---- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every logical weight of the trunk (MTP block excluded)
    active: int  # weights touched per token: all but the unselected routed experts
    embedding: int  # embed + head
    routed_experts: int
    mtp: int  # the MTP block (not run by this engine)


def _attention_params(c: ModelConfig, kind: str) -> int:
    hd, h = c.head_dim, c.n_heads
    p = c.dim * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * h * hd
    p += c.dim * hd + hd  # wkv + kv_norm
    p += h * hd * c.o_lora_rank + c.o_groups * c.o_lora_rank * c.dim  # wo_a (grouped) + wo_b
    p += h  # attn_sink
    if kind == CSA:
        p += 2 * c.dim * 2 * hd + c.csa_ratio * 2 * hd + hd  # overlapping compressor
        ci = c.index_head_dim
        p += c.q_lora_rank * c.index_n_heads * ci + c.dim * c.index_n_heads
        p += 2 * c.dim * 2 * ci + c.csa_ratio * 2 * ci + ci  # indexer compressor
    elif kind == HCA:
        p += 2 * c.dim * hd + c.hca_ratio * hd + hd
    return p


def _block_params(c: ModelConfig, kind: str, hashed: bool) -> tuple[int, int]:
    """(total, routed-expert) parameters of one block."""
    mix = (2 + c.hc_mult) * c.hc_mult
    p = _attention_params(c, kind) + 2 * c.dim  # + attn_norm, ffn_norm
    p += 2 * (mix * c.hc_mult * c.dim + mix + 3)
    expert = 3 * c.dim * c.moe_inter_dim
    p += c.n_routed_experts * c.dim + (0 if hashed else c.n_routed_experts)
    p += c.n_shared_experts * expert
    routed = c.n_routed_experts * expert
    return p + routed, routed


def param_counts(c: ModelConfig) -> ParamCounts:
    total = routed = 0
    for kind, hashed in zip(c.layer_types, c.hash_layers, strict=True):
        t, r = _block_params(c, kind, hashed)
        total, routed = total + t, routed + r
    embedding = c.vocab_size * c.dim * (1 if c.tie_word_embeddings else 2)
    total += embedding + c.dim + c.hc_mult * c.hc_mult * c.dim + c.hc_mult + 1
    active_experts = routed * c.n_activated_experts // max(c.n_routed_experts, 1)
    mtp = 0
    if c.n_mtp_layers:
        t, _ = _block_params(c, SWA, False)
        mtp = c.n_mtp_layers * (
            t + 2 * c.dim * c.dim + 3 * c.dim + c.hc_mult * c.hc_mult * c.dim + c.hc_mult + 1
        )
    return ParamCounts(
        total=total,
        active=total - routed + active_experts,
        embedding=embedding,
        routed_experts=routed,
        mtp=mtp,
    )


# ---- KV cache -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheFormula:
    entry_bytes: dict[str, int]  # per compressed entry, by layer kind (CSA includes indexer key)
    per_token: float  # amortised bytes per token (compressed pools)
    fixed: int  # window rings + compressor tails/overlaps (independent of length)

    def at(self, c: ModelConfig, n_tokens: int) -> int:
        """Exact bytes of a cache preallocated for n_tokens (pools hold floor(n / ratio) entries)."""
        total = self.fixed
        for kind in c.layer_types:
            if kind == CSA:
                total += (n_tokens // c.csa_ratio) * self.entry_bytes[CSA]
            elif kind == HCA:
                total += (n_tokens // c.hca_ratio) * self.entry_bytes[HCA]
        return total


def cache_formula(c: ModelConfig, dtype: str = "bfloat16") -> CacheFormula:
    """This engine's cache: entries stored in the compute dtype; tails and overlaps in fp32."""
    b = dtype_bytes(dtype)
    hd, ci = c.head_dim, c.index_head_dim
    entry = {CSA: (hd + ci) * b, HCA: hd * b}
    per_token = 0.0
    fixed = 0
    for kind in c.layer_types:
        fixed += c.window_size * hd * b
        if kind == CSA:
            per_token += entry[CSA] / c.csa_ratio
            # tails (kv + gate, both halves) and the previous block's low half, for both
            # the main and the indexer compressor; fp32 because compression runs in fp32
            fixed += 4 * (c.csa_ratio * 2 * (2 * hd) + c.csa_ratio * 2 * hd)
            fixed += 4 * (c.csa_ratio * 2 * (2 * ci) + c.csa_ratio * 2 * ci)
        elif kind == HCA:
            per_token += entry[HCA] / c.hca_ratio
            fixed += 4 * c.hca_ratio * 2 * hd
    return CacheFormula(entry_bytes=entry, per_token=per_token, fixed=fixed)


def dense_mqa_bytes_per_token(c: ModelConfig, dtype: str = "bfloat16") -> int:
    """The same model with plain full attention: one shared 512-dim KV per layer per token."""
    return c.n_layers * c.head_dim * dtype_bytes(dtype)


def v4_serving_bytes_per_token(c: ModelConfig) -> float:
    """DeepSeek's serving format (FP8 entries, MXFP4 indexer keys; vLLM record sizes)."""
    return (
        c.count(CSA) * (V4_FP8_ENTRY + V4_FP4_INDEX_ENTRY) / c.csa_ratio
        + c.count(HCA) * V4_FP8_ENTRY / c.hca_ratio
    )


def v32_bytes_per_token(fp8: bool) -> int:
    """DeepSeek-V3.2 (MLA + DSA indexer on all 61 layers)."""
    if fp8:
        return V32_LAYERS * (V32_MLA_FP8 + V32_INDEX_FP8)
    return V32_LAYERS * (V32_MLA_DIM + V32_INDEX_DIM) * 2


def decode_flops(c: ModelConfig, context: int) -> int:
    """Per-token decode FLOPs at a context length (design doc 5.2; multiply-add = 2)."""
    n_active = param_counts(c).active - c.vocab_size * c.dim  # the embedding lookup is not a matmul
    f = 2 * n_active
    attn = 4 * c.n_heads * c.head_dim
    for kind in c.layer_types:
        if kind == CSA:
            visible = context // c.csa_ratio
            f += 2 * c.index_n_heads * c.index_head_dim * visible
            f += attn * (min(c.index_topk, visible) + c.window_size)
        elif kind == HCA:
            f += attn * (context // c.hca_ratio + c.window_size)
        else:
            f += attn * c.window_size
    return f


# ---- checkpoint files (headers only) -------------------------------------------------------


def checkpoint_files(path: Path) -> list[Path]:
    """The shards named by model.safetensors.index.json, else every *.safetensors file.
    ValueError for a malformed index."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index} is not a valid safetensors index") from None
        return [path / n for n in names]
    return sorted(path.glob("*.safetensors"))


def safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then JSON. Read by
    hand because `model info` runs on the base install, which has neither torch nor safetensors.
    ValueError for anything that is not a safetensors header."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{file.name} is too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise ValueError(f"{file.name} has an impossible header length ({n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{file.name} does not start with a safetensors JSON header") from None
    if not isinstance(header, dict):
        raise ValueError(f"{file.name} does not start with a safetensors JSON header")
    return header


def find_config(path: Path) -> Path:
    for candidate in (path / "config.json", path / "inference" / "config.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no config.json in {path} (nor inference/config.json)")


# ---- the summary ---------------------------------------------------------------------------


def summary(
    c: ModelConfig, context: int, dtype: str = "bfloat16", source: str = ""
) -> dict[str, Any]:
    """Everything `v4code model info` prints, as one JSON-able dict."""
    p = param_counts(c)
    f = cache_formula(c, dtype)
    beyond = context > c.max_position_embeddings
    mqa = dense_mqa_bytes_per_token(c)
    serving = v4_serving_bytes_per_token(c)
    engine_bytes = f.at(c, context)
    v32_bf16, v32_fp8 = v32_bytes_per_token(False), v32_bytes_per_token(True)
    return {
        "source": source,
        "untrained": c.untrained,
        "architecture": {
            "layers": c.n_layers,
            "layer_types": {"swa": c.count(SWA), "csa": c.count(CSA), "hca": c.count(HCA)},
            "hidden": c.dim,
            "heads": c.n_heads,
            "head_dim": c.head_dim,
            "rope_head_dim": c.rope_head_dim,
            "window": c.window_size,
            "csa_ratio": c.csa_ratio,
            "hca_ratio": c.hca_ratio,
            "index_topk": c.index_topk,
            "index_heads": c.index_n_heads,
            "hc_mult": c.hc_mult,
            "experts": f"{c.n_routed_experts} routed ({c.n_activated_experts} per token) + {c.n_shared_experts} shared",
            "hash_layers": sum(c.hash_layers),
            "vocab": c.vocab_size,
            "max_position_embeddings": c.max_position_embeddings,
            "weights": f"{c.weight_dtype} (experts {c.expert_dtype})",
        },
        "params": {
            "total": p.total,
            "active": p.active,
            "embedding": p.embedding,
            "routed_experts": p.routed_experts,
            "mtp_not_run": p.mtp,
        },
        "kv_cache": {
            "context": context,
            "beyond_max_positions": beyond,
            "dtype": dtype,
            "engine": {
                "bytes_per_token": round(f.per_token, 2),
                "fixed_bytes": f.fixed,
                "bytes": engine_bytes,
                "gib": round(engine_bytes / GIB, 3),
            },
            "v4_serving_fp8_fp4": {
                "bytes_per_token": round(serving, 2),
                "gib": round(serving * context / GIB, 3),
            },
            "dense_mqa_baseline": {
                "bytes_per_token": mqa,
                "gib": round(mqa * context / GIB, 3),
                "engine_ratio": round(engine_bytes / (mqa * context), 4) if context else None,
            },
            "deepseek_v3_2": {
                "bf16_bytes_per_token": v32_bf16,
                "bf16_gib": round(v32_bf16 * context / GIB, 3),
                "fp8_bytes_per_token": v32_fp8,
                "fp8_gib": round(v32_fp8 * context / GIB, 3),
            },
        },
        "decode_gflops_per_token": round(decode_flops(c, context) / 1e9, 2),
    }


def render_text(info: dict[str, Any]) -> str:
    a, p, kv = info["architecture"], info["params"], info["kv_cache"]
    lt = a["layer_types"]
    n = kv["context"]
    lines = [
        f"model: {info['source']}" + ("  (UNTRAINED random weights)" if info["untrained"] else ""),
        f"  layers {a['layers']} (SWA {lt['swa']}, CSA {lt['csa']}, HCA {lt['hca']}), hidden {a['hidden']}, "
        f"{a['heads']} heads x {a['head_dim']} (rope {a['rope_head_dim']}), window {a['window']}",
        f"  compression CSA 1/{a['csa_ratio']} (top-{a['index_topk']}, {a['index_heads']} indexer heads), "
        f"HCA 1/{a['hca_ratio']}; mHC x{a['hc_mult']}; vocab {a['vocab']}",
        f"  MoE {a['experts']}, {a['hash_layers']} hash-routed layers; weights {a['weights']}",
        f"params: total {_count(p['total'])}, active {_count(p['active'])} per token "
        f"(embedding+head {_count(p['embedding'])}; MTP block {_count(p['mtp_not_run'])} not run)",
        f"KV cache at {n:,} tokens"
        + (
            f" (beyond the model's {a['max_position_embeddings']:,} positions: formula only):"
            if kv["beyond_max_positions"]
            else ":"
        ),
        f"  {'this engine (' + kv['dtype'] + ')':<34} {kv['engine']['bytes_per_token']:>10,.1f} B/token"
        f"  {kv['engine']['gib']:>9.3f} GiB  (incl. {kv['engine']['fixed_bytes'] / 2**20:.1f} MiB window/tail state)",
        f"  {'V4 serving format (FP8 + FP4 idx)':<34} {kv['v4_serving_fp8_fp4']['bytes_per_token']:>10,.1f} B/token"
        f"  {kv['v4_serving_fp8_fp4']['gib']:>9.3f} GiB",
        f"  {'dense MQA baseline (bf16)':<34} {kv['dense_mqa_baseline']['bytes_per_token']:>10,} B/token"
        f"  {kv['dense_mqa_baseline']['gib']:>9.3f} GiB",
        f"  {'DeepSeek-V3.2 (bf16)':<34} {kv['deepseek_v3_2']['bf16_bytes_per_token']:>10,} B/token"
        f"  {kv['deepseek_v3_2']['bf16_gib']:>9.3f} GiB",
        f"  {'DeepSeek-V3.2 (FP8)':<34} {kv['deepseek_v3_2']['fp8_bytes_per_token']:>10,} B/token"
        f"  {kv['deepseek_v3_2']['fp8_gib']:>9.3f} GiB",
        f"decode: ~{info['decode_gflops_per_token']:,} GFLOP per token at this context",
    ]
    ck = info.get("checkpoint")
    if ck:
        lines.append(
            f"checkpoint: {ck['files']} file(s), {ck['tensors']} tensors, {ck['bytes'] / GIB:.2f} GiB on disk"
        )
    return "\n".join(lines)


def _count(n: int) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)
