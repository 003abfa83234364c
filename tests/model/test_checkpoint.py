"""Checkpoint formats: official (FP8 + FP4, sharded, memory-mapped), Hugging Face (saved and
in-memory names), `model init` output; and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
    weights = random_weights(config, seed=0, spread=True)
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
    """Tolerance, derived. To first order the logits move by sum_t J_t dW_t, dW_t = Q(W_t) - W_t
    the quantisation error of tensor t (FP8 e4m3 with 128x128 scales: ~2-3 % relative; FP4 e2m1
    with per-32 scales: ~12 %; bf16: 0.2 %). Round-to-nearest errors are zero-mean and
    uncorrelated with the network's Jacobians J_t, so the logit error has the statistics of a
    random perturbation with the same per-tensor norms |dW_t|. This model's sensitivity to such a
    perturbation is measured (two random draws), and the quantised checkpoint must lie within
    2x of it - and not far below it, which would mean the weights were not really quantised."""
    path, config, weights, written, ids = official
    engine = load_model(path, device="cpu", dtype=torch.float32, qat=False)
    exact = logits(build_engine(config, weights, device="cpu", dtype=torch.float32), ids)

    def rel_error(out: torch.Tensor) -> float:
        return ((out - exact).norm() / exact.norm()).item()

    random_errors = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        noisy = {}
        for name, w in weights.items():
            err = (written["exact"][name].float() - w.float()).norm()
            if not w.is_floating_point() or err == 0:
                noisy[name] = w
                continue
            noise = torch.randn(w.shape, generator=g)
            noisy[name] = w + noise * (err / noise.norm())
        model = build_engine(config, noisy, device="cpu", dtype=torch.float32)
        random_errors.append(rel_error(logits(model, ids)))
    got = rel_error(logits(engine, ids))
    assert got <= 2 * max(random_errors), (got, random_errors)
    assert got >= 0.5 * min(random_errors), (got, random_errors)


def test_official_experts_stay_packed_and_memory_mapped(official):
    path, config, *_ = official
    engine = load_model(path, device="cpu", dtype=torch.float32)
    assert engine.qat is True  # QAT emulation is on by default for official checkpoints
    ranges = file_mappings({f.path for f in engine._files})
    assert ranges, "the checkpoint files are not memory-mapped"
    for layer in engine.model.layers:
        experts = layer.ffn.experts
        assert isinstance(experts, PackedExperts)
        for entry in experts.packed:
            assert entry["w1"].fmt == "fp4"
            data, scale = entry["w1"].tensors()
            assert data.dtype == torch.uint8 and scale.dtype == torch.float8_e8m0fnu
            assert data.shape == (config.moe_inter_dim, config.dim // 2)
            assert any(
                lo <= data.data_ptr() < hi for lo, hi in ranges
            )  # a view of the file mapping
    assert engine.model.layers[0].attn.wq_b.weight.dtype == torch.float32  # dense: dequantised once


def file_mappings(paths) -> list[tuple[int, int]]:
    """[start, end) of this process's memory mappings of the given files (Linux /proc)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    names = {str(Path(p).resolve()) for p in paths}
    out = []
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in names:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append((lo, hi))
    return out


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


@pytest.mark.parametrize("index", [b"{not json", b'{"weight_map": []}', b'{"other": {}}'])
def test_malformed_index(copy_of, index):
    path = copy_of()
    (path / "model.safetensors.index.json").write_bytes(index)
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
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


# ---- official format details ---------------------------------------------------------------


def test_fp8_block_scales_with_partial_edge_blocks():
    """128x128 blocks, UE8M0 scales (byte = exponent + 127); a 200 x 300 weight has partial edge
    blocks in both directions (2 x 3 scales)."""
    from model.quant import dequant_fp8
    from tests.model.official_ckpt import quant_fp8

    w = torch.randn(200, 300, generator=torch.Generator().manual_seed(0))
    w[128:, 256:] *= 1000  # the corner block needs a very different scale
    q, scale, exact = quant_fp8(w)
    assert scale.shape == (2, 3) and scale.dtype == torch.float8_e8m0fnu
    assert torch.equal(dequant_fp8(q, scale), exact)
    assert ((exact - w).norm() / w.norm()).item() < 0.05


def test_fp4_per_32_scales_and_nibble_order():
    from model.quant import dequant_fp4
    from tests.model.official_ckpt import quant_fp4

    w = torch.randn(6, 96, generator=torch.Generator().manual_seed(1))
    w[:, 32:64] *= 50  # each group of 32 inputs has its own scale
    packed, scale, exact = quant_fp4(w)
    assert packed.shape == (6, 48) and scale.shape == (6, 3)
    assert torch.equal(dequant_fp4(packed, scale), exact)
    b = packed.view(torch.uint8)
    swapped = ((b & 0x0F) << 4) | (b >> 4)  # high nibble first would be a different matrix
    assert not torch.equal(dequant_fp4(swapped, scale), exact)


def test_f4_dtype_experts_load_like_int8(official, tmp_path):
    """safetensors' F4 dtype (float4_e2m1fn_x2) holds the same bytes as the release's I8."""
    _, config, weights, _, ids = official
    path = tmp_path / "f4"
    write_official(path, official_config(), weights, fp4_dtype=torch.float4_e2m1fn_x2)
    header = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    name = next(n for n in header if n.endswith("experts.0.w1.weight"))
    from safetensors import safe_open

    with safe_open(str(path / header[name]), framework="pt") as f:
        assert f.get_slice(name).get_dtype() == "F4"
    f4 = load_model(path, device="cpu", dtype=torch.float32, qat=False)
    i8 = load_model(official[0], device="cpu", dtype=torch.float32, qat=False)
    assert torch.equal(logits(f4, ids), logits(i8, ids))


def test_wrong_scale_shape_is_a_clear_error(copy_of):
    from safetensors.torch import load_file, save_file

    path = copy_of()
    for shard in sorted(path.glob("*.safetensors")):
        tensors = load_file(str(shard))
        if "layers.0.attn.wq_a.scale" in tensors:
            tensors["layers.0.attn.wq_a.scale"] = tensors["layers.0.attn.wq_a.scale"][:, :1]
            save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match="scales of 'layers.0.attn.wq_a.weight'"):
        load_model(path, device="cpu")


def mapped_resident_bytes(paths) -> int:
    """Bytes of the given files that are resident in this process's mappings (Linux smaps)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        pytest.skip("needs /proc/self/smaps")
    names = {str(Path(p).resolve()) for p in paths}
    total, current = 0, None
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            current = fields[5] if len(fields) > 5 else None
        elif fields and fields[0] == "Rss:" and current in names:
            total += int(fields[1]) * 1024
    return total


def test_packed_experts_are_read_only_when_selected(tmp_path):
    """Lazy, memory-mapped experts: loading reads none of the packed expert bytes, and a forward
    pass reads only the experts its tokens select (resident pages of the files' mappings)."""
    cfg = official_config(n_routed_experts=48, moe_inter_dim=2048, n_layers=2)
    cfg["compress_ratios"] = [0, 4, 0]
    config = ModelConfig.from_dict(cfg)
    write_official(tmp_path / "big", cfg, random_weights(config, seed=2), shards=2)
    files = sorted((tmp_path / "big").glob("*.safetensors"))
    engine = load_model(tmp_path / "big", device="cpu", dtype=torch.float32, qat=False)
    experts = [layer.ffn.experts for layer in engine.model.layers]
    expert_bytes = sum(x.nbytes() for x in experts)
    dense_bytes = sum(f.stat().st_size for f in files) - expert_bytes
    assert expert_bytes > 50 * 2**20
    loaded = mapped_resident_bytes(files)
    slack = 4 * 2**20  # the kernel maps page-cache neighbours of touched pages (fault-around)
    assert loaded <= dense_bytes + slack, f"loading made {loaded / 2**20:.1f} MiB resident"
    engine.forward(torch.tensor([[3, 7]]), engine.new_cache(2))
    read = mapped_resident_bytes(files) - loaded
    per_expert = expert_bytes / (config.n_routed_experts * config.n_layers)
    # 2 tokens x 2 experts x 2 layers: at most 8 of the 96 experts were selected
    assert 0 < read <= 8 * per_expert + slack, f"a 2-token forward read {read / 2**20:.1f} MiB"
