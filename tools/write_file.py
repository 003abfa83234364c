"""write_file: create a file or overwrite it whole, atomically."""

from __future__ import annotations

import codecs
from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.paths import require_regular_file, resolve_repo_path
from tools.textfile import BinaryFileError, TextFile, atomic_write, load_text, unified_diff

MAX_CONTENT_CHARS = 10 * 1024 * 1024


class WriteFile(Tool):
    name = "write_file"
    read_only = False
    description = (
        "Create a file, or overwrite an existing one with new content (prefer edit_file for "
        "changes to part of a file). Parent directories are created as needed."
    )
    parameters = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the repository root."},
            "content": {"type": "string", "description": "The complete new content of the file."},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        target = resolve_repo_path(self.ctx.root, args["path"], write=True)
        content: str = args["content"]
        if len(content) > MAX_CONTENT_CHARS:
            raise ToolError(f"content is too large ({len(content):,} characters)")
        if target.abs.is_dir():
            raise ToolError(f"{target.rel} is a directory; give a file path")
        before: str | None = None
        notes: list[str] = []
        existing: TextFile | None = None
        if target.abs.exists():
            require_regular_file(target)
            try:
                existing = load_text(target.abs)
            except BinaryFileError:
                before = "(binary file)\n"
                notes.append("it replaced a binary file")
        if existing is None:
            data = content.encode("utf-8")
        else:
            before = existing.text
            # An existing CRLF file stays CRLF: the model writes "\n".
            if existing.newline == "\r\n" and "\r\n" not in content:
                content = content.replace("\n", "\r\n")
            try:
                data = existing.encode(content)
            except UnicodeEncodeError:
                bom = codecs.BOM_UTF8 if existing.bom == codecs.BOM_UTF8 else b""
                data = bom + content.encode("utf-8")
                notes.append(f"written as UTF-8: {existing.encoding} cannot hold the content")
        try:
            target.abs.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolError(
                f"cannot create the directory for {target.rel}: {exc.strerror}"
            ) from None
        try:
            atomic_write(target.abs, data)
        except OSError as exc:
            raise ToolError(f"cannot write {target.rel}: {exc.strerror}") from None
        created = before is None
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        verb = "Created" if created else "Overwrote"
        text = f"{verb} {target.rel} ({lines} lines, {len(data):,} bytes)"
        text += f"; {'; '.join(notes)}." if notes else "."
        return Observation(
            text,
            data={
                "path": target.rel,
                "changed_paths": [target.rel],
                "created": created,
                "diff": unified_diff(target.rel, before, content),
            },
        )
