"""Checkpoint formats: official (FP8 + FP4, sharded, memory-mapped), Hugging Face (saved and
in-memory names), `model init` output; and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import math
import shutil

import pytest

torch = pytest.importorskip("torch")

from model import build_engine, load_model  # noqa: E402
from model.checkpoint import CheckpointError  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.model import PackedExperts  # noqa: E402
from tests.model.official_ckpt import official_config, random_weights, write_official  # noqa: E402


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    config_dict = official_config()
    config = ModelConfig.from_dict(config_dict)
    weights = random_weights(config, seed=0)
    path = tmp_path_factory.mktemp("official")
    written = write_official(path, config_dict, weights)
    ids = torch.randint(0, 512, (1, 200), generator=torch.Generator().manual_seed(5))
    return path, config, weights, written, ids


def logits(engine, ids):
    return engine.forward(ids, engine.new_cache(ids.shape[1]))


def test_official_format_loads_exactly_the_encoded_weights(official):
    path, config, _, written, ids = official
    engine = load_model(path, device="cpu", dtype=torch.float32, qat=False)
    assert engine.config == config
    reference = build_engine(config, written["exact"], device="cpu", dtype=torch.float32)
    # dequantisation is exact in fp32 (e4m3/e2m1 times a power of two), so only op order could differ
    assert (logits(engine, ids) - logits(reference, ids)).abs().max().item() <= 1e-4


def test_official_format_is_within_the_quantisation_error(official):
    """Tolerance, derived: with per-tensor relative quantisation errors eps_t = |W_q - W| / |W|
    (FP8 e4m3: about 2-3 %, FP4 e2m1 experts: about 12 %, bf16: 0.2 %), each matrix perturbs its
    output by a relative eps_t to first order; independent errors add in quadrature and the
    normalised blocks pass relative errors on without gain, so the logits' relative RMS error is
    at most sqrt(sum_t eps_t^2) (here 0.38; measured 0.20)."""
    path, config, weights, written, ids = official
    engine = load_model(path, device="cpu", dtype=torch.float32, qat=False)
    exact = logits(build_engine(config, weights, device="cpu", dtype=torch.float32), ids)
    got = logits(engine, ids)
    rel = ((got - exact).norm() / exact.norm()).item()
    bound = math.sqrt(sum(e * e for e in written["rel_err"].values()))
    assert rel <= bound
    assert rel > 0.02  # the weights really were quantised


def test_official_experts_stay_packed_and_memory_mapped(official):
    path, config, *_ = official
    engine = load_model(path, device="cpu", dtype=torch.float32)
    assert engine.qat is True  # QAT emulation is on by default for official checkpoints
    ranges = [f.address_range() for f in engine._files]
    for layer in engine.model.layers:
        experts = layer.ffn.experts
        assert isinstance(experts, PackedExperts)
        for entry in experts.packed:
            data, scale, fmt = entry["w1"]
            assert fmt == "fp4" and data.dtype == torch.uint8
            assert data.shape == (config.moe_inter_dim, config.dim // 2)
            assert any(
                lo <= data.data_ptr() < hi for lo, hi in ranges
            )  # a view of the file mapping
    assert engine.model.layers[0].attn.wq_b.weight.dtype == torch.float32  # dense: dequantised once


def test_qat_emulation_changes_logits_slightly(official):
    path, _, _, _, ids = official
    plain = logits(load_model(path, device="cpu", dtype=torch.float32, qat=False), ids)
    qat = logits(load_model(path, device="cpu", dtype=torch.float32, qat=True), ids)
    assert torch.isfinite(qat).all()
    diff = ((qat - plain).norm() / plain.norm()).item()
    assert 1e-4 < diff < 0.5


def test_progress_is_reported(official):
    path = official[0]
    seen = []
    load_model(
        path,
        device="cpu",
        dtype=torch.float32,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bf16_load_and_forward(official):
    path, _, _, _, ids = official
    engine = load_model(path, device="cpu", dtype=torch.bfloat16, qat=False)
    assert engine.model.layers[0].attn.wq_b.weight.dtype == torch.bfloat16
    assert engine.model.layers[0].attn_norm.weight.dtype == torch.float32  # norms stay fp32
    cache = engine.new_cache(ids.shape[1])
    assert cache.layers[1].comp.pool.dtype == torch.bfloat16
    got = engine.forward(ids, cache)
    want = logits(load_model(path, device="cpu", dtype=torch.float32, qat=False), ids)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert ((got - want).norm() / want.norm()).item() < 0.1  # bf16 rounding only


def test_hf_in_memory_names_load(tmp_path):
    pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from tests.model.hf_ref import hf_config, hf_logits, hf_model

    ref = hf_model(hf_config(), seed=1)
    ref.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert any(".self_attn.q_a_proj." in k for k in state) and any(
        "gate_up_proj" in k for k in state
    )
    save_file(state, str(tmp_path / "model.safetensors"))
    engine = load_model(tmp_path, device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 512, (1, 150), generator=torch.Generator().manual_seed(0))
    assert (logits(engine, ids) - hf_logits(ref, ids)).abs().max().item() <= 1e-4


def test_model_init_checkpoint_loads_here_and_in_transformers(tmp_path):
    from model.init import init_checkpoint

    out = init_checkpoint(tmp_path / "tiny", "tiny", seed=3)
    path = tmp_path / "tiny"
    config = json.loads((path / "config.json").read_text())
    assert config["v4code_untrained"] is True and "UNTRAINED" in (path / "README.txt").read_text()
    assert (path / "tokenizer.json").stat().st_size > 1_000_000 and out["untrained"]
    engine = load_model(path, device="cpu")
    assert engine.config.untrained and engine.config.vocab_size == 129280
    ids = torch.randint(0, 129280, (1, 256), generator=torch.Generator().manual_seed(0))
    ours = logits(engine, ids)
    transformers = pytest.importorskip("transformers")
    ref = transformers.DeepseekV4ForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        want = ref(ids, use_cache=False).logits
    # the first 4 * top-k tokens involve no top-k choice, so ties in the untrained indexer cannot matter
    assert (ours - want).abs().max().item() <= 1e-4


# ---- broken checkpoints: a clear CheckpointError, nothing half-loaded -----------------------


@pytest.fixture
def copy_of(official, tmp_path):
    def make():
        dst = tmp_path / "ck"
        shutil.copytree(official[0], dst)
        return dst

    return make


def test_missing_shard(copy_of):
    path = copy_of()
    (path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(path, device="cpu")


def test_truncated_shard(copy_of):
    path = copy_of()
    f = path / "model-00001-of-00003.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated|past the end"):
        load_model(path, device="cpu")


def test_garbage_header(copy_of):
    path = copy_of()
    (path / "model-00003-of-00003.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    )
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(path, device="cpu")


def test_config_that_does_not_match_the_weights(copy_of):
    path = copy_of()
    (path / "inference" / "config.json").write_text(json.dumps(official_config(dim=128)))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(path, device="cpu")


def test_missing_config(copy_of):
    path = copy_of()
    shutil.rmtree(path / "inference")
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(path, device="cpu")


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_model(tmp_path / "nope", device="cpu")
