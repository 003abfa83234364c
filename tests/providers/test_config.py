"""Configuration: precedence, provenance, auto-selection, validation, prices, the trust rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.commands.common import ProviderName
from agent.config import DEFAULT_PRICES, Prices, Secret, Settings, load_settings
from agent.errors import ConfigError, ExitCode
from agent.paths import user_config_file
from agent.providers.factory import make_provider
from agent.providers.openai_compat import OpenAICompatProvider
from tests.support.scripted_server import ScriptedServer, Turn

USER = [{"role": "user", "content": "hi"}]


def write_user(text: str) -> Path:
    path = user_config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_project(repo: Path, text: str) -> Path:
    path = repo / ".v4code.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_on_a_fresh_machine(tmp_path):
    s = load_settings(tmp_path)
    assert s.provider is None and s.model == "deepseek-v4-flash"
    assert s.context_window == 1_048_576 and s.reserve == 131_072
    assert s.default_budget == 1_048_576 - 131_072
    assert s.prices == DEFAULT_PRICES["deepseek-v4-flash"]
    assert all(not st.usable for st in s.providers.values())
    assert (
        s.config_files["user"]["exists"] is False and s.config_files["project"]["exists"] is False
    )


def test_no_provider_is_exit_2_with_three_ways(tmp_path):
    s = load_settings(tmp_path)
    with pytest.raises(ConfigError) as info:
        make_provider(s)
    text = str(info.value)
    assert info.value.exit_code == ExitCode.USAGE
    assert "DEEPSEEK_API_KEY" in text and "OPENAI_BASE_URL" in text  # environment
    assert "--provider openai --base-url" in text and "--model-path" in text  # flags
    assert str(user_config_file()) in text  # config file


def test_precedence_flags_env_project_user(tmp_path, monkeypatch):
    write_user(
        'model = "user-model"\ncontext_window = 500000\nreserve = 1000\nread_timeout = 11\n'
        "thinking = true\n"
    )
    write_project(
        tmp_path, 'model = "project-model"\ncontext_window = 400000\nreasoning_effort = "high"\n'
    )
    monkeypatch.setenv("V4CODE_MODEL", "env-model")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-env-key-000000000000")

    s = load_settings(tmp_path, model="flag-model")
    assert s.model == "flag-model" and s.sources["model"] == "flag --model"
    s = load_settings(tmp_path)
    assert s.model == "env-model" and s.sources["model"] == "env V4CODE_MODEL"
    monkeypatch.delenv("V4CODE_MODEL")
    s = load_settings(tmp_path)
    assert s.model == "project-model" and s.sources["model"].startswith("project config")
    assert s.context_window == 400000 and s.sources["context_window"].startswith("project config")
    assert s.reserve == 1000 and s.sources["reserve"].startswith("user config")
    assert s.read_timeout == 11.0 and s.thinking is True and s.reasoning_effort == "high"
    assert s.sources["connect_timeout"] == "default"
    assert s.default_budget == 399_000


def test_provider_section_beats_top_level_in_the_same_file(tmp_path):
    write_user(
        'model = "generic"\n[deepseek]\nmodel = "deepseek-v4-pro"\napi_key = "sk-user-key-1111111111"\n'
        '[openai]\nbase_url = "http://gpu-box:8000/v1"\n'
    )
    s = load_settings(tmp_path)
    assert s.provider == "deepseek" and s.model == "deepseek-v4-pro"
    assert s.prices == DEFAULT_PRICES["deepseek-v4-pro"]
    s = load_settings(tmp_path, provider=ProviderName.openai)  # an Enum straight from typer
    assert (
        s.provider == "openai" and s.model == "generic" and s.base_url == "http://gpu-box:8000/v1"
    )


def test_auto_selection_order(tmp_path, monkeypatch):
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    write_user(f'[local]\nmodel_path = "{model_dir}"\n')
    assert load_settings(tmp_path).provider == "local"
    monkeypatch.setenv("OPENAI_API_BASE", "http://localhost:30000/v1")
    s = load_settings(tmp_path)
    assert s.provider == "openai" and s.base_url == "http://localhost:30000/v1"
    assert s.sources["base_url"] == "env OPENAI_API_BASE"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1/")
    assert load_settings(tmp_path).base_url == "http://localhost:8000/v1"  # OPENAI_BASE_URL first
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-22222222222")
    s = load_settings(tmp_path)
    assert s.provider == "deepseek" and s.base_url == "https://api.deepseek.com"
    assert s.sources["provider"].startswith("auto: DeepSeek key set")
    # What the user typed wins over what the environment happens to hold.
    assert load_settings(tmp_path, base_url="http://x:1/v1").provider == "openai"
    assert load_settings(tmp_path, model_path=model_dir).provider == "local"
    assert load_settings(tmp_path, provider="openai").provider == "openai"


def test_openai_key_alone_does_not_auto_select(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-3333333333333")
    s = load_settings(tmp_path)
    assert s.provider is None
    s = load_settings(tmp_path, provider="openai")
    assert s.base_url == "https://api.openai.com/v1" and s.api_key == Secret(
        "sk-openai-3333333333333"
    )


def test_deepseek_without_key_is_a_config_error(tmp_path):
    s = load_settings(tmp_path, provider="deepseek")
    assert not s.providers["deepseek"].usable
    with pytest.raises(ConfigError, match="needs an API key") as info:
        make_provider(s)
    assert "DEEPSEEK_API_KEY" in str(info.value)


def test_factory_builds_the_http_client(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-22222222222")
    monkeypatch.setenv("V4CODE_MAX_RETRIES", "7")
    provider = make_provider(load_settings(tmp_path))
    assert isinstance(provider, OpenAICompatProvider)
    assert (
        provider.name == "deepseek"
        and provider.max_retries == 7
        and provider.api_key_env == "DEEPSEEK_API_KEY"
    )
    provider.close()


def test_local_provider_is_imported_lazily(tmp_path):
    s = load_settings(tmp_path, provider="local")
    assert s.prices == Prices(0, 0, 0)
    try:
        import agent.providers.local  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ConfigError, match="not part of this build"):
            make_provider(s)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model = ", "not valid TOML"),
        ("modle = 'x'", "unknown key"),
        ("context_window = 'big'", "expected a positive integer"),
        ("context_window = true", "expected a positive integer"),
        ("[deepseek]\napi_kye = 'x'", "unknown key"),
        ("provider = 'anthropic'", "unknown provider 'anthropic'"),
        ("reserve = 2000000", "0 <= reserve < context_window"),
        ("[prices.'m']\ncache_hit = 1\ncache_miss = 2", "missing"),
        ("[prices.'m']\ncache_hit = -1\ncache_miss = 2\noutput = 3", "non-negative"),
        ("base_url = 'ftp://x'\nprovider = 'openai'", "http:// or https://"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, match):
    path = write_user(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(tmp_path)
    assert info.value.exit_code == ExitCode.USAGE
    if "reserve" not in match and "provider" not in match and "http" not in match:
        assert str(path) in str(info.value)
    assert path.read_text() == text  # bad input loses nothing


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("V4CODE_CONTEXT_WINDOW", "lots"),
        ("V4CODE_THINKING", "maybe"),
        ("V4CODE_PRICES", "1,2"),
        ("V4CODE_READ_TIMEOUT", "0"),
    ],
)
def test_bad_environment_is_a_clear_error(tmp_path, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(
        ConfigError, match=var.removeprefix("V4CODE_").lower() if var.endswith("TIMEOUT") else var
    ):
        load_settings(tmp_path)


def test_prices_are_configuration(tmp_path, monkeypatch):
    write_user(
        '[prices."deepseek-v4-flash"]\ncache_hit = 0.007\ncache_miss = 0.22\noutput = 0.66\n'
        '[prices."my-vllm-model"]\ncache_hit = 0\ncache_miss = 0\noutput = 0\n'
    )
    s = load_settings(tmp_path)
    assert (
        s.prices == Prices(0.007, 0.22, 0.66)
        and 'prices."deepseek-v4-flash"' in s.sources["prices"]
    )
    s = load_settings(tmp_path, model="my-vllm-model")
    assert s.prices == Prices(0, 0, 0) and s.prices_known
    s = load_settings(tmp_path, model="deepseek-v4-pro")
    assert s.prices == Prices(0.003625, 0.435, 0.87)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-deepseek-22222222222")
    s = load_settings(tmp_path, model="unknown-model")
    assert s.prices == Prices(0, 0, 0) and not s.prices_known
    assert any("no prices for model 'unknown-model'" in n for n in s.notes)
    monkeypatch.setenv("V4CODE_PRICES", "0.003,0.15,0.6")
    s = load_settings(tmp_path)
    assert s.prices == Prices(0.003, 0.15, 0.6) and s.sources["prices"] == "env V4CODE_PRICES"
    assert s.prices.cost(1_000_000, 400_000, 100_000) == pytest.approx(0.0012 + 0.09 + 0.06)


def test_settings_interface_kept_for_other_modules():
    s = Settings()
    assert s.default_budget == s.context_window - s.reserve
    assert s.prices.cost(1_000_000) == pytest.approx(0.14)
    assert (
        load_settings(None, model="deepseek-v4-pro", budget=5, output_format="json").model
        == "deepseek-v4-pro"
    )


def test_secret_never_shows_its_value():
    key = "sk-abcdefghijklmnop-SECRET"
    secret = Secret(key)
    shown = [
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret!r}",
        "%s" % secret,  # noqa: UP031 - the old formatting path must mask too
        str([secret]),
        str({"k": secret}),
        repr(Settings(api_key=secret)),
    ]
    assert all(key not in s for s in shown)
    assert secret.reveal() == key and secret.masked() == "…CRET"
    assert Secret("short").masked() == "****"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)


# ----------------------------------------------------------------------------- the trust rule


def test_project_config_cannot_redirect_the_key(tmp_path, monkeypatch):
    key = "sk-users-own-key-44444444444"
    monkeypatch.setenv("DEEPSEEK_API_KEY", key)
    with ScriptedServer([Turn.text("hello")]) as attacker:
        write_project(tmp_path, f'base_url = "{attacker.base_url}"\n')
        s = load_settings(tmp_path)
        assert s.provider == "deepseek" and s.base_url == attacker.base_url
        assert s.api_key is None and "may not redirect your key" in s.key_withheld
        assert not s.providers["deepseek"].usable
        with pytest.raises(ConfigError, match="may not redirect your key"):
            make_provider(s)
        # The openai provider may talk to the project's server, but without the user's key.
        monkeypatch.setenv("OPENAI_API_KEY", key)
        write_project(
            tmp_path, f'provider = "openai"\n[openai]\nbase_url = "{attacker.base_url}"\n'
        )
        s = load_settings(tmp_path)
        assert s.provider == "openai" and s.api_key is None
        provider = make_provider(s)
        assert provider.complete(USER, []).text == "hello"
        provider.close()
    assert "authorization" not in attacker.requests[0].headers
    assert key.encode() not in attacker.requests[0].raw


def test_key_goes_to_base_urls_the_user_chose(tmp_path, monkeypatch):
    key = "sk-users-own-key-55555555555"
    with ScriptedServer([Turn.text("a"), Turn.text("b"), Turn.text("c")]) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        # From the user's config.
        write_user(f'[openai]\nbase_url = "{srv.base_url}"\n')
        s = load_settings(tmp_path)
        assert s.provider == "openai" and s.api_key == Secret(key)
        make_provider(s).complete(USER, [])
        # The project names the same server the user trusts: fine.
        write_project(tmp_path, f'[openai]\nbase_url = "{srv.base_url}/"\n')
        make_provider(load_settings(tmp_path)).complete(USER, [])
        # A flag wins over a project config and is trusted.
        user_config_file().unlink()
        write_project(tmp_path, '[openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
        s = load_settings(tmp_path, base_url=srv.base_url)
        assert s.api_key == Secret(key) and s.sources["base_url"] == "flag --base-url"
        make_provider(s).complete(USER, [])
    assert [r.bearer for r in srv.requests] == [key, key, key]


def test_project_config_keys_are_ignored_with_a_note(tmp_path):
    write_project(tmp_path, '[deepseek]\napi_key = "sk-committed-666666666666"\n')
    s = load_settings(tmp_path)
    assert s.provider is None and s.api_key is None
    assert any("keys never come from a repository" in n for n in s.notes)
    assert all("sk-committed-666666666666" not in n for n in s.notes)


def test_sampling_and_local_engine_settings(tmp_path, monkeypatch):
    write_user(
        'temperature = 0.3\nseed = 7\ndevice = "cuda:1"\ndtype = "bfloat16"\nkv_cache_max_bytes = 1000\n'
    )
    monkeypatch.setenv("V4CODE_TOP_P", "0.9")
    monkeypatch.setenv("V4CODE_MIN_P", "0.05")
    s = load_settings(tmp_path)
    assert (s.temperature, s.top_p, s.min_p, s.seed) == (0.3, 0.9, 0.05, 7)
    assert (s.device, s.dtype, s.kv_cache_max_bytes) == ("cuda:1", "bfloat16", 1000)
    assert s.sources["top_p"] == "env V4CODE_TOP_P"
    monkeypatch.setenv("V4CODE_TOP_P", "1.5")
    with pytest.raises(ConfigError, match="top_p"):
        load_settings(tmp_path)


def test_configured_sampling_reaches_the_request_and_options_override(tmp_path, monkeypatch):
    write_user("temperature = 0.3\nseed = 7\n")
    with ScriptedServer([Turn.text("a"), Turn.text("b")]) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        provider = make_provider(load_settings(tmp_path))
        provider.complete(USER, [])
        provider.complete(USER, [], temperature=1.0)
        provider.close()
    assert srv.requests[0].body["temperature"] == 0.3 and srv.requests[0].body["seed"] == 7
    assert srv.requests[1].body["temperature"] == 1.0 and "top_p" not in srv.requests[1].body


def test_v4code_base_url_beats_the_generic_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://generic:8000/v1")
    monkeypatch.setenv("V4CODE_BASE_URL", "http://mine:8000/v1")
    s = load_settings(tmp_path)
    assert s.provider == "openai" and s.base_url == "http://mine:8000/v1"
    assert s.sources["base_url"] == "env V4CODE_BASE_URL"


def test_project_config_cannot_change_prices(tmp_path):
    write_project(
        tmp_path, '[prices."deepseek-v4-flash"]\ncache_hit = 0\ncache_miss = 0\noutput = 0\n'
    )
    s = load_settings(tmp_path)
    assert s.prices == DEFAULT_PRICES["deepseek-v4-flash"]
    assert any("[prices] ignored" in n for n in s.notes)
