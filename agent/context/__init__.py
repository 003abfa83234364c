"""The whole-repository context engine (`v4code context`; the prefix of every ask/fix prompt).

Interface other modules rely on (keep it stable):
    pack = pack_repository(root, budget=None, fmt="xml", settings=None, console=None,
                           *, include=(), max_file_bytes=1 MiB, store=None, progress=None,
                           skip=()) -> Pack
    pack.text          the packed repository (deterministic, stable-prefix ordered): a header
                       with the tree of tracked files, then one block per file, oldest-changed
                       first and files with uncommitted changes (and untracked files) last,
                       then a list of the untracked files
    pack.total_tokens  exact V4 tokens of pack.text (<= pack.budget)
    pack.header_tokens, pack.footer_tokens
                       header_tokens + sum(f.tokens for f in pack.files) + footer_tokens
                       == total_tokens
    pack.files         [PackedFile(path, tokens, mode, tier, language, bytes, encoding)] in pack
                       order; mode is "full" | "skeleton" | "listed"; tokens count the file's
                       block
    pack.excluded      [Excluded(path, reason)] sorted by path (directories end with '/')
    pack.cost_cold, pack.cost_cached   USD to send pack.text to settings' model
    pack.manifest()    the JSON object of `v4code context --output-format json`
    RepoFiles(root, include=())
                       discovery with the engine's ignore rules:
                       .paths() -> sorted relative posix paths the agent may see (not ignored
                                   by .gitignore/.v4codeignore, not vendored, not secret-looking
                                   by name, no symlink leading out of the root)
                       .is_ignored(rel_path) -> bool (files or directories, existing or not)
                       .candidates(), .excluded() (what the packer starts from)
    render_file(path, content, fmt="xml", language=None, mode="full") -> str
                       one file block with the pack's delimiters (xml or markdown)
    scan_secrets(text) -> rule id | None   the content rules (never returns the secret)

Errors: UsageError (exit 2) for a root that is not a directory or is inside .git, an unknown
format, or a budget smaller than the header alone. Heavy modules (tree-sitter, the secret rules,
the tokenizer) load on first use; a warm pack with a plan-cache hit never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.context.discovery import Excluded, RepoFiles
    from agent.context.pack import Pack, PackedFile, pack_repository
    from agent.context.render import render_file
    from agent.context.secrets import scan as scan_secrets

__all__ = [
    "Excluded",
    "Pack",
    "PackedFile",
    "RepoFiles",
    "pack_repository",
    "render_file",
    "scan_secrets",
]

_LAZY = {
    "Excluded": ("agent.context.discovery", "Excluded"),
    "RepoFiles": ("agent.context.discovery", "RepoFiles"),
    "Pack": ("agent.context.pack", "Pack"),
    "PackedFile": ("agent.context.pack", "PackedFile"),
    "pack_repository": ("agent.context.pack", "pack_repository"),
    "render_file": ("agent.context.render", "render_file"),
    "scan_secrets": ("agent.context.secrets", "scan"),
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import agent.context` (and the CLI's start-up) stays cheap.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
