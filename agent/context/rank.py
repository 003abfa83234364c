"""Centrality: how often a file's definitions are referenced from other files.

Tree-sitter parses each file's import statements (`agent.context.skeleton.imports_of`). An
import is resolved to the repository file(s) it names, per language: Python dotted and relative
modules, JS/TS relative specifiers, Go package directories, Rust `crate::` paths and `mod` items,
Java qualified names, C/C++ `#include "..."`. A file's centrality is the number of distinct
other files that import it; the number of its definitions referenced by name in those imports
(`from m import a, b`, `use m::T`, a Java static import) breaks ties. External packages resolve
to nothing and cost nothing.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_JS_EXTS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts", ".d.ts")
_JS_LANGS = frozenset({"javascript", "typescript", "tsx"})


@dataclass(frozen=True)
class Score:
    importers: int = 0  # distinct other files importing this one
    names: int = 0  # its definitions referenced by name in those imports

    def key(self) -> tuple[int, int]:
        return (-self.importers, -self.names)


class _Index:
    def __init__(self, languages: Mapping[str, str]):
        self.languages = languages
        self.paths = set(languages)
        self.py_modules: dict[str, list[str]] = defaultdict(list)  # dotted suffix -> files
        self.by_suffix: dict[str, list[str]] = defaultdict(list)  # 'x/y.h' -> files ending so
        self.dirs: dict[str, list[str]] = defaultdict(list)  # directory -> files (Go, Java *)
        self.dir_suffix: dict[str, list[str]] = defaultdict(list)  # 'a/b' suffix -> directories
        self.rust_modules: dict[str, list[str]] = defaultdict(list)
        for path, lang in languages.items():
            directory, name = posixpath.split(path)
            self.dirs[directory].append(path)
            parts = path.split("/")
            for i in range(len(parts)):
                self.by_suffix["/".join(parts[i:])].append(path)
            if lang == "python":
                stem = path[: -len(posixpath.splitext(path)[1])]
                mod = stem.split("/")
                if mod[-1] == "__init__":
                    mod = mod[:-1]
                for i in range(len(mod)):
                    self.py_modules[".".join(mod[i:])].append(path)
            elif lang == "rust":
                mod = path[:-3].split("/")
                if mod[-1] in ("mod", "lib", "main"):
                    mod = mod[:-1]
                if "src" in mod:
                    mod = mod[len(mod) - mod[::-1].index("src") :]
                for i in range(len(mod) + 1):
                    self.rust_modules["::".join(mod[i:])].append(path)
        for directory in self.dirs:
            parts = directory.split("/") if directory else []
            for i in range(len(parts)):
                self.dir_suffix["/".join(parts[i:])].append(directory)

    @staticmethod
    def _closest(paths: Iterable[str]) -> list[str]:
        """Among candidate files, those nearest the root (fewest segments)."""
        paths = sorted(set(paths))
        if not paths:
            return []
        depth = min(p.count("/") for p in paths)
        return [p for p in paths if p.count("/") == depth]

    def python(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        module, _, names_text = spec.partition(":")
        names = [n for n in names_text.split(",") if n and n != "*"]
        if module.startswith("."):
            level = len(module) - len(module.lstrip("."))
            package = posixpath.dirname(importer)
            for _ in range(level - 1):
                package = posixpath.dirname(package)
            rest = module[level:].replace(".", "/")
            base = posixpath.join(package, rest) if rest else package

            def exact(p: str) -> list[str]:
                return [c for c in (p + ".py", p + ".pyi", p + "/__init__.py") if c in self.paths][
                    :1
                ]
        else:
            base = module

            def exact(p: str) -> list[str]:
                return self._closest(self.py_modules.get(p.replace("/", "."), ()))

        found: list[tuple[str, list[str]]] = []
        if not names_text and not module.startswith("."):  # `import a.b.c`
            return [(t, []) for t in exact(base)]
        target_names: list[str] = []
        for name in names:
            sub = exact(f"{base}/{name}" if base else name)
            if sub:
                found.extend((t, []) for t in sub)
            else:
                target_names.append(name)
        if target_names or not names:
            found.extend((t, target_names) for t in exact(base))
        return found

    def js(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        if not spec.startswith("."):
            return []
        base = posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec))
        candidates = [base] + [base + e for e in _JS_EXTS] + [f"{base}/index{e}" for e in _JS_EXTS]
        for c in candidates:
            if c in self.paths:
                return [(c, [])]
        return []

    def go(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        parts = spec.split("/")
        for i in range(len(parts)):
            dirs = self.dir_suffix.get("/".join(parts[i:]))
            if dirs:
                directory = self._closest(dirs)[0] if len(dirs) > 1 else dirs[0]
                return [
                    (p, [])
                    for p in self.dirs[directory]
                    if p.endswith(".go") and not p.endswith("_test.go")
                ]
        return []

    def rust(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        if spec.startswith("mod:"):
            name = spec[4:]
            directory, file = posixpath.split(importer)
            stem = file[:-3]
            bases = (
                [directory]
                if stem in ("mod", "lib", "main")
                else [posixpath.join(directory, stem), directory]
            )
            for base in bases:
                for c in (posixpath.join(base, name + ".rs"), posixpath.join(base, name, "mod.rs")):
                    if c in self.paths:
                        return [(c, [])]
            return []
        path = spec.split("{", 1)[0].rstrip(":")
        parts = [p.strip() for p in path.split("::") if p.strip()]
        while parts and parts[0] in ("crate", "self", "super"):
            parts = parts[1:]
        names = [parts[-1]] if parts else []
        for end in range(len(parts), 0, -1):
            hits = self.rust_modules.get("::".join(parts[:end]))
            if hits:
                return [(t, names if end < len(parts) else []) for t in self._closest(hits)]
        return []

    def java(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        parts = spec.split(".")
        if parts and parts[-1] == "*":
            dirs = self.dir_suffix.get("/".join(parts[:-1]))
            if dirs:
                return [(p, []) for d in dirs for p in self.dirs[d] if p.endswith(".java")]
            return []
        for end in range(len(parts), 0, -1):  # a static import names a member of a class
            hits = self.by_suffix.get("/".join(parts[:end]) + ".java")
            if hits:
                return [(t, parts[end : end + 1]) for t in self._closest(hits)]
        return []

    def c(self, importer: str, spec: str) -> list[tuple[str, list[str]]]:
        local = posixpath.normpath(posixpath.join(posixpath.dirname(importer), spec))
        if local in self.paths:
            return [(local, [])]
        return [(t, []) for t in self._closest(self.by_suffix.get(spec, ()))]

    def resolve(self, importer: str, language: str, spec: str) -> list[tuple[str, list[str]]]:
        if language == "python":
            return self.python(importer, spec)
        if language in _JS_LANGS:
            return self.js(importer, spec)
        if language == "go":
            return self.go(importer, spec)
        if language == "rust":
            return self.rust(importer, spec)
        if language == "java":
            return self.java(importer, spec)
        if language in ("c", "cpp"):
            return self.c(importer, spec)
        return []


def centrality(languages: Mapping[str, str], imports: Mapping[str, list[str]]) -> dict[str, Score]:
    """Scores for every path in `languages`, from the `imports` of the files that have them.

    languages: {path: language} of every file that can be imported (the resolution universe)
    imports:   {path: raw import specifiers} of the importing files
    """
    index = _Index(languages)
    importers: dict[str, set[str]] = defaultdict(set)
    names: dict[str, int] = defaultdict(int)
    for importer in sorted(imports):
        language = languages.get(importer)
        if language is None:
            continue
        for spec in imports[importer]:
            for target, named in index.resolve(importer, language, spec):
                if target == importer:
                    continue
                importers[target].add(importer)
                names[target] += len(named)
    return {p: Score(len(importers.get(p, ())), names.get(p, 0)) for p in languages}
