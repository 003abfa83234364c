"""The attention core against a per-query restatement of the maths (design doc 1.6)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import model.attention as attention  # noqa: E402
from model.attention import Picked, Span, sparse_attention  # noqa: E402


def naive(q, sink, scale, entries_per_query):
    """For each query: its explicit list of visible rows, softmax with the sink in the
    denominator only, values = keys."""
    out = torch.zeros_like(q)
    for j, rows in enumerate(entries_per_query):
        z = (rows @ q[j].T).T * scale  # [H, n]
        m = torch.maximum(z.max(-1, keepdim=True).values, sink[:, None])
        p = torch.exp(z - m) / (
            torch.exp(z - m).sum(-1, keepdim=True) + torch.exp(sink[:, None] - m)
        )
        out[j] = p @ rows
    return out


@pytest.mark.parametrize("fused", [True, False])
def test_spans_and_picks_match_the_per_query_definition(monkeypatch, fused):
    monkeypatch.setattr(attention, "FUSED_SPANS", fused)
    calls = []
    real_sdpa = attention.F.scaled_dot_product_attention
    monkeypatch.setattr(
        attention.F,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or real_sdpa(*a, **k),
    )
    g = torch.Generator().manual_seed(0)
    b, h, d = 2 * attention.FUSED_MIN_QUERIES, 3, 16  # enough queries for the fused kernel
    q = torch.randn(b, h, d, generator=g)
    sink = torch.randn(h, generator=g)
    window = torch.randn(b + 4, d, generator=g)
    pool = torch.randn(7, d, generator=g)
    lo = torch.arange(b) // 2
    hi = lo + 1 + torch.arange(b) % 6
    keep = torch.rand(b, 7, generator=g) < 0.6
    visible = torch.arange(b) % 8
    index = torch.randint(-1, 7, (b, 3), generator=g)
    cases = {
        "window": ([Span(window, lo, hi)], lambda j: [window[lo[j] : hi[j]]]),
        "window+dense": (
            [Span(window, lo, hi), Span(pool, torch.zeros_like(visible), visible)],
            lambda j: [window[lo[j] : hi[j]], pool[: visible[j]]],
        ),
        "window+thinned": (
            [Span(window, lo, hi), Span(pool, torch.zeros_like(visible), visible, keep)],
            lambda j: [window[lo[j] : hi[j]], pool[: visible[j]][keep[j, : visible[j]]]],
        ),
        "window+picked": (
            [Span(window, lo, hi), Picked(pool, index)],
            lambda j: [window[lo[j] : hi[j]], pool[index[j][index[j] >= 0]]],
        ),
    }
    for name, (parts, rows_of) in cases.items():
        want = naive(q, sink, 0.25, [torch.cat(rows_of(j)) for j in range(b)])
        calls.clear()
        got = sparse_attention(q, sink, 0.25, parts)
        assert (got - want).abs().max().item() < 1e-5, name
        spans_only = all(isinstance(p, Span) for p in parts)
        assert bool(calls) == (fused and spans_only), name  # the path under test really ran


def test_sink_only_shrinks_the_output():
    q = torch.randn(2, 1, 4)
    rows = torch.randn(3, 4)
    parts = [Span(rows, torch.tensor([0, 0]), torch.tensor([3, 3]))]
    plain = sparse_attention(q, torch.tensor([-1e9]), 1.0, parts)
    assert torch.allclose(plain[:, 0], torch.softmax(q[:, 0] @ rows.T, -1) @ rows, atol=1e-6)
    big = sparse_attention(q, torch.tensor([30.0]), 1.0, parts)
    assert big.abs().max() < 1e-6  # all the mass went to the sink, which has no value
