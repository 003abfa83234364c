"""search: grep over the repository's visible files; `path:line: text` results, capped.

Speed comes from bytes-level work: a literal pattern is first looked for with `bytes.find` on
the raw file (no decoding, no line splitting), so only files that contain it are decoded and
split. Regular expressions run over the decoded text of each file at once (`re.MULTILINE`),
never line by line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.globs import compile_glob
from tools.paths import resolve_repo_path
from tools.repo import not_found_message, secret_reason, under, visible_files
from tools.textfile import decode_bytes, has_wide_bom, is_binary

MAX_RESULTS = 100  # matching lines shown in total
MAX_PER_FILE = 20  # ... and per file, so one noisy file cannot hide the others
MAX_LINE_CHARS = 300


@dataclass
class SearchResult:
    lines: list[str] = field(default_factory=list)  # "path:line: text", in path order
    matched_lines: int = 0  # all matching lines, shown or not
    matched_files: int = 0
    cut_by_file: dict[str, int] = field(default_factory=dict)  # path -> lines not shown
    files_searched: int = 0


def search_files(
    root: Path,
    paths: list[str],
    pattern: str,
    *,
    regex: bool = False,
    max_results: int = MAX_RESULTS,
    max_per_file: int = MAX_PER_FILE,
) -> SearchResult:
    """Search `paths` (relative to `root`); raises re.error for a bad regular expression."""
    compiled = re.compile(pattern if regex else re.escape(pattern), re.MULTILINE)
    needle = None if regex else pattern.encode("utf-8")
    result = SearchResult()
    for rel in paths:
        try:
            data = (root / rel).read_bytes()
        except OSError:
            continue
        result.files_searched += 1
        if needle is not None and needle not in data and not _may_hold_otherwise(data, pattern):
            continue
        if is_binary(data):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = decode_bytes(data).text  # not binary (checked above), so it always decodes
        hits = _matching_lines(compiled, text)
        if not hits or secret_reason(rel, data, text) is not None:  # scanned only when it matters
            continue
        result.matched_files += 1
        result.matched_lines += len(hits)
        room = min(max_per_file, max_results - len(result.lines))
        for line_no, line, column in hits[: max(room, 0)]:
            result.lines.append(f"{rel}:{line_no}: {_clip(line, column)}")
        if len(hits) > max(room, 0):
            result.cut_by_file[rel] = len(hits) - max(room, 0)
    return result


def _may_hold_otherwise(data: bytes, pattern: str) -> bool:
    """Whether a file without the pattern's UTF-8 bytes could still contain it once decoded:
    UTF-16/32 files, and legacy 8-bit files when the pattern is not plain ASCII."""
    if has_wide_bom(data):
        return True
    if pattern.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _matching_lines(compiled: re.Pattern[str], text: str) -> list[tuple[int, str, int]]:
    """(line number, line text, match column) of every line with a match."""
    hits: list[tuple[int, str, int]] = []
    line_no, counted_to = 1, 0
    pos, end = 0, len(text)
    while pos <= end:
        match = compiled.search(text, pos)
        if match is None:
            break
        start = match.start()
        line_no += text.count("\n", counted_to, start)
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        if line_end == -1:
            line_end = end
        if start == end and line_start == end and hits and start > 0:
            break  # an empty match after the final newline is not a line
        hits.append((line_no, text[line_start:line_end].rstrip("\r"), start - line_start))
        counted_to = start
        pos = line_end + 1
    return hits


def _clip(line: str, column: int) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    begin = max(0, min(column - MAX_LINE_CHARS // 3, len(line) - MAX_LINE_CHARS))
    clipped = line[begin : begin + MAX_LINE_CHARS]
    return ("…" if begin else "") + clipped + ("…" if begin + MAX_LINE_CHARS < len(line) else "")


class Search(Tool):
    name = "search"
    description = (
        "Search the repository's files for a pattern (literal text by default; regex=true for a "
        "Python regular expression). Returns matching lines as 'path:line: text', capped, with "
        "a count of what was not shown. Narrow with path (a directory or file) and glob "
        "(e.g. '*.py')."
    )
    parameters = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "Text (or regex) to look for."},
            "path": {
                "type": "string",
                "description": "Directory or file to search (default: all).",
            },
            "glob": {
                "type": "string",
                "description": "Only files matching this glob, e.g. '*.py'.",
            },
            "regex": {"type": "boolean", "description": "Treat pattern as a regular expression."},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        pattern = args["pattern"]
        if pattern == "":
            raise ToolError("pattern is empty; give the text to search for")
        target = resolve_repo_path(self.ctx.root, args.get("path") or ".", allow_root=True)
        if not target.abs.exists():
            raise ToolError(not_found_message(self.ctx.root, target.rel, "path"))
        paths = under(visible_files(self.ctx.root).paths(), target.rel)
        glob = args.get("glob")
        if glob:
            match = compile_glob(glob)
            paths = [p for p in paths if match(p)]
        regex = bool(args.get("regex"))
        try:
            found = search_files(self.ctx.root, paths, pattern, regex=regex)
        except re.error as exc:
            raise ToolError(
                f"invalid regular expression ({exc}); fix it, or pass regex=false to search for "
                "the literal text"
            ) from None
        data = {
            "matched_lines": found.matched_lines,
            "matched_files": found.matched_files,
            "shown": len(found.lines),
            "files_searched": found.files_searched,
        }
        scope = "" if target.is_root else f" in {target.rel}"
        scope += f" (files matching '{glob}')" if glob else ""
        if not found.lines:
            hint = (
                ""
                if regex
                else "; the search is literal and case-sensitive (regex=true for patterns)"
            )
            return Observation(
                f"No matches for {pattern!r}{scope} ({found.files_searched} files searched{hint}).",
                data=data,
            )
        header = f"{found.matched_lines} matching lines in {found.matched_files} files{scope}:"
        text = header + "\n" + "\n".join(found.lines)
        cut = found.matched_lines - len(found.lines)
        if cut:
            worst = sorted(found.cut_by_file.items(), key=lambda kv: -kv[1])[:5]
            where = ", ".join(f"{path} ({n})" for path, n in worst)
            more = len(found.cut_by_file) - len(worst)
            where += f" and {more} more files" if more > 0 else ""
            text += (
                f"\n[... {cut} more matching lines not shown, in {where}; narrow the search with "
                "path=, glob= or a more specific pattern]"
            )
        return Observation(text, data=data)
