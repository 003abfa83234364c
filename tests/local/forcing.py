"""Test-only logits processors: force a scripted completion, record what the model produced.

`from_env` is the factory the provider loads through $V4CODE_LOCAL_LOGITS_PROCESSOR in
end-to-end runs: it forces the completions listed (as V4 text, special tokens spelled out) in
the JSON file named by $V4CODE_TEST_FORCE_SCRIPT, and appends a line per completion to the
file named by $V4CODE_TEST_FORCE_LOG (when set): which script ran and how many tokens it forced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from agent.providers import v4_format as fmt


def script_ids(text: str, tok) -> list[int]:
    """A completion written as V4 text (markup split into special tokens) -> token ids."""
    return fmt.to_ids(fmt.markup(text), tok)


class ForceTokens:
    """Forces one scripted token sequence per completion (a new completion starts when the
    provider asks with no generated tokens); past a script's end the logits pass unchanged."""

    def __init__(self, scripts: Sequence[Sequence[int]], log: str | None = None):
        self.scripts = [list(s) for s in scripts]
        self.turn = -1
        self.forced = 0
        self.log = log

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if not generated:
            self.turn += 1
            self._note()
        if not 0 <= self.turn < len(self.scripts) or len(generated) >= len(self.scripts[self.turn]):
            return logits
        forced = torch.full_like(logits, float("-inf"))
        forced[..., self.scripts[self.turn][len(generated)]] = 0.0
        self.forced += 1
        return forced

    def _note(self) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps({"turn": self.turn, "scripted": self.turn < len(self.scripts)})
                    + "\n"
                )


class Recorder:
    """Keeps a copy of the logits the model produced at every decoding step."""

    def __init__(self):
        self.steps: list[tuple[list[int], torch.Tensor]] = []

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        self.steps.append((list(generated), logits.detach().float().cpu().clone()))
        return logits


def from_env() -> ForceTokens:
    from agent.tokenizer import get_tokenizer

    texts = json.loads(open(os.environ["V4CODE_TEST_FORCE_SCRIPT"], encoding="utf-8").read())
    tok = get_tokenizer()
    return ForceTokens(
        [script_ids(t, tok) for t in texts], log=os.environ.get("V4CODE_TEST_FORCE_LOG")
    )
