"""Prompt templates live here as Markdown files; code loads them by name."""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def load(name: str) -> str:
    """The text of prompts/<name>.md."""
    return resources.files(__name__).joinpath(f"{name}.md").read_text(encoding="utf-8")


def render(name: str, **values: object) -> str:
    """prompts/<name>.md with $placeholders substituted (string.Template; `$$` is a literal $)."""
    return Template(load(name)).substitute({k: str(v) for k, v in values.items()})
