"""Choosing the next token: temperature / top-p / min-p with a seed, greedy inside DSML markup.

DeepSeek recommends temperature 1.0 and top-p 1.0 for V4; like DwarfStar 4 we add min-p 0.05
and pick the *syntax* of a DSML tool call greedily (tags, tool and parameter names), sampling
only the parameter values, so a sampled tool call is well-formed far more often.

Logits processors are a hook: `processor(generated_ids, logits) -> logits` runs before the
choice (tests use one that forces a scripted token sequence; see LocalProvider for how one is
plugged in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from agent.providers.dsml import PARAM_CLOSE, PARAM_OPEN
from agent.providers.v4_format import DSML


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.05
    seed: int | None = None
    greedy_dsml: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], not {self.min_p}")


class LogitsProcessor(Protocol):
    """Called before each token is chosen with the ids generated so far in this completion
    (empty at its start) and the model's logits; returns the logits to choose from. It must
    return a new tensor rather than change `logits` in place (the provider keeps them)."""

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor: ...


class Sampler:
    """Stateful only through its random generator (seeded once per provider)."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = torch.Generator(device="cpu")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def choose(self, logits: torch.Tensor, *, greedy: bool = False) -> int:
        """One token id from 1-D logits (any device); fp32 on the CPU so a seed reproduces
        the same choice on every accelerator."""
        logits = logits.detach().float().cpu()
        p = self.params
        if greedy or p.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.min_p > 0:
            probs = torch.where(probs >= p.min_p * probs.max(), probs, 0.0)
        if p.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            # keep the smallest set whose mass reaches top_p (always at least the best token)
            drop = (cumulative - sorted_probs) >= p.top_p * cumulative[-1]
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        if not torch.isfinite(probs).all() or probs.sum() <= 0:
            return int(torch.argmax(logits))
        return int(torch.multinomial(probs, 1, generator=self.generator))


def in_dsml_syntax(text: str) -> bool:
    """Whether the next token of a completion is DSML markup (chosen greedily) rather than
    free text: true inside a tool-call block except within a parameter's value."""
    first = text.find(DSML)
    if first < 0:
        return False
    tail = text[first:]
    opened = tail.rfind(PARAM_OPEN)
    if opened < 0 or tail.rfind(PARAM_CLOSE) > opened:
        return True
    header_end = tail.find(">", opened + len(PARAM_OPEN))
    if header_end < 0:
        return True  # still writing the parameter's name and type
    # in the value: free text, until the model starts the closing tag with the DSML token
    return DSML in tail[header_end + 1 :]
