"""The repository as the tools see it: the context engine's file list, and path suggestions.

The ignore rules are the context engine's (`agent.context.RepoFiles`), so `list_files` and
`search` show the model exactly the files the packed prompt was built from.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePosixPath

from agent.context import RepoFiles, rules
from tools.textfile import decode_bytes, is_binary


def secret_reason(rel: str, data: bytes | None = None, text: str | None = None) -> str | None:
    """Why the context engine would keep this file's content from the model (None: it would not).

    The same rules as the packed prompt, so a tool cannot hand the model what packing held back:
    secret names, then (given the content: `data`, and its decoded `text` when the caller has it)
    auth tokens in `.npmrc`-like files and the content rules of `agent.context.secrets`. Git's own
    config is not packed at all, but read_file can reach it: a remote URL with a token in it
    (`https://user:ghp_…@github.com/…`) keeps it from the model too."""
    reason = rules.secret_name_rule(rel)
    if reason is not None or data is None:
        return reason
    if text is None:
        if is_binary(data):
            return None
        text = decode_bytes(data).text
    if rules.token_config_file(rel) and rules.has_auth_token_line(text):
        return "configuration file with an auth token"
    parts = PurePosixPath(rel).parts
    if len(parts) >= 2 and parts[-2:] == (".git", "config") and _URL_WITH_CREDENTIALS.search(text):
        return "git config with credentials in a remote URL"
    from agent.context.secrets import scan

    rule = scan(text)
    return f"{rule} (by content)" if rule else None


# user:password@, or a bare token (long userinfo) as in https://ghp_…@github.com; not ssh://git@.
_URL_WITH_CREDENTIALS = re.compile(
    r"[a-z][a-z0-9+.-]*://(?:[^/\s@:]+:[^/\s@]+|[^/\s@:]{16,})@", re.IGNORECASE
)


def visible_files(root: Path) -> RepoFiles:
    return RepoFiles(root)


def under(paths: list[str], rel: str) -> list[str]:
    """The paths equal to `rel` or inside the directory `rel` ('.' = everything)."""
    if rel in (".", ""):
        return paths
    prefix = rel.rstrip("/") + "/"
    return [p for p in paths if p == rel or p.startswith(prefix)]


def suggest_paths(root: Path, rel: str, limit: int = 5) -> list[str]:
    """Existing files the model may have meant: same file name elsewhere, or a close spelling."""
    paths = visible_files(root).paths()
    name = PurePosixPath(rel).name
    same_name = [p for p in paths if PurePosixPath(p).name == name]
    close = difflib.get_close_matches(rel, paths, n=limit, cutoff=0.6)
    by_name = {PurePosixPath(p).name: p for p in paths}
    close_names = difflib.get_close_matches(name, list(by_name), n=limit, cutoff=0.75)
    ordered = dict.fromkeys(same_name + close + [by_name[n] for n in close_names])
    return list(ordered)[:limit]


def not_found_message(root: Path, rel: str, what: str = "file") -> str:
    hint = suggest_paths(root, rel)
    message = f"{what} not found: {rel}"
    if hint:
        message += "; did you mean: " + ", ".join(hint) + "?"
    else:
        message += "; use list_files to see which files exist"
    return message
