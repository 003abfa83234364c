"""edit_file: replace a snippet of a file, atomically, keeping the file's encoding and form."""

from __future__ import annotations

from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.edit_match import apply_edit
from tools.paths import require_regular_file, resolve_repo_path
from tools.read_file import number_lines
from tools.repo import not_found_message, secret_reason
from tools.textfile import BinaryFileError, TextFile, atomic_write, decode_bytes, unified_diff

CONTEXT_LINES = 3
MAX_SNIPPET_LINES = 40


class EditFile(Tool):
    name = "edit_file"
    read_only = False
    description = (
        "Replace old_string with new_string in a file. old_string must match the file's text "
        "exactly (if only indentation or trailing spaces differ, the match is still found and "
        "new_string is re-indented to fit) and must be unique unless replace_all is true; "
        "include a few surrounding lines to make it unique. Do not include read_file's "
        "line-number prefixes."
    )
    parameters = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the repository root."},
            "old_string": {"type": "string", "description": "The exact text to replace."},
            "new_string": {"type": "string", "description": "The replacement text."},
            "replace_all": {
                "type": "boolean",
                "description": "Replace every occurrence (default false: it must be unique).",
            },
        },
        "required": ["path", "old_string", "new_string"],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        target = resolve_repo_path(self.ctx.root, args["path"], write=True)
        if target.abs.is_dir():
            raise ToolError(f"{target.rel} is a directory, not a file")
        if not target.abs.exists():
            raise ToolError(
                not_found_message(self.ctx.root, target.rel)
                + " (to create a new file, use write_file)"
            )
        require_regular_file(target)
        raw = target.abs.read_bytes()
        try:
            original: TextFile | None = decode_bytes(raw)
        except BinaryFileError:
            original = None
        secret = secret_reason(target.rel, raw, original.text if original else None)
        if secret is not None:
            raise ToolError(
                f"{target.rel} looks like it holds secrets ({secret}); edit_file does not touch it "
                "(its content would be shown to the model); use write_file to replace it whole"
            )
        if original is None:
            raise ToolError(f"{target.rel} is a binary file; edit_file only edits text")

        outcome = apply_edit(
            original.text,
            args["old_string"],
            args["new_string"],
            replace_all=bool(args.get("replace_all")),
            path=target.rel,
        )
        new_text = _keep_final_newline(original, outcome.text)
        if new_text == original.text:
            raise ToolError("the edit would not change the file")
        try:
            data = original.encode(new_text)
        except UnicodeEncodeError as exc:
            bad = new_text[exc.start : exc.end]
            raise ToolError(
                f"{target.rel} is encoded as {original.encoding}, which cannot hold {bad!r}; "
                "use characters that encoding supports (or an escape sequence)"
            ) from None
        try:
            atomic_write(target.abs, data)
        except OSError as exc:
            raise ToolError(
                f"cannot write {target.rel}: {exc.strerror}; the file is unchanged"
            ) from None

        diff = unified_diff(target.rel, original.text, new_text)
        how = (
            ""
            if outcome.mode == "exact"
            else " (matched ignoring indentation/trailing whitespace; new_string was re-indented "
            "to the file's indentation)"
        )
        noun = "occurrence" if outcome.count == 1 else "occurrences"
        at = ", ".join(str(n) for n in outcome.lines[:10])
        text = f"Edited {target.rel}: replaced {outcome.count} {noun} at line {at}{how}."
        text += "\n" + _snippet(new_text, outcome.lines[0], outcome.new_line_counts[0])
        return Observation(
            text,
            data={
                "path": target.rel,
                "changed_paths": [target.rel],
                "diff": diff,
                "replacements": outcome.count,
                "match": outcome.mode,
            },
        )


def _keep_final_newline(original: TextFile, text: str) -> str:
    """The file keeps its final newline (or its lack of one) whatever new_string ended with."""
    if not text:
        return text
    if original.final_newline and not text.endswith("\n"):
        return text + original.newline
    if not original.final_newline and original.text and text.endswith("\n"):
        return text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _snippet(text: str, first: int, span: int) -> str:
    """The edited region with a little context, numbered, so the model can check the result."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    start = max(1, first - CONTEXT_LINES)
    stop = min(len(lines), first + max(span, 1) - 1 + CONTEXT_LINES)
    if stop - start + 1 > MAX_SNIPPET_LINES:
        stop = start + MAX_SNIPPET_LINES - 1
    return number_lines(lines[start - 1 : stop], start)
