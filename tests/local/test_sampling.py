"""Token choice: seeded sampling, temperature / top-p / min-p filtering, greedy DSML markup."""

from __future__ import annotations

import math

import pytest
import torch

from agent.providers.sampling import Sampler, SamplingParams, in_dsml_syntax

D = "｜DSML｜"


def _logits(probs: list[float]) -> torch.Tensor:
    return torch.tensor([math.log(p) if p > 0 else -math.inf for p in probs])


def _draws(params: SamplingParams, logits: torch.Tensor, n: int = 3000) -> torch.Tensor:
    s = Sampler(params)
    return torch.tensor([s.choose(logits) for _ in range(n)])


def test_same_seed_same_tokens_other_seed_other_tokens():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 0.1
    a = _draws(SamplingParams(seed=7, min_p=0), logits, 50)
    b = _draws(SamplingParams(seed=7, min_p=0), logits, 50)
    c = _draws(SamplingParams(seed=8, min_p=0), logits, 50)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_temperature_zero_and_greedy_pick_the_argmax():
    logits = _logits([0.2, 0.5, 0.3])
    assert set(_draws(SamplingParams(temperature=0, seed=1), logits, 50).tolist()) == {1}
    s = Sampler(SamplingParams(seed=1, min_p=0))
    assert {s.choose(logits, greedy=True) for _ in range(50)} == {1}


def test_plain_sampling_follows_the_distribution():
    counts = torch.bincount(
        _draws(SamplingParams(seed=3, min_p=0), _logits([0.6, 0.3, 0.1])), minlength=3
    )
    freq = counts.float() / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.04)


def test_min_p_drops_unlikely_tokens():
    # min_p 0.2: anything below 0.2 * 0.5 = 0.1 is never drawn
    draws = _draws(SamplingParams(seed=4, min_p=0.2), _logits([0.5, 0.3, 0.12, 0.08]))
    assert set(draws.tolist()) == {0, 1, 2}


def test_top_p_keeps_the_smallest_set_reaching_p():
    draws = _draws(SamplingParams(seed=5, min_p=0, top_p=0.8), _logits([0.5, 0.3, 0.15, 0.05]))
    assert set(draws.tolist()) == {0, 1}
    # the best token survives even when it alone exceeds top_p
    assert set(
        _draws(SamplingParams(seed=5, min_p=0, top_p=0.1), _logits([0.5, 0.3, 0.2]), 100).tolist()
    ) == {0}


def test_temperature_sharpens():
    hot = torch.bincount(
        _draws(SamplingParams(seed=6, min_p=0, temperature=2.0), _logits([0.7, 0.3])), minlength=2
    )
    cold = torch.bincount(
        _draws(SamplingParams(seed=6, min_p=0, temperature=0.5), _logits([0.7, 0.3])), minlength=2
    )
    assert cold[1] < hot[1]


@pytest.mark.parametrize("bad", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"min_p": 1.5}])
def test_invalid_params_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


@pytest.mark.parametrize(
    ("text", "syntax"),
    [
        ("plain answer", False),
        ("answer\n\n<", False),
        (f"answer\n\n<{D}", True),
        (f'<{D}tool_calls>\n<{D}invoke name="re', True),
        (f'<{D}tool_calls>\n<{D}invoke name="x">\n<{D}parameter name="path" string="tr', True),
        (
            f'<{D}tool_calls>\n<{D}invoke name="x">\n<{D}parameter name="path" string="true">src/',
            False,
        ),
        (
            f'<{D}tool_calls>\n<{D}invoke name="x">\n<{D}parameter name="p" string="true">v</{D}',
            True,
        ),
        (
            f'<{D}tool_calls>\n<{D}invoke name="x">\n<{D}parameter name="p" string="true">v</{D}parameter>\n',
            True,
        ),
        (f"<{D}tool_calls>\n</{D}tool_calls>", True),
    ],
)
def test_dsml_syntax_positions(text, syntax):
    assert in_dsml_syntax(text) is syntax
