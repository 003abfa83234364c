"""Test support: a synthetic checkpoint in DeepSeek's official format, quantised here.

The quantisers below are written for the tests, independently of model/quant.py (which only
dequantises): FP8 e4m3 with UE8M0 128x128 block scales for dense matrices, FP4 e2m1 packed two
per byte (low nibble = even element) with one UE8M0 scale per 32 inputs for routed experts.
Each quantiser also returns the exact value the checkpoint encodes, so a reference model can be
built from precisely the weights the loader should reconstruct."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]

# dense matrices the release stores in FP8 (everything else: bf16, fp32 or int)
FP8_SUFFIXES = (
    "wq_a.weight",
    "wq_b.weight",
    "wkv.weight",
    "wo_a.weight",
    "wo_b.weight",
    "shared_experts.w1.weight",
    "shared_experts.w2.weight",
    "shared_experts.w3.weight",
)
FP32_SUFFIXES = ("attn_sink", ".ape", "_fn", "_base", "_scale", "gate.bias")


def pow2_exponent(amax: float, top: float) -> int:
    return math.ceil(math.log2(amax / top)) if amax > 0 else -127


def quant_fp8(w: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out_f, in_f = w.shape
    rows, cols = -(-out_f // block), -(-in_f // block)
    q = torch.empty(out_f, in_f, dtype=torch.float8_e4m3fn)
    exps = torch.empty(rows, cols, dtype=torch.uint8)
    deq = torch.empty(out_f, in_f)
    for i in range(rows):
        for j in range(cols):
            blk = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            e = pow2_exponent(blk.abs().max().item(), 448.0)
            qb = (blk / 2.0**e).to(torch.float8_e4m3fn)
            q[i * block : (i + 1) * block, j * block : (j + 1) * block] = qb
            deq[i * block : (i + 1) * block, j * block : (j + 1) * block] = qb.float() * 2.0**e
            exps[i, j] = e + 127
    return q, exps.view(torch.float8_e8m0fnu), deq


def quant_fp4(w: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """e2m1 codes (nearest magnitude, sign in bit 3), one power-of-two scale per `block` inputs,
    packed two per byte with the even element in the low nibble."""
    out_f, in_f = w.shape
    grid = torch.tensor(E2M1)
    blocks = w.reshape(out_f, in_f // block, block)
    amax = blocks.abs().amax(-1)
    exps = torch.where(amax > 0, torch.ceil(torch.log2(amax / 6.0)), torch.full_like(amax, -127))
    x = blocks / torch.exp2(exps)[..., None]
    mag = (x.abs()[..., None] - grid).abs().argmin(-1)  # nearest magnitude
    codes = (mag | ((x < 0).long() << 3)).to(torch.uint8).reshape(out_f, in_f)
    deq = (grid[mag] * torch.sign(x) * torch.exp2(exps)[..., None]).reshape(out_f, in_f)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)
    scales = (exps + 127).to(torch.uint8).view(torch.float8_e8m0fnu)
    return packed, scales, deq


def official_config(**over) -> dict:
    cfg = {
        "vocab_size": 512,
        "dim": 192,  # not a multiple of 128: partial edge blocks in both directions
        "moe_inter_dim": 128,
        "n_layers": 3,
        "n_hash_layers": 1,
        "n_heads": 4,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "n_activated_experts": 2,
        "score_func": "sqrtsoftplus",
        "route_scale": 1.5,
        "swiglu_limit": 10.0,
        "q_lora_rank": 128,
        "head_dim": 64,
        "rope_head_dim": 16,
        "o_groups": 2,
        "o_lora_rank": 64,
        "window_size": 16,
        "original_seq_len": 128,
        "rope_theta": 10000,
        "rope_factor": 16,
        "beta_fast": 32,
        "beta_slow": 1,
        "index_n_heads": 16,
        "index_head_dim": 32,
        "index_topk": 8,
        "hc_mult": 2,
        "hc_sinkhorn_iters": 20,
        "dtype": "fp8",
        "scale_fmt": "ue8m0",
        "expert_dtype": "fp4",
        "compress_rope_theta": 160000,
        "compress_ratios": [0, 4, 8, 0],
    }
    cfg.update(over)
    return cfg


def random_weights(config, seed: int = 0, spread: bool = False) -> dict[str, torch.Tensor]:
    """Our-named fp32 weights at O(1) activation scale (unlike the N(0, 0.02) init).

    With `spread`, every 128x128 block of a matrix (and every group of 32 inputs of an expert row)
    is scaled by its own power of two in [1/4, 4], so neighbouring quantisation blocks get
    different scales and a loader that applies a scale to the wrong block cannot go unnoticed."""
    from model.engine import random_state

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in random_state(config, seed).items():
        if name.endswith("tid2eid"):
            out[name] = t
        elif name.endswith("embed.weight"):
            out[name] = torch.randn(t.shape, generator=g)
        elif t.dim() >= 2:
            w = torch.randn(t.shape, generator=g) / t.shape[-1] ** 0.5
            if spread:
                rows, cols = (1, 32) if ".ffn.experts." in name else (128, 128)
                grid = (-(-t.shape[-2] // rows), -(-t.shape[-1] // cols))
                e = torch.randint(-2, 3, (*t.shape[:-2], *grid), generator=g).float()
                e = e.repeat_interleave(rows, -2).repeat_interleave(cols, -1)
                w = w * torch.exp2(e[..., : t.shape[-2], : t.shape[-1]])
            out[name] = w
        elif "norm" in name:
            out[name] = 1 + 0.2 * torch.randn(t.shape, generator=g)
        elif name.endswith("scale"):
            out[name] = 1 + 0.3 * torch.randn(t.shape, generator=g)
        else:
            out[name] = 0.7 * torch.randn(t.shape, generator=g)
    return out


def write_official(
    path: Path,
    config_dict: dict,
    weights: dict[str, torch.Tensor],
    shards: int = 3,
    fp4_dtype: torch.dtype = torch.int8,
) -> dict:
    """Write `weights` (our names, fp32) in the official format; returns the exact dequantised
    weights (what a correct loader must reconstruct) and per-tensor relative errors.

    Packed FP4 experts are stored as I8 (the V4 release) or, with fp4_dtype=float4_e2m1fn_x2,
    as safetensors' F4 dtype (the same bytes)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    exact: dict[str, torch.Tensor] = {}
    rel_err: dict[str, float] = {}
    for name, w in weights.items():
        if ".ffn.experts.w" in name:  # stacked [E, ...] -> per-expert FP4
            prefix, which = name.rsplit(".", 1)
            deqs = []
            for e in range(w.shape[0]):
                packed, scale, deq = quant_fp4(w[e])
                tensors[f"{prefix}.{e}.{which}.weight"] = packed.view(fp4_dtype)
                tensors[f"{prefix}.{e}.{which}.scale"] = scale
                deqs.append(deq)
            exact[name] = torch.stack(deqs)
        elif name.endswith(FP8_SUFFIXES):
            q, scale, deq = quant_fp8(w)
            tensors[name] = q
            tensors[name.replace(".weight", ".scale")] = scale
            exact[name] = deq
        elif name.endswith("tid2eid"):
            tensors[name] = w.to(torch.int32)
            exact[name] = w
        elif name.endswith(FP32_SUFFIXES):
            tensors[name] = w.float()
            exact[name] = w.float()
        else:  # released in bf16
            tensors[name] = w.to(torch.bfloat16)
            exact[name] = tensors[name].float()
        rel_err[name] = (
            (exact[name].float() - w.float()).norm() / w.float().norm().clamp_min(1e-12)
        ).item()
    tensors["mtp.0.e_proj.weight"] = torch.zeros(4, 4, dtype=torch.bfloat16)  # must be ignored
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(path / file))
        weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (path / "inference").mkdir(exist_ok=True)
    (path / "inference" / "config.json").write_text(json.dumps(config_dict))
    return {
        "exact": exact,
        "rel_err": rel_err,
        "files": [path / f for f in sorted(set(weight_map.values()))],
    }
