"""Low-precision helpers: QAT emulation and the deterministic top-k."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model.model import chosen_to_index, select_topk  # noqa: E402
from model.quant import (  # noqa: E402
    dequant_fp4,
    dequant_fp8,
    fp4_fake_quant,
    fp8_fake_quant,
    hadamard,
    hadamard_matrix,
    round_to_fp4,
)


def test_fp4_rounding_ties_to_even_code():
    x = torch.tensor([0.2, 0.25, 0.3, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.5, -0.75, -2.6])
    assert round_to_fp4(x).tolist() == [
        0.0,
        0.0,
        0.5,
        1.0,
        1.0,
        2.0,
        2.0,
        4.0,
        4.0,
        6.0,
        -1.0,
        -3.0,
    ]


def test_fp8_fake_quant_uses_power_of_two_block_scales():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 128, generator=g) * 5
    y = fp8_fake_quant(x, 64)
    for blk_x, blk_y in zip(x.view(-1, 64), y.view(-1, 64), strict=True):
        amax = blk_x.abs().max()
        scale = 2.0 ** torch.ceil(torch.log2(amax / 448))
        want = (blk_x / scale).to(torch.float8_e4m3fn).float() * scale
        assert torch.equal(blk_y, want)
    assert (y - x).abs().max() <= x.abs().max() * 2**-4  # e4m3: 3 mantissa bits
    ragged = torch.randn(2, 48, generator=g)  # a partial block is handled too
    assert fp8_fake_quant(ragged, 64).shape == ragged.shape


def test_fp4_fake_quant_values_lie_on_the_scaled_grid():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    y = fp4_fake_quant(x, 32)
    for blk_x, blk_y in zip(x.view(-1, 32), y.view(-1, 32), strict=True):
        scale = 2.0 ** torch.ceil(torch.log2(blk_x.abs().max() / 6))
        grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6]) * scale
        assert torch.isin(blk_y.abs(), grid).all()


def test_hadamard_is_orthogonal_sylvester():
    h = hadamard_matrix(128)
    assert torch.allclose(h @ h.T, torch.eye(128), atol=1e-6)
    assert torch.sign(h[1, :4]).tolist() == [1.0, -1.0, 1.0, -1.0]  # Sylvester order
    q, k = torch.randn(3, 128), torch.randn(5, 128)
    assert torch.allclose(hadamard(q) @ hadamard(k).T, q @ k.T, atol=1e-4)  # dot products kept


def test_dequant_layouts():
    # FP8: one scale per 128x128 block, exponent bias 127
    w = torch.tensor([[1.0, -2.0], [0.5, 448.0]]).to(torch.float8_e4m3fn)
    scale = torch.tensor([[129]], dtype=torch.uint8)  # 2^2
    assert dequant_fp8(w, scale).tolist() == [[4.0, -8.0], [2.0, 1792.0]]
    # FP4: low nibble is the even element; code 0b1011 = -1.5
    packed = torch.tensor([[0x1B, 0x70]], dtype=torch.uint8)  # (-1.5, 0.5), (0, 6)
    scale = torch.tensor([[126]], dtype=torch.uint8)  # 2^-1 for the (padded) block of 32
    assert dequant_fp4(packed, scale).tolist() == [[-0.75, 0.25, 0.0, 3.0]]


def test_topk_ties_break_toward_lower_index():
    scores = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0, 0.0]])
    visible = torch.ones(1, 6, dtype=torch.bool)
    chosen = select_topk(scores, visible, 4)
    assert chosen_to_index(chosen, 4).tolist() == [[0, 1, 2, 4]]  # zeros at 0 and 2 beat 3 and 5
    # invisible entries are never chosen, and short rows are padded with -1
    visible = torch.tensor([[True, True, False, False, False, False]])
    assert chosen_to_index(select_topk(scores, visible, 4), 4).tolist() == [[0, 1, -1, -1]]


def test_topk_is_deterministic_under_permuted_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (32, 200), generator=g).float()  # many ties
    visible = torch.ones_like(scores, dtype=torch.bool)
    chosen = select_topk(scores, visible, 50)
    assert (chosen.sum(-1) == 50).all()
    kth = scores.sort(descending=True).values[:, 49:50]
    assert ((scores > kth) <= chosen).all()  # everything above the k-th value is in
    tied = (scores == kth) & chosen
    # among tied entries exactly the lowest indices were taken
    for row in range(32):
        taken = tied[row].nonzero().flatten()
        candidates = (scores[row] == kth[row]).nonzero().flatten()
        assert torch.equal(taken, candidates[: taken.numel()])
