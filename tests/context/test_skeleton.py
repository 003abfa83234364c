"""Skeletons (valid, shorter, signatures kept, bodies gone) and import-based centrality."""

from __future__ import annotations

import ast

import pytest

from agent.context import skeleton as sk
from agent.context.rank import centrality
from tests.context.conftest import STDLIB, stdlib_files, stdlib_sources

SAMPLES = {
    "javascript": (
        """import fs from 'fs';
const path = require('path');
/** Adds numbers. */
export function add(a, b) {
  const s = a + b;
  return s;
}
export default class Store extends Base {
  count = 0;
  constructor(x) { super(); this.x = x; }
  /** Reads a key. */
  get(key) { return this.map.get(key); }
}
export const handler = async (event) => {
  const body = JSON.parse(event.body);
  if (!body) { throw new Error('no body'); }
  for (const k of Object.keys(body)) { console.log(k); }
  return { statusCode: 200, body: JSON.stringify(body) };
};
main();
""",
        [
            "export function add(a, b) {}",
            "get(key) {}",
            "export const handler = async (event) => {};",
            "/** Adds numbers. */",
        ],
        ["a + b", "JSON.parse", "main();"],
    ),
    "typescript": (
        """import { Thing } from './thing';
export interface Options { depth: number; name?: string }
export type Id = string | number;
export enum Color { Red, Green }
export abstract class Shape implements Drawable {
  private readonly sides: number = 0;
  abstract area(): number;
  describe(prefix: string): string { return prefix + this.area(); }
}
export function make<T extends Shape>(kind: string, opts: Options): T {
  return registry[kind](opts) as T;
}
""",
        [
            "export interface Options",
            "abstract area(): number;",
            "describe(prefix: string): string {}",
            "export function make<T extends Shape>(kind: string, opts: Options): T {}",
        ],
        ["registry[kind]", "prefix + this.area()"],
    ),
    "go": (
        """package store

import (
\t"fmt"
\t"strings"
)

// Store keeps things.
type Store struct {
\titems map[string]int
}

// Get returns an item.
func (s *Store) Get(key string) (int, error) {
\tv, ok := s.items[strings.ToLower(key)]
\tif !ok {
\t\treturn 0, fmt.Errorf("missing %s", key)
\t}
\treturn v, nil
}

func New() *Store { return &Store{items: map[string]int{}} }
""",
        [
            "package store",
            "type Store struct",
            "// Get returns an item.",
            "func (s *Store) Get(key string) (int, error) {}",
        ],
        ["strings.ToLower", "fmt.Errorf"],
    ),
    "rust": (
        """use std::collections::HashMap;
mod util;

/// A store.
#[derive(Debug, Default)]
pub struct Store { items: HashMap<String, i32> }

pub trait Lookup {
    fn get(&self, key: &str) -> Option<i32>;
    fn has(&self, key: &str) -> bool { self.get(key).is_some() }
}

impl Lookup for Store {
    fn get(&self, key: &str) -> Option<i32> {
        let k = key.to_lowercase();
        self.items.get(&k).copied()
    }
}

pub fn new() -> Store { Store::default() }
""",
        [
            "use std::collections::HashMap;",
            "#[derive(Debug, Default)]",
            "fn get(&self, key: &str) -> Option<i32>;",
            "fn has(&self, key: &str) -> bool {}",
            "pub fn new() -> Store {}",
        ],
        ["to_lowercase", "Store::default()"],
    ),
    "java": (
        """package org.demo;

import java.util.Map;

/** A store. */
public class Store<K> extends Base implements Lookup {
    private final Map<K, Integer> items = new HashMap<>();
    public Store() { super(); }
    /** Gets an item. */
    @Override
    public int get(K key) throws MissingException {
        Integer v = items.get(key);
        if (v == null) throw new MissingException(key);
        return v;
    }
    interface Listener { void changed(K key); }
}
""",
        [
            "package org.demo;",
            "public class Store<K> extends Base implements Lookup {",
            "public int get(K key) throws MissingException {}",
            "void changed(K key);",
            "/** Gets an item. */",
        ],
        ["items.get(key)", "new MissingException"],
    ),
    "c": (
        """#ifndef STORE_H
#define STORE_H
#include <stdio.h>
#include "util.h"

/* A store. */
struct store { int n; int *items; };
typedef struct store store_t;

static int helper(int x) { return x * 2; }

int store_get(const store_t *s, int i) {
    if (i < 0 || i >= s->n) return -1;
    return s->items[i];
}
#endif
""",
        [
            "#ifndef STORE_H",
            "struct store { int n; int *items; };",
            "int store_get(const store_t *s, int i);",
            "#endif",
        ],
        ["s->items[i]", "x * 2"],
    ),
    "cpp": (
        """#include <vector>
namespace demo {
template <typename T>
class Store : public Base {
 public:
  Store() : n_(0) { init(); }
  int size() const { return n_; }
  void add(const T& item);
 private:
  std::vector<T> items_;
  int n_;
};
int helper(int x) { return x + 1; }
}  // namespace demo
""",
        [
            "namespace demo {",
            "class Store : public Base {",
            "Store();",
            "int size() const;",
            "void add(const T& item);",
        ],
        ["init();", "return n_;", "x + 1"],
    ),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_skeletons_are_valid_and_keep_signatures_only(language: str):
    source, kept, dropped = SAMPLES[language]
    skeleton = sk.skeleton_of(language, source)
    assert skeleton is not None and skeleton.endswith("\n") and not skeleton[0].isspace()
    assert sk.is_valid(language, skeleton), skeleton
    for piece in kept:
        assert piece in skeleton, (piece, skeleton)
    for piece in dropped:
        assert piece not in skeleton, (piece, skeleton)
    assert len(skeleton) < len(source)


def test_python_skeletons_of_real_code_parse(request):
    """Every skeleton of a sample of real stdlib modules is valid Python (all of it with -m slow)."""
    files = stdlib_files("json", "email", "asyncio", "http", "argparse", "dataclasses", "typing")
    checked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        skeleton = sk.skeleton_of("python", text)
        if skeleton is None:
            continue
        ast.parse(skeleton, filename=str(path))
        checked += 1
        if path.name == "decoder.py" and path.parent.name == "json":
            assert (
                "class JSONDecoder(object):" in skeleton
                and "def raw_decode(self, s, idx=0):" in skeleton
            )
            assert "scan_once" not in skeleton.split("def raw_decode", 1)[1]  # body gone
    assert checked > 60


@pytest.mark.slow
def test_python_skeletons_of_the_whole_stdlib_parse():
    bad = []
    for path, text in stdlib_sources():
        skeleton = sk.skeleton_of("python", text)
        try:
            ast.parse(skeleton or "")
        except SyntaxError as exc:
            bad.append(f"{path}: {exc}")
    assert not bad, bad[:5]


def test_python_skeleton_edge_cases():
    source = (
        "import os\n"
        "if os.name == 'nt':\n"
        "    import ntpath as p\n"
        "def one(): return 1\n"
        "@decorator(arg)\n"
        "async def two(a,\n"
        "              b: int = 2) -> int:\n"
        "    '''Doc.'''\n"
        "    return a + b\n"
        "class Empty: pass\n"
        "class Outer:\n"
        "    x: int = 1\n"
        "    class Inner:\n"
        "        def m(self):\n"
        "            return 3\n"
        "if __name__ == '__main__':\n"
        "    one()\n"
    )
    skeleton = sk.skeleton_of("python", source)
    assert skeleton is not None
    ast.parse(skeleton)
    assert (
        "async def two(a,\n              b: int = 2) -> int:\n    '''Doc.'''\n    ..." in skeleton
    )
    assert (
        "@decorator(arg)" in skeleton and "class Inner:" in skeleton and "def m(self):" in skeleton
    )
    assert "return a + b" not in skeleton and "__main__" not in skeleton
    tabbed = "class A:\n\tdef f(self):\n\t\treturn 1\n"
    ast.parse(sk.skeleton_of("python", tabbed) or "")


def test_import_extraction_per_language():
    assert sk.imports_of(
        "python", "import os, a.b as c\nfrom .x import y, z\nfrom .. import w\nx = 1\nimport late\n"
    ) == [
        "os",
        "a.b",
        ".x:y,z",
        "..:w",
        "late",
    ]
    js = "import a from './a';\nexport { b } from '../b';\nconst c = require('./c');\nfoo();\n"
    assert sk.imports_of("javascript", js) == ["./a", "../b", "./c"]
    assert sk.imports_of("go", 'package m\n\nimport (\n\t"fmt"\n\tx "example.com/m/util"\n)\n') == [
        "fmt",
        "example.com/m/util",
    ]
    assert sk.imports_of("rust", "use crate::store::Store;\nmod util;\nfn main() {}\n") == [
        "crate::store::Store",
        "mod:util",
    ]
    assert sk.imports_of(
        "java", "package p;\nimport org.demo.Store;\nimport static org.demo.Util.max;\nclass A {}\n"
    ) == [
        "org.demo.Store",
        "org.demo.Util.max",
    ]
    assert sk.imports_of("c", '#include <stdio.h>\n#include "util/str.h"\nint x;\n') == [
        "stdio.h",
        "util/str.h",
    ]
    # an 'import' inside a string is not an import
    assert sk.imports_of("python", 's = """\nimport fake\n"""\nimport real\n') == ["real"]


def test_centrality_counts_distinct_importers():
    languages = {
        "pkg/__init__.py": "python",
        "pkg/core.py": "python",
        "pkg/util.py": "python",
        "pkg/cli.py": "python",
        "web/app.ts": "typescript",
        "web/lib/http.ts": "typescript",
        "src/main.rs": "rust",
        "src/store.rs": "rust",
        "c/main.c": "c",
        "c/util/str.h": "c",
    }
    imports = {
        "pkg/__init__.py": [".core:Core"],
        "pkg/util.py": ["pkg.core:Core,helper"],
        "pkg/cli.py": [".:util", "pkg.core", "json"],
        "pkg/core.py": [],
        "web/app.ts": ["./lib/http", "react"],
        "src/main.rs": ["mod:store", "crate::store::Store"],
        "c/main.c": ["stdio.h", "util/str.h"],
    }
    scores = centrality(languages, imports)
    assert scores["pkg/core.py"].importers == 3 and scores["pkg/core.py"].names == 3
    assert scores["pkg/util.py"].importers == 1
    assert scores["web/lib/http.ts"].importers == 1
    assert scores["src/store.rs"].importers == 1
    assert scores["c/util/str.h"].importers == 1
    assert scores["pkg/cli.py"].importers == 0
    assert STDLIB.is_dir()
