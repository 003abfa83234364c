"""Hyper-parameters of a DeepSeek-V4 model, read from either config naming.

Two spellings exist for the same architecture:
* Hugging Face `config.json` (transformers' `DeepseekV4Config`): `hidden_size`, `layer_types` /
  legacy `compress_ratios`, `rope_parameters` {"main", "compress"} / legacy `rope_scaling`, ...
* DeepSeek's official `inference/config.json`: `dim`, `n_layers`, `compress_ratios`, `rope_factor`, ...

`ModelConfig` uses the official short names (they match the checkpoint tensor names the modules
are named after). Pure Python: importing this module must not import torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SWA, CSA, HCA = "swa", "csa", "hca"
_HF_LAYER_TYPES = {
    "sliding_attention": SWA,
    "compressed_sparse_attention": CSA,
    "heavily_compressed_attention": HCA,
}
_HF_LAYER_NAMES = {v: k for k, v in _HF_LAYER_TYPES.items()}


class ConfigFormatError(ValueError):
    """A config.json that is not a DeepSeek-V4 configuration we understand."""


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer kind. `original_seq_len == 0` means plain RoPE (no YaRN)."""

    theta: float
    factor: float = 1.0
    original_seq_len: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    @property
    def yarn(self) -> bool:
        return self.original_seq_len > 0 and self.factor != 1.0


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 129280
    dim: int = 4096
    n_layers: int = 43
    n_heads: int = 64
    head_dim: int = 512
    rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    # One entry per layer: "swa" (sliding window only), "csa" (overlapping compressor + indexer),
    # "hca" (non-overlapping compressor, dense over all compressed entries).
    layer_types: tuple[str, ...] = ()
    csa_ratio: int = 4
    hca_ratio: int = 128
    # SWA layers use `rope`; CSA/HCA layers use `compress_rope` for everything in the layer.
    rope: RopeSpec = RopeSpec(theta=10000.0)
    compress_rope: RopeSpec = RopeSpec(theta=160000.0, factor=16.0, original_seq_len=65536)
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    norm_eps: float = 1e-6
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    moe_inter_dim: int = 2048
    # One flag per layer: True = hash-routed MoE (fixed token -> experts table).
    hash_layers: tuple[bool, ...] = ()
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    norm_topk_prob: bool = True
    swiglu_limit: float = 10.0
    max_position_embeddings: int = 1_048_576
    bos_token_id: int = 0
    eos_token_id: int = 1
    tie_word_embeddings: bool = False
    n_mtp_layers: int = 1  # present in checkpoints; not run by this engine (see docs/engine.md)
    # Storage of the released weights (informational; affects the loader and `model info`).
    weight_dtype: str = "bf16"  # "bf16" | "fp8"
    expert_dtype: str = "bf16"  # "bf16" | "fp8" | "fp4"
    untrained: bool = False  # random weights written by `v4code model init`
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.layer_types:
            object.__setattr__(self, "layer_types", (SWA,) * self.n_layers)
        if not self.hash_layers:
            object.__setattr__(self, "hash_layers", (False,) * self.n_layers)
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "hash_layers", tuple(bool(h) for h in self.hash_layers))
        self.validate()

    # ---- derived -------------------------------------------------------------------------
    def ratio(self, layer: int) -> int:
        """Compression ratio of a layer (0 for sliding-window-only layers)."""
        kind = self.layer_types[layer]
        return 0 if kind == SWA else self.csa_ratio if kind == CSA else self.hca_ratio

    @property
    def compress_ratios(self) -> list[int]:
        return [self.ratio(i) for i in range(self.n_layers)]

    def count(self, kind: str) -> int:
        return sum(1 for t in self.layer_types if t == kind)

    def validate(self) -> None:
        problems = []
        if len(self.layer_types) != self.n_layers:
            problems.append(
                f"layer_types has {len(self.layer_types)} entries for {self.n_layers} layers"
            )
        if len(self.hash_layers) != self.n_layers:
            problems.append(
                f"hash_layers has {len(self.hash_layers)} entries for {self.n_layers} layers"
            )
        sizes = ("vocab_size", "dim", "n_layers", "n_heads", "head_dim", "q_lora_rank", "o_groups")
        sizes += ("o_lora_rank", "moe_inter_dim", "n_routed_experts", "n_activated_experts")
        sizes += ("max_position_embeddings",)
        small = [name for name in sizes if getattr(self, name) < 1]
        if small:
            problems.append(f"{', '.join(small)} must be positive")
        if CSA in self.layer_types and min(self.index_n_heads, self.index_topk) < 1:
            problems.append("index_n_heads and index_topk must be positive")
        bad = sorted({t for t in self.layer_types if t not in (SWA, CSA, HCA)})
        if bad:
            problems.append(f"unknown layer types {bad}")
        if self.rope_head_dim % 2 or self.rope_head_dim > self.head_dim:
            problems.append("rope_head_dim must be even and at most head_dim")
        if CSA in self.layer_types and self.index_head_dim < self.rope_head_dim:
            problems.append("index_head_dim must be at least rope_head_dim")
        if (self.n_heads * self.head_dim) % self.o_groups:
            problems.append("n_heads * head_dim must be divisible by o_groups")
        if self.n_activated_experts > self.n_routed_experts:
            problems.append("more activated experts than routed experts")
        if self.score_func not in ("sqrtsoftplus", "softmax", "sigmoid"):
            problems.append(f"unknown score_func {self.score_func!r}")
        if min(self.csa_ratio, self.hca_ratio, self.window_size, self.hc_mult) < 1:
            problems.append("ratios, window_size and hc_mult must be positive")
        if problems:
            raise ConfigFormatError("invalid DeepSeek-V4 config: " + "; ".join(problems))

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Our own canonical JSON form (used for identity hashes and round trips)."""
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["hash_layers"] = list(self.hash_layers)
        d.pop("extra")
        return d

    def to_hf_dict(self) -> dict[str, Any]:
        """A Hugging Face `config.json` that transformers' DeepseekV4Config accepts."""
        csa_name, hca_name = _HF_LAYER_NAMES[CSA], _HF_LAYER_NAMES[HCA]
        compress = {
            "rope_type": "yarn" if self.compress_rope.yarn else "default",
            "rope_theta": self.compress_rope.theta,
            "partial_rotary_factor": self.rope_head_dim / self.head_dim,
        }
        if self.compress_rope.yarn:
            compress.update(
                factor=self.compress_rope.factor,
                original_max_position_embeddings=self.compress_rope.original_seq_len,
                beta_fast=self.compress_rope.beta_fast,
                beta_slow=self.compress_rope.beta_slow,
                attention_factor=1.0,
            )
        return {
            "architectures": ["DeepseekV4ForCausalLM"],
            "model_type": "deepseek_v4",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": 1,
            "head_dim": self.head_dim,
            "qk_rope_head_dim": self.rope_head_dim,
            "partial_rotary_factor": self.rope_head_dim / self.head_dim,
            "q_lora_rank": self.q_lora_rank,
            "o_groups": self.o_groups,
            "o_lora_rank": self.o_lora_rank,
            "sliding_window": self.window_size,
            "layer_types": [_HF_LAYER_NAMES[t] for t in self.layer_types],
            "compress_rates": {csa_name: self.csa_ratio, hca_name: self.hca_ratio},
            "rope_theta": self.rope.theta,
            "compress_rope_theta": self.compress_rope.theta,
            "rope_parameters": {
                "main": {
                    "rope_type": "default",
                    "rope_theta": self.rope.theta,
                    "partial_rotary_factor": self.rope_head_dim / self.head_dim,
                },
                "compress": compress,
            },
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "hc_mult": self.hc_mult,
            "hc_sinkhorn_iters": self.hc_sinkhorn_iters,
            "hc_eps": self.hc_eps,
            "rms_norm_eps": self.norm_eps,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts,
            "num_experts_per_tok": self.n_activated_experts,
            "moe_intermediate_size": self.moe_inter_dim,
            "mlp_layer_types": ["hash_moe" if h else "moe" for h in self.hash_layers],
            "scoring_func": self.score_func,
            "routed_scaling_factor": self.route_scale,
            "norm_topk_prob": self.norm_topk_prob,
            "swiglu_limit": self.swiglu_limit,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "num_nextn_predict_layers": self.n_mtp_layers,
            "hidden_act": "silu",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Any of the three spellings: Hugging Face, official `inference/config.json`, or ours."""
        if not isinstance(d, dict):
            raise ConfigFormatError("config must be a JSON object")
        if "layer_types" in d and "rope" in d and "dim" in d:
            return _from_ours(d)
        if "hidden_size" in d or d.get("model_type") == "deepseek_v4":
            return _from_hf(d)
        if "dim" in d and "n_layers" in d:
            return _from_official(d)
        raise ConfigFormatError(
            "not a DeepSeek-V4 config (expected Hugging Face keys like hidden_size, "
            "or official keys like dim/n_layers)"
        )

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigFormatError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def with_(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)


def _types_from_ratios(ratios: list[int], n_layers: int) -> tuple[tuple[str, ...], int, int]:
    """Official rule: ratio 0 = SWA, 4 = CSA (overlap + indexer), any other ratio = HCA."""
    ratios = list(ratios)[:n_layers]
    if len(ratios) < n_layers:
        raise ConfigFormatError(f"compress_ratios has {len(ratios)} entries for {n_layers} layers")
    types, csa, hca = [], 4, 128
    hca_seen = {r for r in ratios if r not in (0, 4)}
    if len(hca_seen) > 1:
        raise ConfigFormatError(f"more than one HCA compression ratio: {sorted(hca_seen)}")
    if hca_seen:
        hca = hca_seen.pop()
    for r in ratios:
        types.append(SWA if r == 0 else CSA if r == 4 else HCA)
    return tuple(types), csa, hca


def _rope_from_hf(spec: dict[str, Any] | None, theta: float) -> RopeSpec:
    spec = dict(spec or {})
    kind = spec.get("rope_type", spec.get("type", "default"))
    theta = float(spec.get("rope_theta", theta))
    if kind == "default":
        return RopeSpec(theta=theta)
    if kind != "yarn":
        raise ConfigFormatError(f"unsupported rope type {kind!r} (DeepSeek-V4 uses yarn)")
    return RopeSpec(
        theta=theta,
        factor=float(spec.get("factor", 1.0)),
        original_seq_len=int(spec.get("original_max_position_embeddings", 0)),
        beta_fast=float(spec.get("beta_fast") or 32),
        beta_slow=float(spec.get("beta_slow") or 1),
    )


def _from_hf(d: dict[str, Any]) -> ModelConfig:
    if d.get("model_type", "deepseek_v4") != "deepseek_v4":
        raise ConfigFormatError(f"model_type is {d.get('model_type')!r}, expected 'deepseek_v4'")
    n = int(d.get("num_hidden_layers", 43))
    head_dim = int(d.get("head_dim", 512))
    rope_dim = d.get("qk_rope_head_dim")
    if rope_dim is None and d.get("partial_rotary_factor"):
        rope_dim = round(head_dim * float(d["partial_rotary_factor"]))
    rope_dim = int(rope_dim or 64)
    rates = d.get("compress_rates") or {}
    csa = int(rates.get("compressed_sparse_attention", d.get("compress_rate_csa", 4)))
    hca = int(rates.get("heavily_compressed_attention", d.get("compress_rate_hca", 128)))
    if d.get("layer_types"):
        unknown = sorted({t for t in d["layer_types"] if t not in _HF_LAYER_TYPES})
        if unknown:
            raise ConfigFormatError(f"unknown layer_types {unknown}")
        types = tuple(_HF_LAYER_TYPES[t] for t in d["layer_types"][:n])
    elif d.get("compress_ratios"):
        types, csa, hca = _types_from_ratios(d["compress_ratios"], n)
    else:  # transformers' default schedule: 2 HCA, then alternating CSA / HCA
        types = tuple([HCA] * min(n, 2) + [CSA if i % 2 else HCA for i in range(max(n - 2, 0))])
    if d.get("mlp_layer_types"):
        hashes = tuple(t == "hash_moe" for t in d["mlp_layer_types"][:n])
    else:
        n_hash = int(d.get("num_hash_layers", 3))
        hashes = tuple(i < n_hash for i in range(n))
    rope_theta = float(d.get("rope_theta", 10000.0))
    compress_theta = float(d.get("compress_rope_theta", 160000.0))
    rp = d.get("rope_parameters") or {}
    if isinstance(rp.get("main"), dict) and isinstance(rp.get("compress"), dict):
        main, compress = (
            _rope_from_hf(rp["main"], rope_theta),
            _rope_from_hf(rp["compress"], compress_theta),
        )
    else:  # legacy: one `rope_scaling` dict that applies to the compressed layers only
        scaling = d.get("rope_scaling") or {k: v for k, v in rp.items() if k != "rope_theta"}
        main = RopeSpec(theta=rope_theta)
        compress = _rope_from_hf({**scaling, "rope_theta": compress_theta}, compress_theta)
    quant = d.get("quantization_config") or {}
    weight_dtype = "fp8" if quant.get("quant_method") == "fp8" else "bf16"
    expert_dtype = quant.get("expert_dtype") or d.get("expert_dtype") or weight_dtype
    eos = d.get("eos_token_id", 1)
    return ModelConfig(
        vocab_size=int(d.get("vocab_size", 129280)),
        dim=int(d.get("hidden_size", 4096)),
        n_layers=n,
        n_heads=int(d.get("num_attention_heads", 64)),
        head_dim=head_dim,
        rope_head_dim=rope_dim,
        q_lora_rank=int(d.get("q_lora_rank", 1024)),
        o_groups=int(d.get("o_groups", 8)),
        o_lora_rank=int(d.get("o_lora_rank", 1024)),
        window_size=int(d.get("sliding_window", 128)),
        layer_types=types,
        csa_ratio=csa,
        hca_ratio=hca,
        rope=main,
        compress_rope=compress,
        index_n_heads=int(d.get("index_n_heads", 64)),
        index_head_dim=int(d.get("index_head_dim", 128)),
        index_topk=int(d.get("index_topk", 512)),
        hc_mult=int(d.get("hc_mult", 4)),
        hc_sinkhorn_iters=int(d.get("hc_sinkhorn_iters", 20)),
        hc_eps=float(d.get("hc_eps", 1e-6)),
        norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        n_routed_experts=int(d.get("n_routed_experts", 256)),
        n_shared_experts=int(d.get("n_shared_experts", 1)),
        n_activated_experts=int(d.get("num_experts_per_tok", 6)),
        moe_inter_dim=int(d.get("moe_intermediate_size", 2048)),
        hash_layers=hashes,
        score_func=str(d.get("scoring_func", "sqrtsoftplus")),
        route_scale=float(d.get("routed_scaling_factor", 1.5)),
        norm_topk_prob=bool(d.get("norm_topk_prob", True)),
        swiglu_limit=float(d.get("swiglu_limit", 10.0) or 0.0),
        max_position_embeddings=int(d.get("max_position_embeddings", 1_048_576)),
        bos_token_id=int(d.get("bos_token_id", 0) or 0),
        eos_token_id=int(eos[0] if isinstance(eos, list) else (eos if eos is not None else 1)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        n_mtp_layers=int(d.get("num_nextn_predict_layers", 1)),
        weight_dtype=weight_dtype,
        expert_dtype=str(expert_dtype),
        untrained=bool(d.get("v4code_untrained", False)),
        extra={k: d[k] for k in ("v4code_note",) if k in d},
    )


def _from_official(d: dict[str, Any]) -> ModelConfig:
    n = int(d["n_layers"])
    types, csa, hca = _types_from_ratios(d.get("compress_ratios") or [0] * n, n)
    orig = int(d.get("original_seq_len", 0))
    compress = RopeSpec(
        theta=float(d.get("compress_rope_theta", 40000.0)),
        factor=float(d.get("rope_factor", 40.0)) if orig else 1.0,
        original_seq_len=orig,
        beta_fast=float(d.get("beta_fast", 32)),
        beta_slow=float(d.get("beta_slow", 1)),
    )
    n_hash = int(d.get("n_hash_layers", 0))
    dtype = d.get("dtype", "fp8")
    return ModelConfig(
        vocab_size=int(d.get("vocab_size", 129280)),
        dim=int(d["dim"]),
        n_layers=n,
        n_heads=int(d.get("n_heads", 64)),
        head_dim=int(d.get("head_dim", 512)),
        rope_head_dim=int(d.get("rope_head_dim", 64)),
        q_lora_rank=int(d.get("q_lora_rank", 1024)),
        o_groups=int(d.get("o_groups", 8)),
        o_lora_rank=int(d.get("o_lora_rank", 1024)),
        window_size=int(d.get("window_size", 128)),
        layer_types=types,
        csa_ratio=csa,
        hca_ratio=hca,
        rope=RopeSpec(theta=float(d.get("rope_theta", 10000.0))),
        compress_rope=compress,
        index_n_heads=int(d.get("index_n_heads", 64)),
        index_head_dim=int(d.get("index_head_dim", 128)),
        index_topk=int(d.get("index_topk", 512)),
        hc_mult=int(d.get("hc_mult", 4)),
        hc_sinkhorn_iters=int(d.get("hc_sinkhorn_iters", 20)),
        hc_eps=float(d.get("hc_eps", 1e-6)),
        norm_eps=float(d.get("norm_eps", 1e-6)),
        n_routed_experts=int(d.get("n_routed_experts", 8)),
        n_shared_experts=int(d.get("n_shared_experts", 1)),
        n_activated_experts=int(d.get("n_activated_experts", 2)),
        moe_inter_dim=int(d.get("moe_inter_dim", 4096)),
        hash_layers=tuple(i < n_hash for i in range(n)),
        score_func=str(d.get("score_func", "sqrtsoftplus")),
        route_scale=float(d.get("route_scale", 1.0)),
        norm_topk_prob=d.get("score_func", "sqrtsoftplus") != "softmax",
        swiglu_limit=float(d.get("swiglu_limit", 0.0)),
        max_position_embeddings=int(d.get("max_seq_len", 1_048_576)),
        n_mtp_layers=int(d.get("n_mtp_layers", 1)),
        weight_dtype="fp8" if dtype == "fp8" else "bf16",
        expert_dtype=str(d.get("expert_dtype") or ("fp8" if dtype == "fp8" else "bf16")),
    )


def _from_ours(d: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    kwargs = {k: v for k, v in d.items() if k in known and k != "extra"}
    kwargs["rope"] = RopeSpec(**kwargs["rope"])
    kwargs["compress_rope"] = RopeSpec(**kwargs["compress_rope"])
    return ModelConfig(**kwargs)
