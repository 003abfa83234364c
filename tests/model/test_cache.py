"""The cache object: snapshots, persistence, sizes (incl. a real 1M-token V4-Flash allocation),
and input validation."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

from model import build_engine  # noqa: E402
from model.cache import Cache, CacheError  # noqa: E402
from model.config import CSA, HCA, SWA, ModelConfig  # noqa: E402
from model.info import cache_formula  # noqa: E402
from model.presets import preset  # noqa: E402

CONFIG = ModelConfig(
    vocab_size=300, dim=64, n_layers=3, n_heads=4, head_dim=32, rope_head_dim=16, q_lora_rank=32, o_groups=2,
    o_lora_rank=16, window_size=16, layer_types=(SWA, CSA, HCA), csa_ratio=4, hca_ratio=8, index_n_heads=16,
    index_head_dim=32, index_topk=8, hc_mult=2, n_routed_experts=4, n_activated_experts=2, moe_inter_dim=32,
    hash_layers=(True, False, False), max_position_embeddings=4096,
)  # fmt: skip


@pytest.fixture(scope="module")
def engine():
    from tests.model.official_ckpt import random_weights

    return build_engine(CONFIG, random_weights(CONFIG, 0), device="cpu")


def ids_of(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, CONFIG.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed)
    )


def run(engine, cache, ids, pieces=(1000,)):
    outs, pos = [], 0
    for n in pieces:
        if pos >= ids.shape[1]:
            break
        outs.append(engine.forward(ids[:, pos : pos + n], cache))
        pos += n
    return torch.cat(outs, dim=1)


def test_snapshot_and_restore_branch(engine):
    ids, other = ids_of(150, 1), ids_of(150, 2)
    cache = engine.new_cache(400)
    engine.forward(ids[:, :101], cache)  # mid-block for both compressors
    snap = cache.snapshot()
    a = engine.forward(ids[:, 101:], cache)
    cache.restore(snap)
    assert cache.length == 101
    b = engine.forward(other[:, 101:], cache)  # a different continuation
    cache.restore(snap)
    again = engine.forward(ids[:, 101:], cache)
    assert torch.equal(a, again)
    fresh = engine.new_cache(400)
    engine.forward(ids[:, :101], fresh)
    assert torch.equal(engine.forward(other[:, 101:], fresh), b)


def test_stale_snapshot_is_refused(engine):
    cache = engine.new_cache(400)
    engine.forward(ids_of(40), cache)
    early = cache.snapshot()
    engine.forward(ids_of(60, 3), cache)
    late = cache.snapshot()  # holds pool entries 40..99
    cache.restore(early)
    engine.forward(ids_of(30, 4), cache)  # overwrites them
    with pytest.raises(CacheError, match="stale"):
        cache.restore(late)
    cache.restore(early)  # the earlier one is still fine
    other = build_engine(CONFIG, device="cpu").new_cache(400)
    with pytest.raises(CacheError, match="another cache"):
        other.restore(early)


@pytest.mark.parametrize("split", [0, 1, 15, 16, 64, 99, 128, 131])
def test_state_dict_round_trip(engine, split):
    """Save at any length (inside a block, on a block edge, before/after the window fills),
    load into a new cache, continue: the same logits as never stopping."""
    ids = ids_of(200, split)
    one_shot = engine.forward(ids, engine.new_cache(200))
    cache = engine.new_cache(200)
    if split:
        engine.forward(ids[:, :split], cache)
    sd = cache.state_dict()
    want = engine.forward(ids[:, split:], cache)  # the uninterrupted run with the same split
    assert all(isinstance(v, (int, str, torch.Tensor)) for v in sd.values())
    restored = engine.new_cache(300)  # a different capacity is fine
    restored.load_state_dict(sd)
    assert restored.length == split
    got = engine.forward(ids[:, split:], restored)
    assert torch.equal(got, want)
    assert (got - one_shot[:, split:]).abs().max().item() < 1e-5


def test_state_dict_holds_only_live_state(engine):
    cache = engine.new_cache(4000)
    engine.forward(ids_of(101), cache)
    sd = cache.state_dict()
    assert sd["1.comp.pool"].shape == (25, 32) and sd["1.index.pool"].shape == (25, 32)
    assert sd["2.comp.pool"].shape == (12, 32)
    assert sd["1.comp.tail_kv"].shape == (1, 64) and sd["2.comp.tail_kv"].shape == (5, 32)
    assert sd["0.window"].shape == (16, 32)
    saved = sum(v.numel() * v.element_size() for v in sd.values() if isinstance(v, torch.Tensor))
    assert saved < cache.nbytes() / 10  # not the preallocated 4000-token buffers


def test_load_state_dict_rejects_mismatches(engine):
    cache = engine.new_cache(200)
    engine.forward(ids_of(50), cache)
    sd = cache.state_dict()
    small = engine.new_cache(40)
    with pytest.raises(CacheError, match="room"):
        small.load_state_dict(sd)
    for key, value, message in (
        ("format", "something-else", "format"),
        ("head_dim", 64, "head_dim"),
        ("1.comp.pool", torch.zeros(3, 32), "shape"),
        ("2.comp.tail_kv", torch.full((2, 32), float("nan")), "non-finite"),
    ):
        bad = dict(sd, **{key: value})
        target = engine.new_cache(200)
        with pytest.raises(CacheError, match=message):
            target.load_state_dict(bad)
        assert target.length == 0  # nothing changed
    bad = dict(sd)
    del bad["1.index.pool"]
    with pytest.raises(CacheError, match="missing"):
        engine.new_cache(200).load_state_dict(bad)


def test_sizes_match_the_formula(engine):
    for n in (64, 1000, 4096):
        cache = engine.new_cache(n)
        f = cache_formula(CONFIG, "float32")
        assert cache.nbytes() == f.at(CONFIG, n)
        assert cache.fixed_bytes() == f.fixed
        assert cache.bytes_per_token() == pytest.approx(f.per_token)
        assert cache.bytes_at(n) == cache.nbytes()
        assert cache.bytes_at(1_000_000) == f.at(CONFIG, 1_000_000)


def v4_flash_formula_bytes(n_tokens: int) -> tuple[int, int]:
    """Design doc 5.1, all-bf16 row, restated here from the released V4-Flash shapes (not from
    the engine's code): B_tok = N_CSA (E_main + E_idx) / 4 + N_HCA E_main / 128 with
    E_main = 512 x 2 B and E_idx = 128 x 2 B (21 CSA, 20 HCA layers); plus the fixed window
    state, 128 rows of 512 bf16 values in each of the 43 layers. Returns (pools, window)."""
    e_main, e_idx = 512 * 2, 128 * 2
    per_token = 21 * (e_main + e_idx) / 4 + 20 * e_main / 128
    assert per_token == 6880
    return int(per_token * n_tokens), 43 * 128 * e_main


def test_v4_flash_cache_at_1m_tokens_is_really_allocated():
    """bf16, no QAT: the cache the engine allocates for V4-Flash at 2^20 tokens equals the design
    formula (6.72 GiB of pools + 5.5 MiB of window rings) within 2 %. Measured by allocating it:
    the process's virtual size grows by it; pools are left untouched so the shared test machine's
    RAM is not consumed (the slow test below touches every page and checks resident memory)."""
    config, n = preset("v4-flash"), 1_048_576
    pools, window = v4_flash_formula_bytes(n)
    assert 6.7 * 2**30 < pools < 6.75 * 2**30
    before = _vm_kb("VmSize")
    cache = Cache(config, n, torch.device("cpu"), torch.bfloat16)
    grown = (_vm_kb("VmSize") - before) * 1024
    want = pools + window
    assert all(
        t.dtype == torch.bfloat16
        for layer in cache.layers
        for t in (layer.window, *(s.pool for s in layer.states().values()))
    )
    assert abs(grown - want) / want < 0.02, (grown, want)
    assert abs(cache.nbytes() - want) / want < 0.02
    # what the 2 % covers: the compressors' fp32 tails and overlap rows (11 MiB)
    assert 0 < cache.nbytes() - want < 0.002 * want
    assert cache.bytes_per_token() == pytest.approx(6880.0)
    del cache


@pytest.mark.slow
def test_v4_flash_cache_at_1m_tokens_resident():
    config, n = preset("v4-flash"), 1_048_576
    cache = Cache(config, n, torch.device("cpu"), torch.bfloat16)
    before = _vm_kb("VmRSS")
    for layer in cache.layers:
        for state in layer.states().values():
            state.pool.zero_()
    resident = (_vm_kb("VmRSS") - before) * 1024
    pools, window = v4_flash_formula_bytes(n)
    assert abs(resident - pools) / pools < 0.02, (resident, pools)


def _vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read())[1])


# ---- input validation: a clear error, the cache untouched ---------------------------------


def test_bad_inputs_leave_the_cache_untouched(engine):
    cache = engine.new_cache(20)
    engine.forward(ids_of(10), cache)
    snap = cache.state_dict()
    for bad, err in (
        (torch.zeros(10, dtype=torch.long), ValueError),  # not [1, S]
        (torch.zeros(2, 3, dtype=torch.long), ValueError),  # batch of 2
        (torch.zeros(1, 0, dtype=torch.long), ValueError),  # empty
        (torch.zeros(1, 3), ValueError),  # floats
        (torch.tensor([[1, 2, CONFIG.vocab_size]]), ValueError),  # out of vocabulary
        (torch.tensor([[-1]]), ValueError),
        (ids_of(11), CacheError),  # does not fit
    ):
        with pytest.raises(err):
            engine.forward(bad, cache)
        assert cache.length == 10
    after = cache.state_dict()
    assert all(torch.equal(snap[k], after[k]) for k in snap if isinstance(snap[k], torch.Tensor))
    foreign = build_engine(CONFIG.with_(window_size=8), device="cpu")
    with pytest.raises(CacheError, match="not made by this engine"):
        foreign.forward(ids_of(3), cache)
    with pytest.raises(CacheError, match="positions"):
        engine.new_cache(CONFIG.max_position_embeddings + 1)


def test_identity_is_stable_and_sensitive(engine, tmp_path):
    from tests.model.official_ckpt import random_weights

    same = build_engine(CONFIG, random_weights(CONFIG, 0), device="cpu")
    assert same.identity() == engine.identity() and len(engine.identity()) == 32
    assert (
        build_engine(CONFIG, random_weights(CONFIG, 1), device="cpu").identity()
        != engine.identity()
    )
    qat = build_engine(CONFIG, random_weights(CONFIG, 0), device="cpu", qat=True)
    assert qat.identity() != engine.identity()


def test_loading_a_state_makes_older_snapshots_stale(engine):
    cache = engine.new_cache(200)
    engine.forward(ids_of(40, 1), cache)
    snap = cache.snapshot()
    other = engine.new_cache(200)
    engine.forward(ids_of(90, 2), other)
    cache.load_state_dict(other.state_dict())  # pools now hold another sequence
    with pytest.raises(CacheError, match="stale"):
        cache.restore(snap)


def test_a_failed_forward_marks_the_cache_until_restored(engine, monkeypatch):
    import model.model as mm

    cache = engine.new_cache(200)
    engine.forward(ids_of(30), cache)
    snap = cache.snapshot()

    def boom(*args, **kwargs):
        raise RuntimeError("simulated out of memory")

    monkeypatch.setattr(mm.MoE, "forward", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        engine.forward(ids_of(5, 1), cache)
    monkeypatch.undo()
    with pytest.raises(CacheError, match="unusable"):
        engine.forward(ids_of(5, 1), cache)
    cache.restore(snap)
    fresh = engine.new_cache(200)
    engine.forward(ids_of(30), fresh)
    assert torch.equal(engine.forward(ids_of(5, 1), cache), engine.forward(ids_of(5, 1), fresh))
