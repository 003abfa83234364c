"""Path rules of the context engine: which files are left out by name, their tier and language.

Everything here looks at the path only (and, for a few rules, at cheap facts such as the size);
content rules (binary, minified, generated, secrets) live in `agent.context.pack` and
`agent.context.secrets`. Keeping the tables in one place makes the report's reasons consistent.
"""

from __future__ import annotations

import re

# Directories holding third-party or build output. Matched on any path segment.
VENDORED_DIRS = frozenset(
    {
        "node_modules",
        "bower_components",
        "jspm_packages",
        "vendor",
        "third_party",
        "thirdparty",
        "3rdparty",
        "dist",
        "build",
        "__pycache__",
        ".venv",
        ".tox",
        ".nox",
        ".eggs",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".gradle",
        ".next",
        ".nuxt",
        ".svelte-kit",
        ".parcel-cache",
        ".terraform",
        "site-packages",
        "Pods",
        "Carthage",
        "htmlcov",
    }
)
_VENDORED_DIR_SUFFIXES = (".egg-info",)

LOCK_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lock",
        "bun.lockb",
        "deno.lock",
        "poetry.lock",
        "Pipfile.lock",
        "pdm.lock",
        "uv.lock",
        "Cargo.lock",
        "composer.lock",
        "Gemfile.lock",
        "go.sum",
        "go.work.sum",
        "mix.lock",
        "flake.lock",
        "pubspec.lock",
        "Podfile.lock",
        "packages.lock.json",
        "gradle.lockfile",
        "conda-lock.yml",
    }
)

_MINIFIED_NAME = re.compile(r"[.-]min\.(?:js|mjs|cjs|css)$|\.(?:js|css)\.map$|\.map$")
_GENERATED_NAME = re.compile(
    r"(?:_pb2(?:_grpc)?\.pyi?|\.pb\.(?:go|cc|h)|\.pb\.gw\.go|_grpc\.pb\.go|\.g\.dart|\.freezed\.dart"
    r"|\.generated\.[A-Za-z]+|_generated\.[A-Za-z]+|\.designer\.cs)$"
)

# Secrets by file name: (compiled pattern on the base name, rule id). Public keys are fine.
_SECRET_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\.env(?:\..+)?$|^.+\.env$"), "dotenv file"),
    (
        re.compile(r"\.(?:pem|key|p12|pfx|jks|keystore|p8|ppk|asc|gpg|kdbx|ovpn)$", re.I),
        "key or keystore file",
    ),
    (re.compile(r"^id_(?:rsa|dsa|ecdsa|ed25519)(?!.*\.pub$)"), "SSH private key"),
    (
        re.compile(r"^(?:\.netrc|_netrc|\.pgpass|\.git-credentials|\.htpasswd|\.dockercfg)$"),
        "credentials file",
    ),
    (
        re.compile(r"^credentials(?:\.json|\.ya?ml|\.xml)?$|^client_secrets?\.json$"),
        "credentials file",
    ),
    (
        re.compile(r"^(?:service[-_]?account|gcp[-_]?key|firebase[-_]adminsdk).*\.json$", re.I),
        "cloud service-account key",
    ),
    (re.compile(r"^\.?(?:secrets?)\.(?:json|ya?ml|toml|ini)$", re.I), "secrets file"),
)
# Files that are ordinary configuration unless they carry an auth token (checked on content).
TOKEN_CONFIG_FILES = frozenset({".npmrc", ".pypirc", ".yarnrc", ".yarnrc.yml", ".gem/credentials"})
_TOKEN_CONFIG_LINE = re.compile(
    r"(?im)^\s*(?:[^#;\n]*:)?_?(?:authToken|auth|password|token|npmAuthToken)\s*[=:]\s*\S"
)

TIERS = ("source", "tests", "config", "docs", "data")  # highest priority first
TIER_RANK = {name: i for i, name in enumerate(TIERS)}

LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".c++": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".hxx": "cpp",
    ".ipp": "cpp",
    ".inl": "cpp",
    ".tpp": "cpp",
    ".cs": "csharp",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
    ".m": "objective-c",
    ".mm": "objective-cpp",
    ".rb": "ruby",
    ".php": "php",
    ".pl": "perl",
    ".pm": "perl",
    ".lua": "lua",
    ".r": "r",
    ".jl": "julia",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".mli": "ocaml",
    ".fs": "fsharp",
    ".clj": "clojure",
    ".dart": "dart",
    ".zig": "zig",
    ".nim": "nim",
    ".v": "verilog",
    ".sv": "systemverilog",
    ".vhd": "vhdl",
    ".sol": "solidity",
    ".vue": "vue",
    ".svelte": "svelte",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "zsh",
    ".fish": "fish",
    ".ps1": "powershell",
    ".bat": "batch",
    ".cmd": "batch",
    ".sql": "sql",
    ".proto": "protobuf",
    ".graphql": "graphql",
    ".html": "html",
    ".htm": "html",
    ".css": "css",
    ".scss": "scss",
    ".sass": "sass",
    ".less": "less",
    ".asm": "asm",
    ".s": "asm",
    ".S": "asm",
    ".cu": "cuda",
    ".cuh": "cuda",
    ".f90": "fortran",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".adoc": "asciidoc",
    ".tex": "latex",
    ".txt": "text",
    ".json": "json",
    ".jsonc": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".xml": "xml",
    ".csv": "csv",
    ".tsv": "tsv",
    ".svg": "svg",
    ".cmake": "cmake",
    ".mk": "make",
    ".gradle": "groovy",
    ".groovy": "groovy",
    ".tf": "hcl",
    ".hcl": "hcl",
    ".nix": "nix",
    ".bzl": "starlark",
    ".ipynb": "json",
}
_LANGUAGE_BY_NAME = {
    "Makefile": "make",
    "GNUmakefile": "make",
    "makefile": "make",
    "Dockerfile": "dockerfile",
    "CMakeLists.txt": "cmake",
    "BUILD": "starlark",
    "BUILD.bazel": "starlark",
    "WORKSPACE": "starlark",
    "Jenkinsfile": "groovy",
    "Rakefile": "ruby",
    "Gemfile": "ruby",
    "Vagrantfile": "ruby",
}
SOURCE_LANGUAGES = frozenset(LANGUAGES.values()) - {
    "markdown",
    "rst",
    "asciidoc",
    "latex",
    "text",
    "json",
    "yaml",
    "toml",
    "ini",
    "xml",
    "csv",
    "tsv",
    "svg",
    "cmake",
    "make",
    "groovy",
    "hcl",
    "nix",
    "starlark",
}

_TEST_DIR = re.compile(r"^(?:tests?|testing|testdata|test[-_]\w+|__tests__|specs?|\w+[-_]tests?)$")
_TEST_FILE = re.compile(
    r"^(?:test_.+\.py|.+_tests?\.py|conftest\.py|.+_test\.(?:go|rs|c|cc|cpp|rb|exs?)"
    r"|.+\.(?:test|spec)\.[cm]?[jt]sx?|.+(?:Tests?|IT)\.(?:java|kt|scala|cs)|.+_spec\.rb|.+Tests?\.swift)$"
)
_CONFIG_NAMES = frozenset(
    {
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "tox.ini",
        "noxfile.py",
        "MANIFEST.in",
        "package.json",
        "tsconfig.json",
        "jsconfig.json",
        "Cargo.toml",
        "go.mod",
        "go.work",
        "pom.xml",
        "build.gradle",
        "settings.gradle",
        "build.gradle.kts",
        "settings.gradle.kts",
        "CMakeLists.txt",
        "Makefile",
        "GNUmakefile",
        "makefile",
        "meson.build",
        "Dockerfile",
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yaml",
        "Gemfile",
        "Rakefile",
        "Pipfile",
        "requirements.txt",
        "environment.yml",
        "BUILD",
        "BUILD.bazel",
        "WORKSPACE",
        ".gitignore",
        ".gitattributes",
        ".editorconfig",
        ".pre-commit-config.yaml",
        ".v4codeignore",
        ".dockerignore",
        ".npmignore",
        ".prettierrc",
        ".eslintrc",
        ".eslintrc.json",
        ".babelrc",
        "vite.config.ts",
        "vite.config.js",
        "webpack.config.js",
        "rollup.config.js",
        "Justfile",
        "justfile",
        "Procfile",
        ".v4code.toml",
        "Vagrantfile",
        "Jenkinsfile",
    }
)
_CONFIG_EXT = frozenset(
    {
        ".toml",
        ".ini",
        ".cfg",
        ".yaml",
        ".yml",
        ".cmake",
        ".mk",
        ".gradle",
        ".bzl",
        ".tf",
        ".hcl",
        ".nix",
        ".in",
    }
)
_DOC_EXT = frozenset(
    {".md", ".markdown", ".rst", ".adoc", ".txt", ".tex", ".rtf", ".org", ".man", ".1"}
)
_DOC_DIRS = frozenset({"docs", "doc", "documentation", "man"})
_DOC_NAMES = re.compile(
    r"^(?:README|LICEN[CS]E|COPYING|CHANGELOG|CHANGES|NEWS|AUTHORS|CONTRIBUTING|NOTICE|HISTORY)",
    re.I,
)


def vendored_dir(segment: str) -> bool:
    return segment in VENDORED_DIRS or segment.endswith(_VENDORED_DIR_SUFFIXES)


def vendored_reason(rel: str) -> str | None:
    """'vendored or build directory (X/)' if a directory segment of `rel` is vendored."""
    parts = rel.split("/")
    for i, seg in enumerate(parts[:-1]):
        if vendored_dir(seg):
            return f"vendored or build directory ({'/'.join(parts[: i + 1])}/)"
    return None


def secret_name_rule(rel: str) -> str | None:
    """The rule id when the file name alone says it likely holds secrets."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".pub"):
        return None
    for pattern, rule in _SECRET_NAMES:
        if pattern.search(name):
            return rule
    return None


def token_config_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name in TOKEN_CONFIG_FILES or rel.endswith(".gem/credentials")


def has_auth_token_line(text: str) -> bool:
    return _TOKEN_CONFIG_LINE.search(text) is not None


def name_exclusion(rel: str) -> str | None:
    """Reasons that follow from the name alone (lock, minified, generated). Secrets are separate."""
    name = rel.rsplit("/", 1)[-1]
    if name in LOCK_FILES:
        return "lock file"
    if _MINIFIED_NAME.search(name):
        return "minified or source map"
    if _GENERATED_NAME.search(name):
        return "generated file (by name)"
    return None


def _suffix(name: str) -> str:
    """PurePosixPath(name).suffix without building a path object (called per file per run)."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def language(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    if name in _LANGUAGE_BY_NAME:
        return _LANGUAGE_BY_NAME[name]
    suffix = _suffix(name)
    return LANGUAGES.get(suffix) or LANGUAGES.get(suffix.lower()) or "text"


def tier(rel: str) -> str:
    """source > tests > config (build/config) > docs > data, from the path alone."""
    parts = rel.split("/")
    name = parts[-1]
    suffix = _suffix(name).lower()
    lang = language(rel)
    if name in _CONFIG_NAMES or (name.startswith("requirements") and suffix == ".txt"):
        return "config"
    if len(parts) > 1 and parts[0] in (".github", ".gitlab", ".circleci", ".ci", ".buildkite"):
        return "config"
    in_test_dir = any(_TEST_DIR.match(p) for p in parts[:-1])
    if lang in SOURCE_LANGUAGES:
        if in_test_dir or _TEST_FILE.match(name):
            return "tests"
        if any(p in _DOC_DIRS for p in parts[:-1]):
            return "docs"
        return "source"
    if suffix in _CONFIG_EXT:
        return "config"
    if suffix in _DOC_EXT or _DOC_NAMES.match(name) or any(p in _DOC_DIRS for p in parts[:-1]):
        if suffix in _DOC_EXT or not suffix:
            return "docs"
    return "data"
