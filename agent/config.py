"""Configuration: flags > environment > project .v4code.toml > user config.toml > defaults.

INTERIM VERSION (defaults only). The providers work replaces this with the full loader; the
names below are the interface other modules use and must stay:
    Prices(cache_hit, cache_miss, output)  USD per million tokens; .cost(...)
    Settings.model, .provider, .base_url, .context_window, .reserve, .prices, .default_budget
    load_settings(repo=None, **flags) -> Settings
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONTEXT_WINDOW = 1_048_576
DEFAULT_RESERVE = 131_072  # room for the conversation and the answer
DEFAULT_MODEL = "deepseek-v4-flash"


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    cache_hit: float
    cache_miss: float
    output: float

    def cost(self, input_tokens: int, cached_input_tokens: int = 0, output_tokens: int = 0) -> float:
        miss = max(0, input_tokens - cached_input_tokens)
        return (
            cached_input_tokens * self.cache_hit + miss * self.cache_miss + output_tokens * self.output
        ) / 1_000_000


# DeepSeek's published list at V4 launch (see README: prices are configuration).
DEFAULT_PRICES: dict[str, Prices] = {
    "deepseek-v4-flash": Prices(0.0028, 0.14, 0.28),
    "deepseek-v4-pro": Prices(0.003625, 0.435, 0.87),
}


@dataclass
class Settings:
    provider: str | None = None
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    context_window: int = DEFAULT_CONTEXT_WINDOW
    reserve: int = DEFAULT_RESERVE
    prices: Prices = field(default_factory=lambda: DEFAULT_PRICES[DEFAULT_MODEL])

    @property
    def default_budget(self) -> int:
        return max(1, self.context_window - self.reserve)


def load_settings(repo: Path | None = None, **flags: object) -> Settings:
    settings = Settings()
    model = flags.get("model")
    if isinstance(model, str) and model:
        settings.model = model
        settings.prices = DEFAULT_PRICES.get(model, settings.prices)
    return settings
