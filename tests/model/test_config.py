"""Config parsing: the released V4-Flash config in both spellings gives the preset's shapes."""

from __future__ import annotations

import json

import pytest

from model.config import CSA, HCA, SWA, ConfigFormatError, ModelConfig
from model.presets import preset

RATIOS = [0, 0] + [4, 128] * 20 + [4, 0]  # 43 layers + the MTP block's entry

# DeepSeek-V4-Flash as released: the Hugging Face root config.json ...
HF_RELEASE = {
    "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "bos_token_id": 0,
    "eos_token_id": 1, "hc_eps": 1e-06, "hc_mult": 4, "hc_sinkhorn_iters": 20, "head_dim": 512,
    "hidden_size": 4096, "index_head_dim": 128, "index_n_heads": 64, "index_topk": 512,
    "max_position_embeddings": 1048576, "moe_intermediate_size": 2048, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 64, "num_experts_per_tok": 6,
    "num_hidden_layers": 43, "num_hash_layers": 3, "num_key_value_heads": 1, "num_nextn_predict_layers": 1,
    "o_groups": 8, "o_lora_rank": 1024, "q_lora_rank": 1024, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                     "original_max_position_embeddings": 65536, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
    "sliding_window": 128, "swiglu_limit": 10.0, "tie_word_embeddings": False, "topk_method": "noaux_tc",
    "vocab_size": 129280, "compress_rope_theta": 160000, "compress_ratios": RATIOS,
}  # fmt: skip
# ... and DeepSeek's inference/config.json
OFFICIAL_RELEASE = {
    "vocab_size": 129280, "dim": 4096, "moe_inter_dim": 2048, "n_layers": 43, "n_hash_layers": 3,
    "n_heads": 64, "n_routed_experts": 256, "n_shared_experts": 1, "n_activated_experts": 6,
    "score_func": "sqrtsoftplus", "route_scale": 1.5, "swiglu_limit": 10.0, "q_lora_rank": 1024,
    "head_dim": 512, "rope_head_dim": 64, "o_groups": 8, "o_lora_rank": 1024, "window_size": 128,
    "original_seq_len": 65536, "rope_theta": 10000, "rope_factor": 16, "beta_fast": 32, "beta_slow": 1,
    "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "hc_mult": 4, "hc_sinkhorn_iters": 20,
    "dtype": "fp8", "scale_fmt": "ue8m0", "expert_dtype": "fp4", "compress_rope_theta": 160000,
    "compress_ratios": RATIOS,
}  # fmt: skip

SHAPE = [
    f
    for f in ModelConfig.__dataclass_fields__
    if f not in ("weight_dtype", "expert_dtype", "extra")
]


@pytest.mark.parametrize("raw", [HF_RELEASE, OFFICIAL_RELEASE], ids=["hf", "official"])
def test_release_configs_match_the_preset(raw):
    got, want = ModelConfig.from_dict(raw), preset("v4-flash")
    for field in SHAPE:
        assert getattr(got, field) == getattr(want, field), field
    assert got.weight_dtype == "fp8"
    assert got.count(SWA) == 2 and got.count(CSA) == 21 and got.count(HCA) == 20
    assert got.compress_rope.yarn and not got.rope.yarn


@pytest.mark.parametrize("name", ["tiny", "v4-pro"])
def test_round_trips(name):
    c = preset(name)
    assert ModelConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    back = ModelConfig.from_dict(c.to_hf_dict())  # the HF form carries no weight encoding
    assert all(getattr(back, f) == getattr(c, f) for f in SHAPE)


def test_transformers_reads_our_hf_config():
    transformers = pytest.importorskip("transformers")
    hf = transformers.DeepseekV4Config(**preset("v4-pro").to_hf_dict())
    back = ModelConfig.from_dict(hf.to_dict())
    assert all(getattr(back, f) == getattr(preset("v4-pro"), f) for f in SHAPE)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model_type": "llama", "hidden_size": 8}, "deepseek_v4"),
        ({"foo": 1}, "not a DeepSeek-V4 config"),
        ({**HF_RELEASE, "layer_types": ["dense"] * 43}, "unknown layer_types"),
        ({**HF_RELEASE, "compress_ratios": [0, 4, 8, 16] * 11}, "more than one HCA"),
        ({**HF_RELEASE, "o_groups": 7}, "divisible by o_groups"),
    ],
)
def test_bad_configs_are_rejected_clearly(raw, message):
    with pytest.raises(ConfigFormatError, match=message):
        ModelConfig.from_dict(raw)
