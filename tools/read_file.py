"""read_file: numbered lines of a text file, paged when the file is large."""

from __future__ import annotations

from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.paths import require_regular_file, resolve_repo_path
from tools.repo import not_found_message, secret_reason
from tools.textfile import BinaryFileError, decode_bytes

PAGE_LINES = 1000  # a page: at most this many lines ...
PAGE_CHARS = 60_000  # ... and about this many characters
MAX_LINE_CHARS = 2_000  # longer lines (minified code, data) are cut
MAX_FILE_BYTES = 50 * 1024 * 1024


def number_lines(lines: list[str], first: int) -> str:
    width = max(6, len(str(first + len(lines))))
    return "\n".join(f"{n:>{width}}\t{line}" for n, line in enumerate(lines, start=first))


class ReadFile(Tool):
    name = "read_file"
    description = (
        "Read a text file of the repository with numbered lines (the number and a tab precede "
        "each line; they are not part of the file). Large files come in pages: give start_line "
        "and end_line (1-based, inclusive) to read a range."
    )
    parameters = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the repository root."},
            "start_line": {"type": "integer", "minimum": 1, "description": "First line (1-based)."},
            "end_line": {"type": "integer", "minimum": 1, "description": "Last line (inclusive)."},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        target = resolve_repo_path(self.ctx.root, args["path"])
        if target.abs.is_dir():
            raise ToolError(f"{target.rel} is a directory; use list_files to see its files")
        if not target.abs.exists():
            raise ToolError(not_found_message(self.ctx.root, target.rel))
        require_regular_file(target)
        size = target.abs.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ToolError(
                f"{target.rel} is too large to read ({size:,} bytes); use search to find the "
                "lines you need"
            )
        raw = target.abs.read_bytes()
        try:
            text_file = decode_bytes(raw)
        except BinaryFileError:
            text_file = None
        secret = secret_reason(target.rel, raw, text_file.text if text_file else None)
        if secret is not None:
            raise ToolError(
                f"{target.rel} looks like it holds secrets ({secret}); its content is not shown "
                "to the model. Ask the user for the non-secret values you need"
            )
        if text_file is None:
            raise ToolError(
                f"{target.rel} is a binary file ({size:,} bytes); it cannot be shown as text"
            )

        lines = text_file.text.replace("\r\n", "\n").split("\n")
        if lines[-1] == "":
            lines.pop()
        total = len(lines)
        notes = []
        if text_file.encoding not in ("utf-8",) or text_file.bom:
            notes.append(f"encoding {text_file.encoding}{' with BOM' if text_file.bom else ''}")
        if text_file.newline == "\r\n":
            notes.append("CRLF line endings")
        if total and not text_file.final_newline:
            notes.append("no newline at end of file")
        header = f"{target.rel} ({total} lines{'; ' + '; '.join(notes) if notes else ''})"
        if total == 0:
            return Observation(
                f"{header}\n(the file is empty)", data={"path": target.rel, "lines": 0}
            )

        start = args.get("start_line") or 1
        if start > total:
            raise ToolError(f"start_line {start} is past the end of {target.rel} ({total} lines)")
        requested_end = args.get("end_line")
        if requested_end is not None and requested_end < start:
            raise ToolError(f"end_line {requested_end} is before start_line {start}")
        end = min(requested_end or total, total, start + PAGE_LINES - 1)

        shown: list[str] = []
        chars = 0
        for line in lines[start - 1 : end]:
            if len(line) > MAX_LINE_CHARS:
                line = line[:MAX_LINE_CHARS] + f" [... line cut, {len(line):,} characters]"
            if shown and chars + len(line) > PAGE_CHARS:
                break
            shown.append(line)
            chars += len(line) + 1
        last = start + len(shown) - 1
        body = number_lines(shown, start)
        footer = ""
        wanted_end = min(requested_end or total, total)
        if last < wanted_end:
            footer = (
                f"\n[showing lines {start}-{last} of {total}; call read_file again with "
                f"start_line={last + 1} to continue]"
            )
        elif start > 1 or last < total:
            footer = f"\n[showing lines {start}-{last} of {total}]"
        data = {"path": target.rel, "lines": total, "start_line": start, "end_line": last}
        return Observation(f"{header}\n{body}{footer}", data=data)
