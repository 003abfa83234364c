"""list_files: the repository's files (as the context engine sees them), filtered."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tools.base import Observation, Tool, ToolError
from tools.globs import compile_glob
from tools.paths import resolve_repo_path
from tools.repo import not_found_message, under, visible_files

MAX_ENTRIES = 500


class ListFiles(Tool):
    name = "list_files"
    description = (
        "List the repository's files (recursively, one relative path per line), honouring its "
        "ignore rules (.gitignore, .v4codeignore, vendored and build directories). Narrow with "
        "path (a directory) and pattern (a glob: '*.py' matches file names at any depth, "
        "'src/**/*.ts' matches whole paths)."
    )
    parameters = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Directory to list (default: the root)."},
            "pattern": {"type": "string", "description": "Glob filter, e.g. '*.py' or 'tests/**'."},
        },
        "required": [],
        "additionalProperties": False,
    }

    def execute(self, args: dict[str, Any]) -> Observation:
        target = resolve_repo_path(self.ctx.root, args.get("path") or ".", allow_root=True)
        if not target.abs.exists():
            raise ToolError(not_found_message(self.ctx.root, target.rel, "directory"))
        files = visible_files(self.ctx.root)
        paths = under(files.paths(), target.rel)
        pattern = args.get("pattern")
        if pattern:
            match = compile_glob(pattern)
            paths = [p for p in paths if match(p)]
        where = "the repository" if target.is_root else target.rel
        if not paths:
            if target.abs.is_file() or target.abs.is_dir():
                if not target.is_root and files.is_ignored(target.rel):
                    raise ToolError(
                        f"{target.rel} is excluded by the repository's ignore rules "
                        "(.gitignore, .v4codeignore, vendored/build directories or secrets)"
                    )
            suffix = f" matching '{pattern}'" if pattern else ""
            return Observation(f"No files{suffix} in {where}.", data={"count": 0})
        shown = paths[:MAX_ENTRIES]
        text = "\n".join(shown)
        if len(paths) > len(shown):
            rest = paths[len(shown) :]
            by_dir = Counter(p.split("/", 1)[0] + "/" if "/" in p else "." for p in rest)
            top = ", ".join(f"{d} ({n})" for d, n in by_dir.most_common(8))
            text += (
                f"\n[... {len(rest)} more files not shown (in {top}); narrow the listing with "
                "path= or pattern=]"
            )
        header = f"{len(paths)} files in {where}" + (f" matching '{pattern}'" if pattern else "")
        return Observation(f"{header}:\n{text}", data={"count": len(paths), "shown": len(shown)})
