"""The bugs other V4 ports shipped (design doc 1.11), each re-introduced here on purpose.

Every test plants one bug in our engine (monkeypatch, reverted afterwards) and checks that the
parity or causality checks of this suite would reject it by a wide margin - so the suite is known
to catch it. The bug-free engine passes the same checks (test_parity.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import model.model as mm  # noqa: E402
from model import load_model  # noqa: E402
from model.config import CSA, HCA, SWA  # noqa: E402
from tests.model.hf_ref import hf_config, hf_logits, hf_model, reference_ties, save_hf  # noqa: E402

TOL = 1e-4
CAUGHT = 1e-2  # a planted bug must move the logits at least 100x the parity tolerance


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # 3 Sinkhorn rounds instead of 20: at 20 the iteration has converged and the order of the
    # normalisations no longer shows in the logits
    config = hf_config(
        layers=("swa", "csa", "hca"), hc=4, window=16, csa=4, hca=8, topk=8, hc_sinkhorn_iters=3
    )
    ref = hf_model(config, seed=0)
    engine = load_model(
        save_hf(ref, tmp_path_factory.mktemp("hf")), device="cpu", dtype=torch.float32
    )
    ids = torch.randint(0, 512, (1, 240), generator=torch.Generator().manual_seed(10))
    assert reference_ties(ref, ids) == 0
    return engine, ids, hf_logits(ref, ids)


def parity_error(setup) -> float:
    engine, ids, want = setup
    return (engine.forward(ids, engine.new_cache(ids.shape[1])) - want).abs().max().item()


def test_bug_free_engine_passes(setup):
    assert parity_error(setup) <= TOL


# 1. Llama-style half-split RoPE instead of interleaved pairs
def test_half_split_rope_is_caught(setup, monkeypatch):
    def half_split(x, cos, sin, inverse=False):
        rd = cos.shape[-1] * 2
        if x.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]
        if inverse:
            sin = -sin
        r = x[..., -rd:].float()
        a, b = r[..., : rd // 2], r[..., rd // 2 :]
        out = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        return torch.cat((x[..., :-rd], out.to(x.dtype)), dim=-1)

    monkeypatch.setattr(mm, "apply_rope", half_split)
    assert parity_error(setup) > CAUGHT


def test_rope_rotates_consecutive_pairs():
    x = torch.zeros(1, 8)
    x[0, 4] = 1.0  # first channel of the rope part (last 4 dims)
    cos, sin = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])  # pair 0 turned by 90 degrees
    out = mm.apply_rope(x, cos, sin)
    assert out[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]  # moved into its pair partner (dim 5)


# 2. one RoPE base / YaRN for all layer kinds
@pytest.mark.parametrize("direction", ["swa-uses-compress", "compressed-use-main"])
def test_single_rope_for_all_layers_is_caught(setup, monkeypatch, direction):
    engine = setup[0]
    ropes = dict(engine.model.ropes)
    if direction == "swa-uses-compress":
        ropes[SWA] = ropes[CSA]
    else:
        ropes[CSA] = ropes[HCA] = ropes[SWA]
    monkeypatch.setattr(engine.model, "ropes", ropes)
    assert parity_error(setup) > CAUGHT


def test_rope_frequencies_per_layer_kind(setup):
    engine = setup[0]
    c = engine.config
    plain = 1.0 / (c.rope.theta ** (torch.arange(0, c.rope_head_dim, 2).float() / c.rope_head_dim))
    assert torch.allclose(engine.model.ropes[SWA].inv_freq, plain)
    base = 1.0 / (
        c.compress_rope.theta ** (torch.arange(0, c.rope_head_dim, 2).float() / c.rope_head_dim)
    )
    yarn = engine.model.ropes[CSA].inv_freq
    assert engine.model.ropes[HCA] is engine.model.ropes[CSA]
    assert torch.allclose(yarn[:1], base[:1])  # high frequencies kept
    assert torch.allclose(
        yarn[-1:], base[-1:] / c.compress_rope.factor
    )  # low ones divided by the factor


# 3. compressed entries not rotated, rotated at the pool index, or at the block's last token
@pytest.mark.parametrize("position", ["none", "pool-index", "block-last-token"])
def test_wrong_compressed_rope_position_is_caught(setup, monkeypatch, position):
    original = mm.Compressor.forward

    def forward(self, x, start, state, rope, qat):
        def wrong(pos):
            if position == "none":
                return rope(pos * 0)
            if position == "pool-index":
                return rope(pos // self.ratio)
            return rope(pos + self.ratio - 1)

        return original(self, x, start, state, wrong, qat)

    monkeypatch.setattr(mm.Compressor, "forward", forward)
    assert parity_error(setup) > CAUGHT


# 4. YaRN mscale folded into the softmax scale (or into cos/sin)
@pytest.mark.parametrize("where", ["softmax-scale", "cos-sin"])
def test_yarn_mscale_is_caught(setup, monkeypatch, where):
    engine = setup[0]
    mscale = 0.1 * torch.log(torch.tensor(engine.config.compress_rope.factor)).item() + 1.0
    if where == "softmax-scale":
        for layer in engine.model.layers:
            if layer.attn.kind != SWA:
                monkeypatch.setattr(layer.attn, "scale", layer.attn.scale * mscale)
    else:
        rope = engine.model.ropes[CSA]
        original = rope.__class__.__call__
        scaled = type(
            "ScaledRope",
            (rope.__class__,),
            {"__call__": lambda s, p: tuple(t * mscale for t in original(s, p))},
        )
        monkeypatch.setattr(rope, "__class__", scaled)
    assert parity_error(setup) > CAUGHT


def test_softmax_scale_is_exactly_head_dim(setup):
    for layer in setup[0].model.layers:
        assert layer.attn.scale == setup[0].config.head_dim ** -0.5


# 5. missing inverse RoPE on the attention output
def test_missing_inverse_rope_is_caught(setup, monkeypatch):
    original = mm.apply_rope
    monkeypatch.setattr(
        mm, "apply_rope", lambda x, cos, sin, inverse=False: x if inverse else original(x, cos, sin)
    )
    assert parity_error(setup) > CAUGHT


# 6. mHC: post = 2*sigmoid, comb Sinkhorn column-first, comb used transposed
@pytest.mark.parametrize(
    "bug", ["post-sigmoid", "comb-not-transposed", "softmax-over-columns", "comb-sigmoid"]
)
def test_mhc_bugs_are_caught(setup, monkeypatch, bug):
    original_pre, original_post = mm.hc_pre, mm.hc_post

    def pre(h, fn, scale, base, iters, eps, norm_eps):
        y, post, comb = original_pre(h, fn, scale, base, iters, eps, norm_eps)
        n = h.shape[1]
        if bug == "post-sigmoid":
            post = post / 2
        elif bug in ("softmax-over-columns", "comb-sigmoid"):
            flat = h.flatten(1).float()
            mix = (flat @ fn.T) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + norm_eps)
            logits = (mix[:, 2 * n :] * scale[2] + base[2 * n :]).view(-1, n, n)
            if bug == "comb-sigmoid":
                comb = torch.sigmoid(logits)
            else:
                # the normalisation axes swapped: column softmax, then row-first Sinkhorn
                comb = logits.softmax(-2) + eps
                comb = comb / (comb.sum(-1, keepdim=True) + eps)
                for _ in range(iters - 1):
                    comb = comb / (comb.sum(-2, keepdim=True) + eps)
                    comb = comb / (comb.sum(-1, keepdim=True) + eps)
        return y, post, comb

    def post(f, residual, post_w, comb):
        if bug == "comb-not-transposed":
            out = post_w.unsqueeze(-1) * f.float().unsqueeze(1) + torch.einsum(
                "skj,sjd->skd", comb, residual.float()
            )
            return out.to(residual.dtype)
        return original_post(f, residual, post_w, comb)

    monkeypatch.setattr(mm, "hc_pre", pre)
    monkeypatch.setattr(mm, "hc_post", post)
    assert parity_error(setup) > CAUGHT


# 7. compressed mask that lets a query see blocks still being filled
def test_future_block_visibility_breaks_causality(setup, monkeypatch):
    engine, ids, _ = setup
    monkeypatch.setattr(mm, "visible_entries", lambda t, ratio: (t + ratio) // ratio)
    base = engine.forward(ids, engine.new_cache(ids.shape[1]))
    other = ids.clone()
    other[0, 103:] = (other[0, 103:] + 1) % 512  # position 103 closes block 25 (CSA) / 12 (HCA)
    got = engine.forward(other, engine.new_cache(ids.shape[1]))
    assert (got[:, :103] - base[:, :103]).abs().max().item() > CAUGHT  # earlier queries saw it


# 8. the shared expert must not be SwiGLU-clamped (routed experts are)
def test_shared_expert_is_not_clamped(monkeypatch):
    torch.manual_seed(0)
    shared = mm.SharedExpert(8, 16)
    for w in (shared.w1, shared.w2, shared.w3):
        torch.nn.init.normal_(w.weight, std=0.5)
    x = torch.randn(5, 8) * 20  # pre-activations far beyond the limit of 10
    g, u = x @ shared.w1.weight.T, x @ shared.w3.weight.T
    assert g.abs().max() > 10 and u.abs().max() > 10
    want = (torch.nn.functional.silu(g) * u) @ shared.w2.weight.T
    assert torch.allclose(shared(x), want, atol=1e-4)
    clamped = (torch.nn.functional.silu(g.clamp(max=10)) * u.clamp(-10, 10)) @ shared.w2.weight.T
    assert (clamped - want).abs().max() > 1.0  # the clamp would have shown


def test_routed_experts_are_clamped():
    torch.manual_seed(0)
    experts = mm.Experts(2, 8, 16, limit=10.0)
    torch.nn.init.normal_(experts.w1)
    torch.nn.init.normal_(experts.w3)
    torch.nn.init.normal_(experts.w2)
    x = torch.randn(5, 8) * 20
    w = torch.full((5, 1), 0.5)
    g, u = x @ experts.w1[1].T, x @ experts.w3[1].T
    want = (torch.nn.functional.silu(g.clamp(max=10)) * u.clamp(-10, 10) * w) @ experts.w2[1].T
    assert torch.allclose(experts.run(1, x, w), want, atol=1e-3)
