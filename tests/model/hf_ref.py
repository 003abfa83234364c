"""Test support: tiny random DeepSeek-V4 models in transformers (the parity oracle).

transformers' own init leaves sinks, position biases, mHC biases and the hash table at zero;
these tests draw every parameter at a scale where activations are O(1), so a wrong rotation,
mask or mixing rule moves the logits far beyond the 1e-4 parity tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TYPES = {
    "swa": "sliding_attention",
    "csa": "compressed_sparse_attention",
    "hca": "heavily_compressed_attention",
}


def hf_config(
    layers: tuple[str, ...] = ("swa", "csa", "hca"),
    *,
    hidden: int = 64,
    heads: int = 4,
    head_dim: int = 32,
    rope_dim: int = 16,
    window: int = 16,
    csa: int = 4,
    hca: int = 8,
    topk: int = 8,
    index_heads: int = 16,
    index_dim: int = 32,
    hc: int = 2,
    vocab: int = 512,
    experts: int = 4,
    active: int = 2,
    n_hash: int = 1,
    yarn: bool = True,
    o_groups: int = 2,
    **extra: Any,
):
    from transformers import DeepseekV4Config

    rope_scaling = (
        {
            "type": "yarn",
            "factor": 16,
            "original_max_position_embeddings": 128,
            "beta_fast": 32,
            "beta_slow": 1,
        }
        if yarn
        else None
    )
    return DeepseekV4Config(
        vocab_size=vocab,
        hidden_size=hidden,
        moe_intermediate_size=hidden // 2,
        num_hidden_layers=len(layers),
        num_attention_heads=heads,
        head_dim=head_dim,
        qk_rope_head_dim=rope_dim,
        q_lora_rank=hidden // 2,
        o_groups=o_groups,
        o_lora_rank=hidden // 4,
        n_routed_experts=experts,
        num_experts_per_tok=active,
        mlp_layer_types=["hash_moe" if i < n_hash else "moe" for i in range(len(layers))],
        layer_types=[TYPES[t] for t in layers],
        compress_rates={TYPES["csa"]: csa, TYPES["hca"]: hca},
        sliding_window=window,
        index_n_heads=index_heads,
        index_head_dim=index_dim,
        index_topk=topk,
        hc_mult=hc,
        max_position_embeddings=2048,
        rope_scaling=rope_scaling,
        **extra,
    )


def randomize(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n_experts = model.config.n_routed_experts
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("tid2eid"):
                continue
            if p.dim() >= 2 and "experts" in name:  # [E, out, in]
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("scale"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:  # sinks, mHC biases, position biases
                p.copy_(0.7 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):
                scores = torch.rand(b.shape[0], n_experts, generator=g)
                b.copy_(scores.topk(b.shape[1], dim=-1).indices)
            elif name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def hf_model(config, seed: int = 0):
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config).eval()
    randomize(model, seed)
    return model


@torch.no_grad()
def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=False).logits


@torch.no_grad()
def hf_decode(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Reference's own incremental path: prefill, then one token at a time."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    outs = [model(ids[:, :prefill], past_key_values=cache, use_cache=True).logits]
    for i in range(prefill, ids.shape[1]):
        outs.append(model(ids[:, i : i + 1], past_key_values=cache, use_cache=True).logits)
    return torch.cat(outs, dim=1)


def save_hf(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path


@torch.no_grad()
def reference_ties(model, ids: torch.Tensor, margin: float = 1e-5) -> int:
    """Queries whose top-k boundary falls on tied - or nearly tied - indexer scores in the
    reference's own prefill. Tie order is implementation-defined, and two fp32 implementations
    compute scores that differ by ~1e-6 relative, so a k-th/(k+1)-th gap below `margin` (relative
    to the row's largest score) could flip the selection: such a config/seed cannot be compared
    exactly."""
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

    captured: list[torch.Tensor] = []
    original = hf.DeepseekV4IndexerScorer.forward

    def capture(self, q, kv, hidden):
        out = original(self, q, kv, hidden)
        captured.append(out[0])
        return out

    hf.DeepseekV4IndexerScorer.forward = capture
    try:
        model(ids, use_cache=False)
    finally:
        hf.DeepseekV4IndexerScorer.forward = original
    cfg = model.config
    ratio, k = cfg.compress_rates["compressed_sparse_attention"], cfg.index_topk
    ties = 0
    for scores in captured:
        for t in range(scores.shape[0]):
            visible = (t + 1) // ratio
            if visible > k:
                top = scores[t, :visible].sort(descending=True).values
                ties += int(top[k - 1] - top[k] <= margin * top.abs().max())
    return ties
