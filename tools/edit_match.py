"""Finding `old_string` in a file and replacing it with `new_string`.

1. Exact match (also with the model's "\\n" turned into the file's "\\r\\n").
2. Whitespace-tolerant match, line by line, ignoring indentation and trailing blanks, and
   blank lines around the snippet. `new_string` is then re-indented so that each of its lines
   sits where the model meant it relative to the matched code, in the file's own indentation
   (tabs stay tabs, four spaces stay four spaces).
3. Otherwise: an error naming the closest candidate lines, or, when the snippet occurs more
   than once, how many times and where.

Everything works on the decoded text with the file's own line endings left in place, so lines
the edit does not touch keep their bytes (mixed line endings included).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from math import gcd

from tools.base import ToolError
from tools.textfile import detect_newline

_LINE_NUMBER_PREFIX = re.compile(r"^ *\d+\t")  # copied from read_file output by mistake
MAX_CANDIDATES = 3


@dataclass
class EditOutcome:
    text: str  # the new file content
    count: int  # replacements made
    mode: str  # "exact" | "whitespace"
    lines: list[int]  # 1-based line (in the new text) where each replacement starts
    new_line_counts: list[int]  # how many lines each replacement spans in the new text


def apply_edit(
    text: str, old: str, new: str, *, replace_all: bool = False, path: str = "the file"
) -> EditOutcome:
    if old == "":
        raise ToolError(
            "old_string is empty; give the exact text to replace (use write_file to create or "
            "overwrite a whole file)"
        )
    old, new = old.replace("\r\n", "\n"), new.replace("\r\n", "\n")
    if old == new:
        raise ToolError("old_string and new_string are identical; there is nothing to change")
    outcome = _exact(text, old, new, replace_all, path)
    if outcome is None:
        outcome = _tolerant(text, old, new, replace_all, path)
    if outcome is None:
        raise ToolError(_not_found_message(text, old, path))
    return outcome


# -- 1. exact -------------------------------------------------------------------------------


def _exact(text: str, old: str, new: str, replace_all: bool, path: str) -> EditOutcome | None:
    variants = [(old, new)]
    if "\r\n" in text and "\n" in old:
        crlf = (old.replace("\n", "\r\n"), new.replace("\n", "\r\n"))
        # Try the file's own line ending first: a CRLF file holds the CRLF form.
        variants = [crlf, (old, new)] if detect_newline(text) == "\r\n" else [(old, new), crlf]
    for o, n in variants:
        starts = _find_all(text, o)
        if not starts:
            continue
        if len(starts) > 1 and not replace_all:
            lines = [text.count("\n", 0, s) + 1 for s in starts]
            raise ToolError(_ambiguous_message(len(starts), lines, path))
        # A one-line old_string has no line ending to copy: new lines take the ending of the
        # line they land in, so a CRLF file stays CRLF.
        single_line = "\n" not in o and "\r" not in n
        pieces, lines, cursor, shift = [], [], 0, 0
        for s in starts:
            pieces.append(text[cursor:s])
            pieces.append(n.replace("\n", "\r\n") if single_line and _crlf_at(text, s, o) else n)
            # Line of this replacement in the new text: lines before it, adjusted by earlier ones.
            lines.append(text.count("\n", 0, s) + 1 + shift)
            shift += n.count("\n") - o.count("\n")
            cursor = s + len(o)
        pieces.append(text[cursor:])
        spans = [n.count("\n") + 1] * len(starts)
        return EditOutcome("".join(pieces), len(starts), "exact", lines, spans)
    return None


def _crlf_at(text: str, start: int, old: str) -> bool:
    """Whether the line holding text[start:start+len(old)] ends with CRLF (for the last line,
    which has no ending, whether the file is mostly CRLF)."""
    end = text.find("\n", start + len(old))
    if end == -1:
        return detect_newline(text) == "\r\n"
    return end > 0 and text[end - 1] == "\r"


def _find_all(text: str, needle: str) -> list[int]:
    starts, pos = [], text.find(needle)
    while pos != -1:
        starts.append(pos)
        pos = text.find(needle, pos + len(needle))
    return starts


# -- 2. whitespace-tolerant -------------------------------------------------------------------


def _tolerant(text: str, old: str, new: str, replace_all: bool, path: str) -> EditOutcome | None:
    old_lines, new_lines = _trim_blank_edges(old.split("\n"), new.split("\n"))
    if not old_lines:
        raise ToolError("old_string contains only whitespace; give the text to replace")
    if all(_LINE_NUMBER_PREFIX.match(line) for line in old_lines if line.strip()):
        old_lines = [_LINE_NUMBER_PREFIX.sub("", line) for line in old_lines]
        new_lines = [_LINE_NUMBER_PREFIX.sub("", line) for line in new_lines]
    file_lines = text.split("\n")
    keys = [line.strip() for line in file_lines]
    want = [line.strip() for line in old_lines]
    k = len(want)
    starts = [i for i in range(len(keys) - k + 1) if keys[i] == want[0] and keys[i : i + k] == want]
    if not starts:
        return None
    starts = _non_overlapping(starts, k)
    if len(starts) > 1 and not replace_all:
        # Prefer the occurrences whose indentation has the same shape as the snippet's.
        shaped = [s for s in starts if _same_shape(old_lines, file_lines[s : s + k])]
        if len(shaped) == 1:
            starts = shaped
        else:
            raise ToolError(_ambiguous_message(len(starts), [s + 1 for s in starts], path))
    if not new.strip():
        new_lines = []
    unit_file = _indent_unit(file_lines)
    lines, spans, shift = [], [], 0
    for s in reversed(starts):
        region = file_lines[s : s + k]
        replacement = _reindent(new_lines, old_lines, region, unit_file)
        cr = region[0].endswith("\r")
        at_eof = s + k == len(file_lines)
        if cr:
            replacement = [
                line if (at_eof and j == len(replacement) - 1) else line + "\r"
                for j, line in enumerate(replacement)
            ]
        file_lines[s : s + k] = replacement
    for s in starts:  # line numbers in the new text, first to last
        lines.append(s + 1 + shift)
        shift += len(new_lines) - k
        spans.append(len(new_lines))
    return EditOutcome("\n".join(file_lines), len(starts), "whitespace", lines, spans)


def _trim_blank_edges(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    lead = _count_blank(old)
    trail = _count_blank(reversed(old)) if lead < len(old) else 0
    old = old[lead : len(old) - trail]
    new_lead = min(lead, _count_blank(new))
    new = new[new_lead:]
    new_trail = min(trail, _count_blank(reversed(new)))
    return old, new[: len(new) - new_trail]


def _count_blank(lines) -> int:
    n = 0
    for line in lines:
        if line.strip():
            break
        n += 1
    return n


def _non_overlapping(starts: list[int], k: int) -> list[int]:
    kept: list[int] = []
    for s in starts:
        if not kept or s >= kept[-1] + k:
            kept.append(s)
    return kept


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _columns(indent: str, tab: int = 4) -> int:
    col = 0
    for ch in indent:
        col = (col // tab + 1) * tab if ch == "\t" else col + 1
    return col


def _same_shape(old_lines: list[str], region: list[str]) -> bool:
    pairs = [(o, f) for o, f in zip(old_lines, region, strict=True) if o.strip()]
    base_o, base_f = _columns(_indent(pairs[0][0])), _columns(_indent(pairs[0][1]))
    return all(_columns(_indent(o)) - base_o == _columns(_indent(f)) - base_f for o, f in pairs)


def _indent_unit(lines: list[str]) -> str:
    """The file's indentation step: a tab, or N spaces (the gcd of its indentation widths)."""
    tabs = spaces = 0
    widths = set()
    for line in lines:
        if not line.strip():
            continue
        ind = _indent(line)
        if ind.startswith("\t"):
            tabs += 1
        elif ind:
            spaces += 1
            widths.add(len(ind))
    if tabs > spaces:
        return "\t"
    step = 0
    for w in widths:
        step = gcd(step, w)
    return " " * (step if 2 <= step <= 8 else 4)


def _reindent(
    new_lines: list[str], old_lines: list[str], region: list[str], unit_file: str
) -> list[str]:
    """Move `new_lines` from the model's indentation to the file's.

    Each new line is anchored to an old line (the one it replaces or keeps, or the one above an
    inserted line); it keeps its indentation relative to that anchor, and the anchor's matched
    file line gives the absolute indentation, in the file's own style."""
    pairs = [(o, f) for o, f in zip(old_lines, region, strict=True) if o.strip()]
    if all(_indent(o) == _indent(f) for o, f in pairs):
        return [line.rstrip("\r") for line in new_lines]
    anchors = _anchor_lines(old_lines, new_lines)
    step = _model_step(old_lines + new_lines)
    out = []
    for line, anchor in zip(new_lines, anchors, strict=True):
        if not line.strip():
            out.append("")
            continue
        old, file_line = old_lines[anchor], region[anchor]
        ind = _indent(line)
        delta = _columns(ind) - _columns(_indent(old))
        out.append(_shift(_indent(file_line), delta, step, unit_file) + line[len(ind) :])
    return out


def _anchor_lines(old_lines: list[str], new_lines: list[str]) -> list[int]:
    """For each new line, the index of a non-blank old line to measure its indentation from."""
    keyed_old = [line.strip() for line in old_lines]
    matcher = difflib.SequenceMatcher(
        None, keyed_old, [line.strip() for line in new_lines], autojunk=False
    )
    anchors: list[int | None] = [None] * len(new_lines)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace") and i2 > i1:
            for k in range(j2 - j1):
                anchors[j1 + k] = min(i1 + k, i2 - 1)
        elif tag == "insert" and i1 > 0:
            for k in range(j1, j2):
                anchors[k] = i1 - 1  # an inserted line is measured from the line above it
    first = next(i for i, key in enumerate(keyed_old) if key)
    result, previous = [], first
    for anchor in anchors:
        if anchor is None or not keyed_old[anchor]:
            # Fall back to the nearest non-blank old line above (or the first one).
            candidates = [
                i
                for i in range(0, (anchor if anchor is not None else previous) + 1)
                if keyed_old[i]
            ]
            anchor = candidates[-1] if candidates else first
        result.append(anchor)
        previous = anchor
    return result


def _shift(base: str, delta_columns: int, model_step: int, unit_file: str) -> str:
    """`base` indentation moved by `delta_columns` of the model's indentation."""
    if delta_columns == 0:
        return base
    levels, extra = divmod(delta_columns, model_step)
    if unit_file == "\t":
        depth = base.count("\t") + levels
        return "\t" * max(depth, 0) + " " * (extra + base.count(" "))
    width = _columns(base) + levels * len(unit_file) + extra
    return " " * max(width, 0)


def _model_step(lines: list[str]) -> int:
    step = 0
    for line in lines:
        if line.strip():
            step = gcd(step, _columns(_indent(line)))
    return step if 1 <= step <= 8 else 4


# -- 3. errors ------------------------------------------------------------------------------


def _skip_blank(keys: list[str], start: int) -> int:
    while start < len(keys) - 1 and not keys[start]:
        start += 1
    return start


def _ambiguous_message(count: int, lines: list[int], path: str) -> str:
    where = ", ".join(str(n) for n in lines[:20]) + (", …" if len(lines) > 20 else "")
    return (
        f"old_string occurs {count} times in {path} (starting at lines {where}); include more "
        "surrounding lines to make it unique, or pass replace_all=true to replace every occurrence"
    )


def _not_found_message(text: str, old: str, path: str) -> str:
    message = (
        f"old_string was not found in {path}, not even ignoring indentation and trailing "
        "whitespace."
    )
    candidates = closest_candidates(text, old)
    if not candidates:
        return (
            message
            + " No similar lines either: read the file with read_file and copy the exact text."
        )
    parts = [message, "The closest candidates are:"]
    for first, last, score, snippet in candidates:
        parts.append(f"--- lines {first}-{last} ({score:.0%} similar):\n{snippet}")
    parts.append(
        "Copy the exact text (without the line-number prefixes) into old_string, or read_file "
        "that range first."
    )
    return "\n".join(parts)


def closest_candidates(
    text: str, old: str, limit: int = MAX_CANDIDATES
) -> list[tuple[int, int, float, str]]:
    """(first line, last line, similarity, numbered snippet) of the regions most like `old`."""
    file_lines = text.replace("\r\n", "\n").split("\n")
    want = [line.strip() for line in old.split("\n") if line.strip()]
    if not want:
        return []
    keys = [line.strip() for line in file_lines]
    # Anchor on the snippet's lines that best resemble some file line, then score whole windows.
    anchors: dict[int, float] = {}
    sample = want if len(want) * len(keys) <= 400_000 else want[:3]
    for j, w in enumerate(sample):
        matcher = difflib.SequenceMatcher(None, "", w, autojunk=False)
        for i, key in enumerate(keys):
            if not key:
                continue
            matcher.set_seq1(key)
            if matcher.real_quick_ratio() < 0.5 or matcher.quick_ratio() < 0.5:
                continue
            score = matcher.ratio()
            if score >= 0.5:
                start = max(0, i - j)
                anchors[start] = max(anchors.get(start, 0.0), score)
    best = sorted(anchors, key=lambda s: -anchors[s])[:20]
    joined_want = "\n".join(want)
    scored = []
    for start in dict.fromkeys(_skip_blank(keys, s) for s in best):
        window, i = [], start
        while i < len(keys) and len(window) < len(want):
            if keys[i]:
                window.append(keys[i])
            i += 1
        score = difflib.SequenceMatcher(
            None, "\n".join(window), joined_want, autojunk=False
        ).ratio()
        scored.append((score, start, i))
    scored.sort(key=lambda t: (-t[0], t[1]))
    chosen: list[tuple[int, int, float, str]] = []
    for score, start, stop in scored:
        if score < 0.4 or any(start < c[1] and stop > c[0] - 1 for c in chosen):
            continue
        width = len(str(stop))
        snippet = "\n".join(
            f"{n:>{width}}\t{file_lines[n - 1]}"
            for n in range(start + 1, min(stop, start + 30) + 1)
        )
        chosen.append((start + 1, stop, score, snippet))
        if len(chosen) == limit:
            break
    return chosen
