"""`make_provider(settings) -> Provider`: the one place that turns configuration into a client."""

from __future__ import annotations

from agent.config import KEY_ENV, Settings
from agent.errors import ConfigError
from agent.providers.base import Provider


def make_provider(settings: Settings) -> Provider:
    """The configured provider; ConfigError (exit 2) when none is configured or it cannot work."""
    name = settings.require_provider()
    if name == "local":
        try:
            # Lazy: the base install has no torch, and API users never pay for importing it.
            from agent.providers.local import LocalProvider
        except ModuleNotFoundError as exc:
            if exc.name == "agent.providers.local":
                raise ConfigError("the local engine provider is not part of this build") from None
            if exc.name and exc.name.split(".")[0] in ("torch", "safetensors"):
                raise ConfigError(
                    f"the local engine needs {exc.name}, which is not installed",
                    hint='Install it with: pip install -e ".[local]"',
                ) from None
            raise
        return LocalProvider.from_settings(settings)

    from agent.providers.openai_compat import OpenAICompatProvider

    if name == "deepseek" and settings.api_key is None:
        raise ConfigError(
            "the deepseek provider needs an API key.",
            hint=settings.key_withheld
            or f"Set {KEY_ENV['deepseek']} (or api_key in [deepseek] of your user config).",
        )
    if not settings.base_url:
        raise ConfigError(
            f"the {name} provider needs a base URL: set OPENAI_BASE_URL or pass --base-url"
        )
    return OpenAICompatProvider.from_settings(settings)
