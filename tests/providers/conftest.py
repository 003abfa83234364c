"""Fixtures for the provider tests: a client pointed at a scripted server, sleeps recorded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.config import Prices, Secret
from agent.providers.openai_compat import OpenAICompatProvider
from tests.support.scripted_server import ScriptedServer


class Sleeps(list):
    """Records the delays the retry loop asked for instead of waiting them out."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client_for(sleeps: Sleeps) -> Iterator[Any]:
    made: list[OpenAICompatProvider] = []

    def factory(srv: ScriptedServer, **kw: Any) -> OpenAICompatProvider:
        kw.setdefault("name", "deepseek")
        kw.setdefault("model", "deepseek-v4-flash")
        kw.setdefault("api_key", Secret(srv.api_key))
        kw.setdefault("api_key_env", "DEEPSEEK_API_KEY")
        kw.setdefault("prices", Prices(0.0028, 0.14, 0.28))
        kw.setdefault("read_timeout", 5.0)
        kw.setdefault("sleep", sleeps)
        client = OpenAICompatProvider(base_url=srv.base_url, **kw)
        made.append(client)
        return client

    yield factory
    for c in made:
        c.close()


class RecordingSink:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.retries: list[str] = []

    def on_text(self, delta: str) -> None:
        self.text.append(delta)

    def on_reasoning(self, delta: str) -> None:
        self.reasoning.append(delta)

    def on_retry(self, message: str) -> None:
        self.retries.append(message)
