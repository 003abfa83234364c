"""Configuration: flags > environment > project `.v4code.toml` > user `config.toml` > defaults.

Interface other modules use (keep stable):
    settings = load_settings(repo=None, **flags)     flags: provider, model, base_url, model_path,
                                                     and any top-level config key (thinking, ...);
                                                     None = not given; other names are ignored
    settings.provider        "deepseek" | "openai" | "local" | None (nothing configured)
    settings.model, .base_url, .context_window, .reserve, .default_budget
    settings.prices          Prices(cache_hit, cache_miss, output), USD per million tokens; .cost()
    settings.api_key         Secret | None (masked in str/repr; .reveal() only where it is sent)
    settings.sources[name]   where each value came from ("flag --model", "env DEEPSEEK_API_KEY", ...)
    settings.providers[name] ProviderStatus(usable, reason, ...) for every provider (doctor)
    settings.require_provider() -> str, or ConfigError (exit 2) that shows how to configure one

The trust rule: a project config comes with a repository and may be hostile, so an API key is
only ever sent to a base URL that came from the user's own config, a flag, the environment or
the built-in default. A project may point v4code at a keyless server (e.g. the team's vLLM), but
then no key goes with the request; a project config may not hold keys at all (they are ignored
with a note), nor prices (they feed the --max-cost guard).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.paths import user_config_file

DEFAULT_CONTEXT_WINDOW = 1_048_576
DEFAULT_RESERVE = 131_072  # room for the conversation and the answer
DEFAULT_MODEL = "deepseek-v4-flash"
PROVIDERS = ("deepseek", "openai", "local")
PROJECT_CONFIG_NAME = ".v4code.toml"

DEFAULT_BASE_URLS = {"deepseek": "https://api.deepseek.com", "openai": "https://api.openai.com/v1"}
KEY_ENV = {"deepseek": "DEEPSEEK_API_KEY", "openai": "OPENAI_API_KEY"}
BASE_URL_ENV = {
    "deepseek": ("DEEPSEEK_BASE_URL",),
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
}


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    cache_hit: float
    cache_miss: float
    output: float

    def cost(
        self, input_tokens: int, cached_input_tokens: int = 0, output_tokens: int = 0
    ) -> float:
        miss = max(0, input_tokens - cached_input_tokens)
        return (
            cached_input_tokens * self.cache_hit
            + miss * self.cache_miss
            + output_tokens * self.output
        ) / 1_000_000


# DeepSeek's published list at V4 launch; prices change often, so they are configuration
# (`[prices."<model id>"]` or V4CODE_PRICES), and these are only the defaults.
DEFAULT_PRICES: dict[str, Prices] = {
    "deepseek-v4-flash": Prices(0.0028, 0.14, 0.28),
    "deepseek-v4-pro": Prices(0.003625, 0.435, 0.87),
}
FREE = Prices(0.0, 0.0, 0.0)


class Secret:
    """An API key. Its str/repr/format show a masked form; only `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        v = self._value
        return f"…{v[-4:]}" if len(v) >= 16 else "****"

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    def __str__(self) -> str:
        return self.masked()

    def __format__(self, spec: str) -> str:
        return format(self.masked(), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:  # never pickled into a transcript or a subprocess by accident
        raise TypeError("Secret cannot be pickled")


@dataclass
class ProviderStatus:
    name: str
    usable: bool
    reason: str  # why usable or why not, in words
    base_url: str | None = None
    model: str | None = None
    key: str | None = None  # masked
    key_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Settings:
    provider: str | None = None
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    context_window: int = DEFAULT_CONTEXT_WINDOW
    reserve: int = DEFAULT_RESERVE
    prices: Prices = field(default_factory=lambda: DEFAULT_PRICES[DEFAULT_MODEL])
    api_key: Secret | None = None
    api_key_env: str | None = None  # the variable a user sets to fix an auth error
    key_withheld: str | None = None  # why a configured key is not sent (trust rule)
    model_path: Path | None = None
    thinking: bool | None = None  # None: the server's default
    reasoning_effort: str | None = None
    show_reasoning: bool = True
    max_output_tokens: int | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # seconds without a byte; a 1M-token prefill can take minutes
    max_retries: int = 4
    retry_max_time: float = 120.0  # total seconds spent retrying one request
    stream_usage: bool = True  # ask for usage in the stream (stream_options.include_usage)
    temperature: float | None = None  # sampling defaults; None = the server's / engine's own
    top_p: float | None = None
    min_p: float | None = None  # local engine only
    seed: int | None = None
    device: str | None = None  # local engine: "cuda", "cuda:1", "mps", "cpu" (None = best found)
    dtype: str | None = None  # local engine: "bfloat16", "float32", ...
    kv_cache_max_bytes: int | None = None  # local engine: size of the disk prefix cache
    extra_body: dict[str, Any] = field(default_factory=dict)
    prices_known: bool = True
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    providers: dict[str, ProviderStatus] = field(default_factory=dict)
    config_files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def default_budget(self) -> int:
        return max(1, self.context_window - self.reserve)

    def require_provider(self) -> str:
        if self.provider is None:
            raise ConfigError("no model provider configured.", hint=how_to_configure())
        return self.provider

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view with the key masked (for doctor and result objects)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "api_key": self.api_key.masked() if self.api_key else None,
            "model_path": str(self.model_path) if self.model_path else None,
            "context_window": self.context_window,
            "reserve": self.reserve,
            "default_budget": self.default_budget,
            "prices": {
                "cache_hit": self.prices.cache_hit,
                "cache_miss": self.prices.cache_miss,
                "output": self.prices.output,
            },
            "thinking": self.thinking,
            "reasoning_effort": self.reasoning_effort,
            "show_reasoning": self.show_reasoning,
            "max_output_tokens": self.max_output_tokens,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_retries": self.max_retries,
            "retry_max_time": self.retry_max_time,
            "stream_usage": self.stream_usage,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "seed": self.seed,
            "device": self.device,
            "dtype": self.dtype,
            "kv_cache_max_bytes": self.kv_cache_max_bytes,
            "extra_body": self.extra_body,
        }


def how_to_configure() -> str:
    """The three ways to configure a provider (shown with exit code 2 and by doctor)."""
    return _HOW_TO_CONFIGURE.replace("USER_CONFIG", str(user_config_file()))


_HOW_TO_CONFIGURE = """\
Configure a provider in one of three ways:
  1. environment:  export DEEPSEEK_API_KEY=sk-...                (DeepSeek's API)
                   export OPENAI_BASE_URL=http://HOST:8000/v1    (vLLM, SGLang, llama.cpp, Ollama, ...;
                                                                  plus OPENAI_API_KEY if it needs one)
  2. flags:        --provider openai --base-url http://HOST:8000/v1
                   --provider local --model-path DIR             (the local PyTorch engine)
  3. config file:  USER_CONFIG, e.g.
                       provider = "deepseek"
                       [deepseek]
                       api_key = "sk-..."
Run `v4code doctor` to see what is configured and why a provider is not usable."""


# ----------------------------------------------------------------------------- schema

# Top-level keys: name -> (type checker, description of the type for errors).
_SCALARS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "provider": (str, "one of deepseek|openai|local"),
    "model": (str, "a string"),
    "base_url": (str, "a URL"),
    "model_path": (str, "a directory path"),
    "context_window": (int, "a positive integer"),
    "reserve": (int, "a non-negative integer"),
    "thinking": (bool, "true or false"),
    "reasoning_effort": (str, "a string such as low|high|max"),
    "show_reasoning": (bool, "true or false"),
    "max_output_tokens": (int, "a positive integer"),
    "connect_timeout": ((int, float), "seconds"),
    "read_timeout": ((int, float), "seconds"),
    "max_retries": (int, "a non-negative integer"),
    "retry_max_time": ((int, float), "seconds"),
    "stream_usage": (bool, "true or false"),
    "temperature": ((int, float), "a number >= 0"),
    "top_p": ((int, float), "a number in (0, 1]"),
    "min_p": ((int, float), "a number in [0, 1]"),
    "seed": (int, "an integer"),
    "device": (str, "a torch device such as cuda, cuda:1, mps, cpu"),
    "dtype": (str, "a torch dtype such as bfloat16"),
    "kv_cache_max_bytes": (int, "a non-negative integer"),
}
# Settings read the same way from every layer (no per-provider tables, no trust rule): every
# top-level key but the four that choose and locate the provider (see _candidate, load_settings).
_PER_PROVIDER = ("provider", "model", "base_url", "model_path")
_PLAIN_SETTINGS = tuple(name for name in _SCALARS if name not in _PER_PROVIDER)
_PROVIDER_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "base_url": (str, "a URL"),
    "api_key": (str, "a string"),
    "model": (str, "a string"),
    "model_path": (str, "a directory path"),
    "extra_body": (dict, "a table"),
}
_PRICE_KEYS = ("cache_hit", "cache_miss", "output")

# Environment variables for top-level settings (provider-specific ones are in KEY_ENV/BASE_URL_ENV).
_ENV = {name: "V4CODE_" + name.upper() for name in _SCALARS}
_ENV_PRICES = "V4CODE_PRICES"


@dataclass
class _Layer:
    """One configuration source: flags, environment, project file or user file."""

    kind: str  # "flag" | "env" | "project" | "user"
    label: str  # shown as the source of a value
    values: dict[str, Any] = field(default_factory=dict)  # top-level keys
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # [deepseek] [openai] [local]
    prices: dict[str, Prices] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # per-key label override (env var names)


def _check_type(value: Any, expected: type | tuple[type, ...], what: str, where: str) -> Any:
    # bool is an int in Python; a `true` must not pass as a context window.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


# What an HTTP header value may carry: visible ASCII. A key with a newline or a non-ASCII
# character cannot be sent, and httpx would quote the whole header (key included) in its error.
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _clean_key(value: Any, where: str) -> str:
    """An API key from a file or the environment, trimmed; never echoed in an error."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string (the value is not shown)")
    key = value.strip()
    if key and not HEADER_SAFE.fullmatch(key):
        raise ConfigError(
            f"{where}: the key contains spaces, control or non-ASCII characters, so it cannot be "
            "sent in an HTTP header (the value is not shown); copy the key again"
        )
    return key


def _parse_prices(table: Any, where: str) -> Prices:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table with {', '.join(_PRICE_KEYS)}")
    unknown = set(table) - set(_PRICE_KEYS)
    missing = set(_PRICE_KEYS) - set(table)
    if unknown or missing:
        raise ConfigError(
            f"{where}: needs exactly {', '.join(_PRICE_KEYS)} (USD per million tokens)"
            + (f"; unknown {sorted(unknown)}" if unknown else "")
            + (f"; missing {sorted(missing)}" if missing else "")
        )
    values = []
    for k in _PRICE_KEYS:
        v = table[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
            raise ConfigError(f"{where}.{k}: expected a non-negative number, got {v!r}")
        values.append(float(v))
    return Prices(*values)


def _read_file_layer(path: Path, kind: str) -> _Layer | None:
    if not path.is_file():
        return None
    label = f"{kind} config {path}"
    import tomllib  # only when a config file exists: keeps every command's start-up lighter

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    layer = _Layer(kind, label)
    for key, value in data.items():
        where = f"{path}: {key}"
        if key in _SCALARS:
            layer.values[key] = _check_type(value, *_SCALARS[key], where)
        elif key in PROVIDERS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table [{key}]")
            section = {}
            for sk, sv in value.items():
                if sk not in _PROVIDER_KEYS:
                    raise ConfigError(
                        f"{where}.{sk}: unknown key (known: {', '.join(_PROVIDER_KEYS)})"
                    )
                if sk == "api_key":
                    api_key = _clean_key(sv, f"{where}.api_key")
                    if api_key:  # `api_key = ""` means not set, as an empty variable does
                        section[sk] = api_key
                    continue
                section[sk] = _check_type(sv, *_PROVIDER_KEYS[sk], f"{where}.{sk}")
            layer.sections[key] = section
        elif key == "prices":
            if not isinstance(value, dict):
                raise ConfigError(f'{where}: expected tables like [prices."deepseek-v4-flash"]')
            for model_id, table in value.items():
                layer.prices[model_id] = _parse_prices(table, f"{where}.{model_id}")
        else:
            known = sorted([*_SCALARS, *PROVIDERS, "prices"])
            raise ConfigError(f"{where}: unknown key (known: {', '.join(known)})")
    return layer


def _parse_env_value(name: str, raw: str, var: str) -> Any:
    expected = _SCALARS[name][0]
    if expected is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on", "enabled"):
            return True
        if low in ("0", "false", "no", "off", "disabled"):
            return False
        raise ConfigError(f"{var}={raw!r}: expected true or false")
    if expected is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected an integer") from None
    if expected == (int, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r}: expected a number") from None
    return raw


def _env_layer(env: dict[str, str]) -> _Layer:
    layer = _Layer("env", "env")
    for name, var in _ENV.items():
        raw = env.get(var, "")
        if raw.strip():
            layer.values[name] = _parse_env_value(name, raw.strip(), var)
            layer.labels[name] = f"env {var}"
    for prov in ("deepseek", "openai"):
        section: dict[str, Any] = {}
        key = _clean_key(env.get(KEY_ENV[prov], ""), f"env {KEY_ENV[prov]}")
        if key:
            section["api_key"] = key
            layer.labels[f"{prov}.api_key"] = f"env {KEY_ENV[prov]}"
        for var in BASE_URL_ENV[prov]:
            url = env.get(var, "").strip()
            if url:
                section["base_url"] = url
                layer.labels[f"{prov}.base_url"] = f"env {var}"
                break
        if "base_url" in layer.values:  # v4code's own variable beats the generic ones
            section["base_url"] = layer.values["base_url"]
            layer.labels[f"{prov}.base_url"] = layer.labels["base_url"]
        if section:
            layer.sections[prov] = section
    raw_prices = env.get(_ENV_PRICES, "").strip()
    if raw_prices:
        parts = [p.strip() for p in raw_prices.split(",")]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 3 or any(n < 0 or not math.isfinite(n) for n in numbers):
            raise ConfigError(
                f"{_ENV_PRICES}={raw_prices!r}: expected three numbers "
                "'cache_hit,cache_miss,output' (USD per million tokens)"
            )
        layer.prices["*"] = Prices(*numbers)
        layer.labels["prices"] = f"env {_ENV_PRICES}"
    return layer


def _flag_layer(flags: dict[str, Any]) -> _Layer:
    layer = _Layer("flag", "flag")
    for name, value in flags.items():
        if value is None:
            continue
        value = getattr(value, "value", value)  # Enum options from typer
        if isinstance(value, Path):
            value = str(value)
        if name in _SCALARS:
            layer.values[name] = value
            layer.labels[name] = f"flag --{name.replace('_', '-')}"
        # Other keyword arguments (budget, output_format, ...) are not settings; ignore them.
    return layer


def _normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


# ----------------------------------------------------------------------------- resolution


class _Resolver:
    def __init__(self, layers: list[_Layer]):
        self.layers = layers  # highest precedence first

    def top(self, name: str) -> tuple[Any, _Layer | None, str]:
        for layer in self.layers:
            if name in layer.values:
                return layer.values[name], layer, layer.labels.get(name, layer.label)
        return None, None, "default"

    def for_provider(
        self, provider: str, name: str, *, fallback_top: bool = True
    ) -> tuple[Any, _Layer | None, str]:
        """A provider-table value beats a top-level one within a layer; layers keep their order."""
        for layer in self.layers:
            section = layer.sections.get(provider, {})
            if name in section:
                return (
                    section[name],
                    layer,
                    layer.labels.get(f"{provider}.{name}", f"{layer.label} [{provider}]"),
                )
            if fallback_top and name in layer.values:
                return layer.values[name], layer, layer.labels.get(name, layer.label)
        return None, None, "default"


@dataclass
class _Candidate:
    name: str
    model: str
    model_source: str
    base_url: str | None
    base_url_source: str
    base_url_layer: str  # kind of the layer the URL came from, or "default"
    key: Secret | None
    key_source: str | None
    key_withheld: str | None
    model_path: Path | None
    model_path_source: str
    extra_body: dict[str, Any]


def _candidate(res: _Resolver, name: str) -> _Candidate:
    model, _, model_source = res.for_provider(name, "model")
    extra, _, _ = res.for_provider(name, "extra_body", fallback_top=False)
    if name == "local":
        model_path, _, mp_source = res.for_provider(name, "model_path")
        return _Candidate(
            name,
            model or DEFAULT_MODEL,
            model_source,
            None,
            "n/a",
            "n/a",
            None,
            None,
            None,
            Path(model_path).expanduser() if model_path else None,
            mp_source,
            extra or {},
        )

    url, url_layer, url_source = res.for_provider(name, "base_url")
    url_kind = url_layer.kind if url_layer else "default"
    if url is None:
        url = DEFAULT_BASE_URLS[name]
    url = _normalise_url(url)

    key: Secret | None = None
    key_source: str | None = None
    for layer in res.layers:
        raw = layer.sections.get(name, {}).get("api_key")
        if raw is None:
            continue
        if layer.kind == "project":
            continue  # a repository never supplies keys (noted in load_settings)
        key = Secret(raw)
        key_source = layer.labels.get(f"{name}.api_key", f"{layer.label} [{name}]")
        break

    withheld = None
    if key is not None and url_kind == "project":
        trusted = {_normalise_url(DEFAULT_BASE_URLS[name])}
        for layer in res.layers:
            if layer.kind == "project":
                continue
            for value in (
                layer.sections.get(name, {}).get("base_url"),
                layer.values.get("base_url"),
            ):
                if value:
                    trusted.add(_normalise_url(value))
        if url not in trusted:
            withheld = (
                f"the {name} key ({key_source}) is not sent to {url}: that base URL comes from "
                f"{url_source}, and a repository's config may not redirect your key. Set the URL "
                f"in your user config, the environment or --base-url to use the key there."
            )
            key = None
    return _Candidate(
        name,
        model or DEFAULT_MODEL,
        model_source,
        url,
        url_source,
        url_kind,
        key,
        key_source,
        withheld,
        None,
        "n/a",
        extra or {},
    )


def _local_status(c: _Candidate) -> ProviderStatus:
    if c.model_path is None:
        return ProviderStatus(
            "local", False, "no checkpoint: set --model-path DIR (or model_path in [local])"
        )
    if not c.model_path.is_dir():
        return ProviderStatus(
            "local", False, f"model_path {c.model_path} is not a directory", model=c.model
        )
    if importlib.util.find_spec("torch") is None:
        return ProviderStatus(
            "local", False, 'torch is not installed: pip install -e ".[local]"', model=c.model
        )
    if importlib.util.find_spec("agent.providers.local") is None:
        return ProviderStatus(
            "local", False, "the local engine provider is not part of this build", model=c.model
        )
    return ProviderStatus(
        "local", True, f"checkpoint {c.model_path} ({c.model_path_source})", model=c.model
    )


def _api_status(c: _Candidate) -> ProviderStatus:
    status = ProviderStatus(
        c.name, False, "", c.base_url, c.model, c.key.masked() if c.key else None, c.key_source
    )
    if c.name == "deepseek":
        if c.key is None:
            status.reason = c.key_withheld or f"no API key: set {KEY_ENV['deepseek']}"
            return status
        status.usable, status.reason = True, f"key from {c.key_source}"
        return status
    explicit_url = c.base_url_layer != "default"
    if not explicit_url and c.key is None:
        status.reason = f"no server: set {BASE_URL_ENV['openai'][0]} (or --base-url) and, if it needs one, {KEY_ENV['openai']}"
        return status
    status.usable = True
    if c.key is None:
        status.reason = f"{c.base_url} without a key" + (
            f" ({c.key_withheld})" if c.key_withheld else ""
        )
    else:
        status.reason = f"{c.base_url} with the key from {c.key_source}"
    return status


def _auto_select(cands: dict[str, _Candidate], flags_layer: _Layer) -> tuple[str | None, str]:
    # A base URL or checkpoint typed on the command line says which provider the user means.
    if "base_url" in flags_layer.values:
        return "openai", "auto: --base-url given"
    if "model_path" in flags_layer.values:
        return "local", "auto: --model-path given"
    ds = cands["deepseek"]
    # A key that is set counts even when the trust rule withholds it: make_provider explains.
    if ds.key_source is not None:
        return "deepseek", f"auto: DeepSeek key set ({ds.key_source})"
    oa = cands["openai"]
    if oa.base_url_layer != "default":
        return "openai", f"auto: OpenAI-compatible base URL set ({oa.base_url_source})"
    if cands["local"].model_path is not None:
        return "local", f"auto: local checkpoint configured ({cands['local'].model_path_source})"
    return None, "none configured"


def load_settings(repo: Path | None = None, **flags: Any) -> Settings:
    """Resolve the effective settings. Raises ConfigError (exit 2) for invalid configuration."""
    env = dict(os.environ)
    root = Path(repo) if repo is not None else Path.cwd()
    user_path = user_config_file()
    project_path = root / PROJECT_CONFIG_NAME

    flag_layer = _flag_layer(flags)
    layers = [flag_layer, _env_layer(env)]
    files: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    # The user's config being inside the repository would make it both; treat it as the user's.
    same_file = project_path.resolve() == user_path.resolve() if project_path.exists() else False
    for kind, path in (("project", project_path), ("user", user_path)):
        if kind == "project" and same_file:
            continue
        layer = _read_file_layer(path, kind)
        files[kind] = {"path": str(path), "exists": layer is not None}
        if layer is not None:
            if kind == "project":
                for prov, section in layer.sections.items():
                    if "api_key" in section:
                        notes.append(
                            f"{path}: [{prov}].api_key ignored: keys never come from a repository's "
                            f"config; use {KEY_ENV.get(prov, 'your user config')} or your user config"
                        )
                if layer.prices:
                    # Prices drive the --max-cost guard; a repository must not be able to zero them.
                    notes.append(
                        f"{path}: [prices] ignored: prices come from your user config, "
                        f"{_ENV_PRICES} or the defaults"
                    )
                    layer.prices = {}
            layers.append(layer)

    res = _Resolver(layers)
    cands = {name: _candidate(res, name) for name in PROVIDERS}

    provider, _, provider_source = res.top("provider")
    if provider is not None and provider not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {provider!r} ({provider_source}); choose one of {', '.join(PROVIDERS)}"
        )
    if provider is None:
        provider, provider_source = _auto_select(cands, flag_layer)

    s = Settings(config_files=files, notes=notes)
    s.providers = {
        "deepseek": _api_status(cands["deepseek"]),
        "openai": _api_status(cands["openai"]),
        "local": _local_status(cands["local"]),
    }
    s.provider = provider
    s.sources["provider"] = provider_source
    chosen = cands[provider] if provider else cands["deepseek"]
    s.model, s.sources["model"] = chosen.model, chosen.model_source
    s.extra_body = dict(chosen.extra_body)
    if provider in ("deepseek", "openai"):
        s.base_url, s.sources["base_url"] = chosen.base_url, chosen.base_url_source
        s.api_key, s.key_withheld = chosen.key, chosen.key_withheld
        s.api_key_env = KEY_ENV[provider]
        s.sources["api_key"] = chosen.key_source or (
            "withheld (trust rule)" if chosen.key_withheld else "not set"
        )
        if chosen.key_withheld:
            notes.append(chosen.key_withheld)
        elif chosen.base_url_layer == "project":
            # The repository chose the server that will receive its code and your prompts.
            notes.append(f"requests go to {chosen.base_url} ({chosen.base_url_source})")
    else:
        s.sources["api_key"] = "not used by this provider" if provider else "no provider"
        s.sources["base_url"] = "not used by this provider" if provider else "no provider"
    local = cands["local"]
    s.model_path, s.sources["model_path"] = local.model_path, local.model_path_source

    for name in _PLAIN_SETTINGS:
        value, _, source = res.top(name)
        if value is not None:
            as_float = _SCALARS[name][0] == (int, float)
            setattr(s, name, float(value) if as_float else value)
        s.sources[name] = source
    _validate(s)

    for layer in layers:
        p = layer.prices.get("*") or layer.prices.get(s.model)
        if p is not None:
            s.prices, s.sources["prices"] = (
                p,
                layer.labels.get("prices", f'{layer.label} [prices."{s.model}"]'),
            )
            break
    else:  # no layer prices this model
        if provider == "local":
            s.prices, s.sources["prices"] = FREE, "local engine: no per-token cost"
        elif s.model in DEFAULT_PRICES:
            s.prices, s.sources["prices"] = (
                DEFAULT_PRICES[s.model],
                "default (DeepSeek's list at V4 launch)",
            )
        else:
            s.prices, s.prices_known = FREE, False
            s.sources["prices"] = "unknown model: cost reported as 0"
            if provider in ("deepseek", "openai"):
                notes.append(
                    f'no prices for model {s.model!r}: costs are reported as 0; set [prices."{s.model}"] '
                    f"cache_hit/cache_miss/output (USD per million tokens) or {_ENV_PRICES}"
                )
    return s


def _validate(s: Settings) -> None:
    def bad(name: str, what: str) -> ConfigError:
        return ConfigError(
            f"{name} = {getattr(s, name)!r} ({s.sources.get(name)}): expected {what}"
        )

    if s.context_window < 1:
        raise bad("context_window", "a positive number of tokens")
    if s.reserve < 0 or s.reserve >= s.context_window:
        raise bad("reserve", f"0 <= reserve < context_window ({s.context_window})")
    if s.max_output_tokens is not None and s.max_output_tokens < 1:
        raise bad("max_output_tokens", "a positive integer")
    for name in ("connect_timeout", "read_timeout"):
        if not getattr(s, name) > 0:
            raise bad(name, "a positive number of seconds")
    if s.max_retries < 0:
        raise bad("max_retries", "0 or more")
    if s.retry_max_time < 0:
        raise bad("retry_max_time", "0 or more seconds")
    if s.temperature is not None and s.temperature < 0:
        raise bad("temperature", "a number >= 0")
    if s.top_p is not None and not 0 < s.top_p <= 1:
        raise bad("top_p", "a number in (0, 1]")
    if s.min_p is not None and not 0 <= s.min_p <= 1:
        raise bad("min_p", "a number in [0, 1]")
    if s.kv_cache_max_bytes is not None and s.kv_cache_max_bytes < 0:
        raise bad("kv_cache_max_bytes", "0 or more bytes")
    if s.base_url is not None and not s.base_url.startswith(("http://", "https://")):
        raise bad("base_url", "an http:// or https:// URL")


def describe_sources(s: Settings) -> list[tuple[str, str, str]]:
    """(name, shown value, source) rows for doctor; the key masked."""
    d = s.to_dict()
    rows = []
    for name in (
        "provider",
        "model",
        "base_url",
        "api_key",
        "model_path",
        "context_window",
        "reserve",
        "prices",
        *_PLAIN_SETTINGS[2:],
    ):
        value = d[name]
        if name == "prices":
            value = f"{s.prices.cache_hit:g} / {s.prices.cache_miss:g} / {s.prices.output:g} USD per 1M (hit/miss/output)"
        elif value is None:
            value = "-"
        rows.append((name, str(value), s.sources.get(name, "default")))
    return rows
