"""Glob patterns for `list_files(pattern=…)` and `search(glob=…)`.

Semantics follow ripgrep's `-g` and what models expect: a pattern without `/` matches the file
name at any depth (`*.py`, `test_*`); one with `/` matches the whole relative path, where `*`
and `?` stay within one directory level and `**` spans levels (`src/**/*.ts`). `{a,b}`
alternatives are expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from tools.base import ToolError


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Return a predicate over relative posix paths."""
    alternatives = _expand_braces(pattern.strip())
    try:
        regexes = [re.compile(_translate(p.lstrip("/"))) for p in alternatives if p]
    except re.error as exc:  # e.g. a reversed range: [z-a]
        raise ToolError(
            f"invalid glob pattern {pattern!r} ({exc}); e.g. '*.py' or 'src/**'"
        ) from None
    on_name = all("/" not in p.lstrip("/") for p in alternatives)

    def match(rel: str) -> bool:
        subject = rel.rsplit("/", 1)[-1] if on_name else rel
        return any(r.fullmatch(subject) for r in regexes)

    return match


@lru_cache(maxsize=64)
def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _expand_braces(pattern: str) -> list[str]:
    start = pattern.find("{")
    end = pattern.find("}", start + 1)
    if start == -1 or end == -1:
        return [pattern]
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    return [alt for option in body.split(",") for alt in _expand_braces(head + option + tail)]
