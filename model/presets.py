"""Named model shapes: the released V4-Flash / V4-Pro, and small ones for tests and benchmarks.

The released shapes need no weights: `v4code model info v4-flash` works from the formula alone.
"""

from __future__ import annotations

from model.config import CSA, HCA, SWA, ModelConfig, RopeSpec

_YARN = RopeSpec(theta=160000.0, factor=16.0, original_seq_len=65536, beta_fast=32, beta_slow=1)


def _flash() -> ModelConfig:
    types = [SWA, SWA] + [CSA if i % 2 == 0 else HCA for i in range(2, 42)] + [CSA]
    return ModelConfig(
        dim=4096,
        n_layers=43,
        n_heads=64,
        q_lora_rank=1024,
        o_groups=8,
        o_lora_rank=1024,
        layer_types=tuple(types),
        compress_rope=_YARN,
        index_topk=512,
        n_routed_experts=256,
        moe_inter_dim=2048,
        hash_layers=tuple(i < 3 for i in range(43)),
        route_scale=1.5,
        weight_dtype="fp8",
        expert_dtype="fp4",
    )


def _pro() -> ModelConfig:
    types = [HCA, HCA] + [CSA if i % 2 == 0 else HCA for i in range(2, 60)] + [CSA]
    return ModelConfig(
        dim=7168,
        n_layers=61,
        n_heads=128,
        q_lora_rank=1536,
        o_groups=16,
        o_lora_rank=1024,
        layer_types=tuple(types),
        compress_rope=_YARN,
        index_topk=1024,
        n_routed_experts=384,
        moe_inter_dim=3072,
        hash_layers=tuple(i < 3 for i in range(61)),
        route_scale=2.5,
        weight_dtype="fp8",
        expert_dtype="fp4",
    )


def _tiny() -> ModelConfig:
    """Small enough for CPU tests; keeps the real vocabulary (so the V4 tokenizer fits), the real
    window (128) and compression ratios (4 / 128), and all three layer types."""
    return ModelConfig(
        vocab_size=129280,
        dim=128,
        n_layers=4,
        n_heads=4,
        head_dim=128,
        rope_head_dim=32,
        q_lora_rank=64,
        o_groups=2,
        o_lora_rank=64,
        layer_types=(SWA, CSA, HCA, CSA),
        compress_rope=_YARN,
        index_n_heads=4,
        index_head_dim=64,
        index_topk=64,
        n_routed_experts=8,
        n_activated_experts=2,
        moe_inter_dim=128,
        hash_layers=(True, False, False, False),
        route_scale=1.5,
    )


def _bench() -> ModelConfig:
    """The speed benchmark's shape (issue 5: 4 layers, hidden 256, 8 heads x 128, all three layer
    types). Every other width is V4-Flash's scaled by the same rule (hidden /16, heads /8, head
    dim /4): q/o LoRA ranks 1024 -> 64, expert width 2048 -> 128, RoPE dims 64 -> 16, indexer
    64 x 128 -> 8 x 32; window, compression ratios and top-k (512) are Flash's own."""
    return ModelConfig(
        vocab_size=129280,
        dim=256,
        n_layers=4,
        n_heads=8,
        head_dim=128,
        rope_head_dim=16,
        q_lora_rank=64,
        o_groups=2,
        o_lora_rank=64,
        layer_types=(SWA, CSA, HCA, CSA),
        compress_rope=_YARN,
        index_n_heads=8,
        index_head_dim=32,
        index_topk=512,
        n_routed_experts=8,
        n_activated_experts=2,
        moe_inter_dim=128,
        hash_layers=(True, False, False, False),
        route_scale=1.5,
    )


PRESETS = {"v4-flash": _flash, "v4-pro": _pro, "tiny": _tiny, "bench": _bench}


def preset(name: str) -> ModelConfig:
    """The named config; KeyError with the list of names if unknown."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
