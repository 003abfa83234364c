"""Reading and writing text files the way their authors left them.

`load_text` decodes a file and remembers its encoding, BOM and line-ending style, so an edit
can write back exactly the bytes it did not mean to change. `atomic_write` (agent.fileio,
re-exported here) replaces a file through a temporary file in the same directory and
`os.replace`, so a crash or a full disk leaves either the old file or the new one, never half
of each.
"""

from __future__ import annotations

import codecs
import difflib
from dataclasses import dataclass
from pathlib import Path

from agent.fileio import atomic_write as atomic_write  # re-exported for the tools' writers

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES = 8192


@dataclass
class TextFile:
    text: str  # decoded, line endings as in the file
    encoding: str  # codec used to decode and to write back
    bom: bytes  # b"" when the file has none
    newline: str  # dominant line ending: "\r\n" or "\n"

    @property
    def final_newline(self) -> bool:
        return self.text.endswith("\n")

    def encode(self, text: str) -> bytes:
        """Bytes for `text` in this file's encoding; UnicodeEncodeError if it cannot be."""
        return self.bom + text.encode(self.encoding)


class BinaryFileError(Exception):
    pass


def has_wide_bom(data: bytes) -> bool:
    """Whether `data` starts with a UTF-16 or UTF-32 byte-order mark (either byte order)."""
    return any(data.startswith(bom) for bom, _ in _BOMS[1:])


def is_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB mean binary, unless a UTF-16/32 BOM explains them."""
    head = data[:_SNIFF_BYTES]
    if has_wide_bom(head):
        return False
    return b"\x00" in head


def decode_bytes(data: bytes) -> TextFile:
    """Decode: BOM first, then UTF-8, then cp1252 (common for legacy Windows text), then
    latin-1 (never fails, and round-trips every byte)."""
    if is_binary(data):
        raise BinaryFileError("binary")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data[len(bom) :].decode(encoding, errors="replace")
            return TextFile(text, encoding, bom, detect_newline(text))
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return TextFile(text, encoding, b"", detect_newline(text))
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def load_text(path: Path) -> TextFile:
    return decode_bytes(path.read_bytes())


def detect_newline(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf * 2 >= text.count("\n") else "\n"


def unified_diff(rel: str, before: str | None, after: str) -> str:
    """A git-style unified diff of one file (`before=None` for a new file)."""
    old_lines = [] if before is None else _diff_lines(before)
    new_lines = _diff_lines(after)
    diff = difflib.unified_diff(
        old_lines,
        new_lines,
        fromfile="/dev/null" if before is None else f"a/{rel}",
        tofile=f"b/{rel}",
        n=3,
    )
    return "".join(diff)


def _diff_lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
        return [line + "\n" for line in lines]
    # Mark a missing final newline the way git does, so the diff applies with `git apply`.
    out = [line + "\n" for line in lines]
    out[-1] = out[-1][:-1] + "\n\\ No newline at end of file\n"
    return out
