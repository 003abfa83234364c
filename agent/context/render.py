"""The packed text: a header with the file tree, then one block per file, in XML or Markdown.

Token counts of the pieces add up exactly to the count of the whole text because no
pre-token of the V4 tokenizer can span a point where a "\\n" is followed by a non-whitespace
character. Every piece therefore ends with "\\n" and every piece after the first starts with a
non-whitespace character ('<', '#' or '`'); file contents are normalised to end with "\\n".
Where a content starts with whitespace, the packer counts the delimiter together with the
content's first line(s) up to the first safe point (see `safe_split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.context.rules import language as guess_language

FORMATS = ("xml", "markdown")
_BACKTICKS = re.compile(r"`{3,}")


def normalize(content: str) -> str:
    """Content as packed: ends with exactly the newline it had, or one added."""
    return content if content.endswith("\n") or not content else content + "\n"


def safe_split(text: str) -> int:
    """The first index i where text[i-1] == '\\n' and text[i] is not whitespace (0 when text
    starts with a non-whitespace character; len(text) when there is no such point)."""
    if not text or not text[0].isspace():
        return 0
    i = text.find("\n")
    n = len(text)
    while 0 <= i < n - 1:
        if not text[i + 1].isspace():
            return i + 1
        i = text.find("\n", i + 1)
    return n


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def display_path(path: str) -> str:
    """A path as shown in the text: control characters (a newline in a name) escaped."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def file_tree(paths: Sequence[str]) -> str:
    """Indented tree of sorted relative paths, one entry per line, directories with '/'."""
    lines: list[str] = []
    opened: list[str] = []
    for path in sorted(paths):
        parts = [display_path(p) for p in path.split("/")]
        dirs = parts[:-1]
        common = 0
        while common < len(opened) and common < len(dirs) and opened[common] == dirs[common]:
            common += 1
        del opened[common:]
        for depth in range(common, len(dirs)):
            lines.append("  " * depth + dirs[depth] + "/")
            opened.append(dirs[depth])
        lines.append("  " * len(dirs) + parts[-1])
    return "\n".join(lines) + ("\n" if lines else "")


class Renderer:
    """Delimiters of one format. Every method returns text ending with a newline."""

    fmt = "xml"

    def header(self, name: str, paths: Sequence[str]) -> str:
        return f'<repository name="{_attr(display_path(name))}">\n<file_tree>\n{file_tree(paths)}</file_tree>\n'

    def open(self, path: str, language: str, mode: str, content: str) -> str:
        extra = "" if mode == "full" else f' mode="{mode}"'
        return f'<file path="{_attr(display_path(path))}" language="{language}"{extra}>\n'

    def close(self, content: str) -> str:
        return "</file>\n"

    def listed(self, path: str, size: int) -> str:
        return f'<file path="{_attr(display_path(path))}" mode="listed" bytes="{size}"/>\n'

    def footer(self, untracked: Sequence[str] = ()) -> str:
        """The end of the pack. Untracked files are listed here rather than in the header's
        tree, so creating a file changes only the end of the pack (the cached prefix stays)."""
        if not untracked:
            return "</repository>\n"
        return f"<untracked_files>\n{file_tree(untracked)}</untracked_files>\n</repository>\n"


class MarkdownRenderer(Renderer):
    fmt = "markdown"

    @staticmethod
    def fence(content: str) -> str:
        longest = max((len(m) for m in _BACKTICKS.findall(content)), default=2)
        return "`" * max(3, longest + 1)

    def header(self, name: str, paths: Sequence[str]) -> str:
        tree = file_tree(paths)
        fence = self.fence(tree)
        return (
            f"# Repository {display_path(name)}\n\n## File tree\n\n{fence}text\n{tree}{fence}\n\n"
        )

    def open(self, path: str, language: str, mode: str, content: str) -> str:
        title = display_path(path) if mode == "full" else f"{display_path(path)} ({mode})"
        return f"## {title}\n\n{self.fence(content)}{language}\n"

    def close(self, content: str) -> str:
        return f"{self.fence(content)}\n\n"

    def listed(self, path: str, size: int) -> str:
        return f"## {display_path(path)} (listed, {size} bytes)\n\n"

    def footer(self, untracked: Sequence[str] = ()) -> str:
        if not untracked:
            return ""
        tree = file_tree(untracked)
        fence = self.fence(tree)
        return f"## Untracked files\n\n{fence}text\n{tree}{fence}\n\n"


def renderer(fmt: str) -> Renderer:
    if fmt == "xml":
        return Renderer()
    if fmt in ("markdown", "md"):
        return MarkdownRenderer()
    raise ValueError(f"unknown pack format {fmt!r} (expected one of {', '.join(FORMATS)})")


def render_file(
    path: str, content: str, fmt: str = "xml", *, language: str | None = None, mode: str = "full"
) -> str:
    """One file block with the pack's delimiters (for prompts that show a file outside the pack)."""
    r = renderer(fmt)
    body = normalize(content)
    return r.open(path, language or guess_language(path), mode, body) + body + r.close(body)
