"""Tree-sitter analysis of one source file: its skeleton and its imports.

A skeleton keeps what a reader needs to use a file without its bodies: imports, type
declarations, class and function signatures with their doc comments/docstrings, and short
constants. Bodies become a stub that keeps the text parseable (`...` in Python, `{}` in brace
languages, `;` - a prototype - in C/C++). Everything is cut from the original source bytes, so
signatures keep their formatting and indentation.

Parsing releases the GIL, so `run_many` runs files on a small thread pool.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

SHORT_LINES = 8  # "short" declarations kept verbatim: at most this many lines...
SHORT_CHARS = 600  # ...and characters


@dataclass(frozen=True)
class LangSpec:
    name: str
    keep: frozenset[str] = frozenset()  # verbatim
    keep_short: frozenset[str] = frozenset()  # verbatim when short, else dropped
    functions: frozenset[str] = frozenset()  # header + stub (verbatim when there is no body)
    containers: frozenset[str] = frozenset()  # header + members + closing brace
    wrappers: frozenset[str] = frozenset()  # prefix (decorators, export, template<>) + inner item
    leading: frozenset[str] = frozenset()  # comments/attributes kept when they touch a kept item
    stub: str = " {}"
    doc_comment: re.Pattern[str] | None = None  # which leading comments count as documentation


_DOC_BLOCK = re.compile(r"^(?:/\*\*|///|//!)")
_ANY_COMMENT = re.compile(r"^(?://|/\*)")

SPECS: dict[str, LangSpec] = {
    "python": LangSpec(
        "python",
        keep=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
        keep_short=frozenset({"expression_statement", "type_alias_statement"}),
        functions=frozenset({"function_definition"}),
        containers=frozenset({"class_definition"}),
        wrappers=frozenset({"decorated_definition"}),
        stub="...",
    ),
    "javascript": LangSpec(
        "javascript",
        keep=frozenset({"import_statement"}),
        keep_short=frozenset(
            {"expression_statement", "field_definition", "public_field_definition"}
        ),
        functions=frozenset(
            {"function_declaration", "generator_function_declaration", "method_definition"}
        ),
        containers=frozenset({"class_declaration"}),
        wrappers=frozenset({"export_statement"}),
        leading=frozenset({"comment"}),
        doc_comment=_DOC_BLOCK,
    ),
    "go": LangSpec(
        "go",
        keep=frozenset({"package_clause", "import_declaration", "type_declaration"}),
        keep_short=frozenset({"const_declaration", "var_declaration"}),
        functions=frozenset({"function_declaration", "method_declaration"}),
        leading=frozenset({"comment"}),
        doc_comment=_ANY_COMMENT,
    ),
    "rust": LangSpec(
        "rust",
        keep=frozenset(
            {
                "use_declaration",
                "extern_crate_declaration",
                "struct_item",
                "enum_item",
                "union_item",
                "type_item",
                "function_signature_item",
                "inner_attribute_item",
                "associated_type",
            }
        ),
        keep_short=frozenset({"const_item", "static_item"}),
        functions=frozenset({"function_item"}),
        containers=frozenset({"impl_item", "trait_item", "mod_item"}),
        leading=frozenset({"line_comment", "block_comment", "attribute_item"}),
        doc_comment=_DOC_BLOCK,
    ),
    "java": LangSpec(
        "java",
        keep=frozenset({"package_declaration", "import_declaration", "enum_declaration"}),
        keep_short=frozenset({"field_declaration", "constant_declaration"}),
        functions=frozenset(
            {"method_declaration", "constructor_declaration", "compact_constructor_declaration"}
        ),
        containers=frozenset(
            {
                "class_declaration",
                "interface_declaration",
                "record_declaration",
                "annotation_type_declaration",
            }
        ),
        leading=frozenset({"block_comment", "line_comment"}),
        doc_comment=_DOC_BLOCK,
    ),
    "c": LangSpec(
        "c",
        keep=frozenset(
            {
                "preproc_include",
                "type_definition",
                "struct_specifier",
                "enum_specifier",
                "union_specifier",
            }
        ),
        keep_short=frozenset({"declaration", "preproc_def", "preproc_function_def"}),
        functions=frozenset({"function_definition"}),
        leading=frozenset({"comment"}),
        stub=";",
        doc_comment=_ANY_COMMENT,
    ),
}
SPECS["typescript"] = LangSpec(
    "typescript",
    keep=SPECS["javascript"].keep
    | {
        "type_alias_declaration",
        "interface_declaration",
        "enum_declaration",
        "ambient_declaration",
        "method_signature",
        "abstract_method_signature",
        "index_signature",
    },
    keep_short=SPECS["javascript"].keep_short | {"internal_module", "module"},
    functions=SPECS["javascript"].functions | {"function_signature"},
    containers=SPECS["javascript"].containers | {"abstract_class_declaration"},
    wrappers=SPECS["javascript"].wrappers,
    leading=SPECS["javascript"].leading,
    doc_comment=_DOC_BLOCK,
)
SPECS["tsx"] = LangSpec(**{**SPECS["typescript"].__dict__, "name": "tsx"})
SPECS["cpp"] = LangSpec(
    "cpp",
    keep=SPECS["c"].keep - {"struct_specifier"}
    | {
        "using_declaration",
        "alias_declaration",
        "namespace_alias_definition",
        "access_specifier",
        "concept_definition",
    },
    keep_short=SPECS["c"].keep_short | {"field_declaration", "template_instantiation"},
    functions=SPECS["c"].functions,
    containers=frozenset(
        {"namespace_definition", "class_specifier", "struct_specifier", "linkage_specification"}
    ),
    wrappers=frozenset({"template_declaration"}),
    leading=SPECS["c"].leading,
    stub=";",
    doc_comment=_ANY_COMMENT,
)
SUPPORTED = frozenset(SPECS)
_PREPROC_CONDITIONALS = frozenset({"preproc_ifdef", "preproc_if"})
_PREPROC_ALTERNATIVES = frozenset({"preproc_else", "preproc_elif", "preproc_elifdef"})
_JS_DECLARATIONS = frozenset({"lexical_declaration", "variable_declaration"})
_JS_FUNCTION_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function"}
)
_PY_IMPORT_BLOCKS = frozenset({"if_statement", "try_statement"})
_DOC_QUOTES = re.compile(r"""([rRuUbBfF]{0,2})(\"\"\"|'''|"|')""")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


# language -> (its tree-sitter grammar package, the function there that returns the grammar)
_GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


@cache
def _language(name: str) -> Any:
    import importlib

    import tree_sitter

    package, function = _GRAMMARS[name]
    return tree_sitter.Language(getattr(importlib.import_module(package), function)())


_local = threading.local()


def parse(language: str, source: bytes) -> Any:
    """A tree-sitter tree (one Parser per thread and language: parsers are not thread-safe)."""
    parsers = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(language)
    if parser is None:
        import tree_sitter

        parser = parsers[language] = tree_sitter.Parser(_language(language))
    return parser.parse(source)


def is_valid(language: str, text: str) -> bool:
    """True when `text` parses without syntax errors (used to check skeletons)."""
    return not parse(language, text.encode("utf-8")).root_node.has_error


class _Builder:
    def __init__(self, spec: LangSpec, src: bytes):
        self.spec = spec
        self.src = src

    # -- text helpers ------------------------------------------------------------------------

    def text(self, start: int, end: int) -> str:
        return self.src[start:end].decode("utf-8", "replace")

    def node_text(self, node: Any) -> str:
        return self.text(node.start_byte, node.end_byte)

    def lead(self, node: Any) -> str:
        """The whitespace before `node` on its line ('' when something else precedes it)."""
        start = node.start_byte - node.start_point.column
        prefix = self.src[start : node.start_byte]
        return prefix.decode("utf-8", "replace") if not prefix.strip() else ""

    def verbatim(self, node: Any) -> str:
        return self.lead(node) + self.node_text(node).rstrip()

    def short(self, node: Any) -> bool:
        return (
            node.end_point.row - node.start_point.row < SHORT_LINES
            and node.end_byte - node.start_byte <= SHORT_CHARS
        )

    # -- items -------------------------------------------------------------------------------

    def children(self, parent: Any, skip: Callable[[Any], bool] | None = None) -> list[str]:
        """Skeleton lines for the statements/members directly under `parent`."""
        out: list[str] = []
        leading: list[Any] = []
        last_emitted_end = -1
        for child in parent.children:
            if skip is not None and skip(child):
                continue
            ctype = child.type
            if ctype in self.spec.leading:
                if leading and leading[-1].end_point.row + 1 < child.start_point.row:
                    leading = []
                leading.append(child)
                continue
            if not child.is_named:
                # A ';' or ':' right after a kept item belongs to it (`struct S {...};`, `public:`).
                if ctype in (";", ":") and out and last_emitted_end == child.start_byte:
                    out[-1] += ctype
                    last_emitted_end = child.end_byte
                continue
            lines = self.item(child)
            if lines:
                attached = self.attached(leading, child)
                out.extend(attached)
                out.extend(lines)
                last_emitted_end = child.end_byte
            leading = []
        return out

    def attached(self, leading: list[Any], item: Any) -> list[str]:
        """Leading comments/attributes that touch `item` (no blank line in between)."""
        if not leading or leading[-1].end_point.row + 1 < item.start_point.row:
            return []
        doc = self.spec.doc_comment
        kept: list[str] = []
        for node in leading:
            text = self.node_text(node)
            if node.type.endswith("comment") and (doc is None or not doc.match(text)):
                continue  # only doc comments are kept (attributes always are)
            kept.append(self.lead(node) + text)
        return kept

    def item(self, node: Any) -> list[str]:
        spec, ntype = self.spec, node.type
        if ntype in spec.keep:
            return [self.verbatim(node)]
        if ntype in spec.functions:
            return self.function(node)
        if ntype in spec.containers:
            return self.container(node)
        if ntype in spec.wrappers:
            return self.wrapper(node)
        if spec.name == "python":
            return self.python_other(node)
        if ntype in _JS_DECLARATIONS and spec.name in ("javascript", "typescript", "tsx"):
            return self.js_declaration(node)
        if ntype in _PREPROC_CONDITIONALS and spec.name in ("c", "cpp"):
            return self.preproc(node)
        if ntype == "expression_statement" and node.named_child_count == 1:
            if node.named_children[0].type != "assignment_expression":
                return []  # top-level calls are behaviour, not interface
        if ntype in spec.keep_short and self.short(node):
            return [self.verbatim(node)]
        return []

    def function(self, node: Any) -> list[str]:
        body = node.child_by_field_name("body")
        if body is None:
            return [self.verbatim(node)]
        if self.spec.name == "python":
            return self.python_function(node, body)
        end = body.start_byte
        if self.spec.name in ("c", "cpp"):
            # `A::A() : x(1) {...}` -> `A::A();` (a prototype cannot carry an initializer list)
            for child in node.children:
                if child.type == "field_initializer_list":
                    end = child.start_byte
                    break
        header = self.text(node.start_byte, end).rstrip()
        return [self.lead(node) + header + self.spec.stub]

    def container(self, node: Any) -> list[str]:
        body = node.child_by_field_name("body")
        if body is None:
            return [self.verbatim(node)] if self.short(node) else []
        if self.spec.name == "python":
            return self.python_class(node, body)
        header = self.text(node.start_byte, body.start_byte).rstrip()
        lead = self.lead(node)
        members = self.children(body, skip=lambda c: c.type in ("{", "}"))
        closing = (
            self.text(body.end_byte - 1, node.end_byte)
            if self.src[body.end_byte - 1 : body.end_byte] == b"}"
            else ""
        )
        if not closing:
            return [self.verbatim(node)] if self.short(node) else []
        close_lead = lead if body.end_point.row != node.start_point.row else ""
        if not members:
            return [lead + header + " {" + closing]
        return [lead + header + " {", *members, close_lead + closing]

    def wrapper(self, node: Any) -> list[str]:
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
        if inner is None:
            named = [
                c
                for c in node.named_children
                if c.type not in ("decorator", "comment", "template_parameter_list")
            ]
            inner = named[-1] if named else None
        if inner is None:
            # `export { a, b } from './x'`, `export default expr`
            return [self.verbatim(node)] if self.short(node) else []
        lines = self.item(inner)
        if not lines:
            return []
        if self.spec.name == "python":  # decorators sit on their own lines
            decorators = [self.verbatim(c) for c in node.children if c.type == "decorator"]
            return decorators + lines
        prefix = self.text(node.start_byte, inner.start_byte)
        first = lines[0]
        inner_lead = self.lead(inner)
        if inner_lead and first.startswith(inner_lead):
            first = first[len(inner_lead) :]
        lines = [self.lead(node) + prefix + first, *lines[1:]]
        if (
            self.text(inner.end_byte, node.end_byte).strip() == ";"
        ):  # `template<...> class C {...};`
            lines[-1] += ";"
        return lines

    # -- Python ------------------------------------------------------------------------------

    def docstring(self, body: Any) -> Any:
        first = body.named_children[0] if body.named_child_count else None
        if (
            first is not None
            and first.type == "expression_statement"
            and first.named_child_count == 1
        ):
            if first.named_children[0].type in ("string", "concatenated_string"):
                return first
        return None

    def body_indent(self, node: Any, body: Any) -> str:
        if body.start_point.row > node.start_point.row:
            return self.lead(body) or self.lead(node) + "    "
        return self.lead(node) + "    "

    def summary(self, doc: Any) -> str:
        """A docstring cut to its first paragraph (the summary): long docstrings full of
        examples would otherwise dominate a skeleton. The result is still one string literal."""
        text = self.node_text(doc)
        match = _DOC_QUOTES.match(text)
        if match is None:
            return text
        prefix, quotes = match.group(1), match.group(2)
        body_start = len(prefix) + len(quotes)
        cut = _BLANK_LINE.search(text, body_start)
        if cut is None or cut.start() >= len(text) - len(quotes) - 1:
            return text
        head = text[: cut.start()].rstrip()
        if len(head) <= body_start or len(quotes) == 1:
            return text
        if head.endswith(("\\", quotes[0])):  # would escape or merge with the closing quotes
            head += " "
        return head + quotes

    def python_head(self, node: Any, body: Any) -> tuple[list[str], str, Any]:
        """A def's or class's header line(s) and docstring summary; the body's indent; the
        docstring node (None when there is none, or the body shares the header's line)."""
        header = self.text(node.start_byte, body.start_byte).rstrip()
        indent = self.body_indent(node, body)
        lines = [self.lead(node) + header]
        doc = self.docstring(body) if body.start_point.row > node.start_point.row else None
        if doc is not None:
            lines.append(indent + self.summary(doc))
        return lines, indent, doc

    def python_function(self, node: Any, body: Any) -> list[str]:
        lines, indent, _ = self.python_head(node, body)
        return [*lines, indent + "..."]

    def python_class(self, node: Any, body: Any) -> list[str]:
        lines, indent, doc = self.python_head(node, body)
        if body.start_point.row == node.start_point.row:
            members: list[str] = []
        else:
            members = self.children(body, skip=lambda c: doc is not None and c.id == doc.id)
        if not members:
            if doc is None:
                lines.append(indent + "...")
            return lines
        return lines + members

    def python_other(self, node: Any) -> list[str]:
        ntype = node.type
        if ntype in _PY_IMPORT_BLOCKS and self.short(node):
            text = self.node_text(node)
            # `try: import x / except ImportError: ...` and `if TYPE_CHECKING:` import blocks
            if "import" in text and "def " not in text and "class " not in text:
                return [self.verbatim(node)]
            return []
        if ntype == "expression_statement" and self.short(node) and node.named_child_count == 1:
            # module constants, __all__, type aliases and stray docstrings; not calls
            if node.named_children[0].type in ("assignment", "string"):
                return [self.verbatim(node)]
            return []
        if ntype in self.spec.keep_short and self.short(node):
            return [self.verbatim(node)]
        return []

    # -- JavaScript / TypeScript -------------------------------------------------------------

    def js_declaration(self, node: Any) -> list[str]:
        # `const f = (a) => { ... }` -> `const f = (a) => {};`; other short declarations verbatim
        pieces: list[str] = []
        cursor = node.start_byte
        for decl in node.named_children:
            value = (
                decl.child_by_field_name("value") if decl.type == "variable_declarator" else None
            )
            if value is None or value.type not in _JS_FUNCTION_VALUES:
                continue
            body = value.child_by_field_name("body")
            if body is None or body.type != "statement_block":
                continue
            pieces.append(self.text(cursor, body.start_byte) + "{}")
            cursor = body.end_byte
        if pieces:
            pieces.append(self.text(cursor, node.end_byte))
            return [self.lead(node) + "".join(pieces).rstrip()]
        return [self.verbatim(node)] if self.short(node) else []

    # -- C / C++ preprocessor conditionals (header guards wrap whole files) ------------------

    def directive(self, node: Any) -> str:
        """`#if cond` / `#elif cond` / `#else` with the whole condition (it may continue over
        backslash-newlines), without the body."""
        cond = node.child_by_field_name("condition") or node.child_by_field_name("name")
        end = cond.end_byte if cond is not None else node.children[0].end_byte
        return self.lead(node) + self.text(node.start_byte, end).rstrip()

    def preproc(self, node: Any) -> list[str]:
        fields = {"name", "condition", "alternative"}

        def body(n: Any) -> list[str]:
            skip = {c.id for i, c in enumerate(n.children) if n.field_name_for_child(i) in fields}
            return self.children(n, skip=lambda c: c.id in skip or c.type.startswith("#"))

        lines = [self.directive(node), *body(node)]
        alternative = node.child_by_field_name("alternative")
        while alternative is not None and alternative.type in _PREPROC_ALTERNATIVES:
            lines.append(self.directive(alternative))
            lines += body(alternative)
            alternative = alternative.child_by_field_name("alternative")
        lines.append("#endif")
        return lines if len(lines) > 2 else []


# -- imports ---------------------------------------------------------------------------------

_PY_STATEMENT_CONTAINERS = frozenset(
    {
        "module",
        "block",
        "if_statement",
        "elif_clause",
        "else_clause",
        "try_statement",
        "except_clause",
        "finally_clause",
        "with_statement",
        "function_definition",
        "class_definition",
        "decorated_definition",
        "for_statement",
        "while_statement",
    }
)
_REQUIRE = re.compile(r"""\brequire\(\s*["']([^"']+)["']\s*\)""")


def _imports(language: str, root: Any, src: bytes) -> list[str]:
    def text(n: Any) -> str:
        return src[n.start_byte : n.end_byte].decode("utf-8", "replace")

    found: list[str] = []
    if language == "python":
        stack = [root]
        while stack:
            node = stack.pop()
            for child in node.named_children:
                ctype = child.type
                if ctype == "import_statement":
                    for name in child.named_children:
                        target = (
                            name.child_by_field_name("name")
                            if name.type == "aliased_import"
                            else name
                        )
                        if target is not None:
                            found.append(text(target))
                elif ctype == "import_from_statement":
                    module = child.child_by_field_name("module_name")
                    names = []
                    for i, c in enumerate(child.children):
                        if child.field_name_for_child(i) == "name":
                            target = (
                                c.child_by_field_name("name") if c.type == "aliased_import" else c
                            )
                            if target is not None:
                                names.append(text(target))
                    if module is not None:
                        found.append(text(module) + ":" + ",".join(names))
                elif ctype in _PY_STATEMENT_CONTAINERS:
                    stack.append(child)
        return found
    for child in root.named_children:
        ctype = child.type
        if language in ("javascript", "typescript", "tsx"):
            if ctype in ("import_statement", "export_statement"):
                source = child.child_by_field_name("source")
                if source is not None:
                    found.append(text(source).strip("'\"`"))
            elif ctype in _JS_DECLARATIONS or ctype == "expression_statement":
                if child.end_byte - child.start_byte < 2000:
                    found.extend(_REQUIRE.findall(text(child)))
        elif language == "go" and ctype == "import_declaration":
            stack = [child]
            while stack:
                node = stack.pop()
                for c in node.named_children:
                    if c.type == "import_spec":
                        path = c.child_by_field_name("path")
                        if path is not None:
                            found.append(text(path).strip('"`'))
                    else:
                        stack.append(c)
        elif language == "rust":
            if ctype == "use_declaration":
                argument = child.child_by_field_name("argument")
                if argument is not None:
                    found.append(text(argument))
            elif ctype == "mod_item" and child.child_by_field_name("body") is None:
                name = child.child_by_field_name("name")
                if name is not None:
                    found.append("mod:" + text(name))
        elif language == "java" and ctype == "import_declaration":
            found.append(text(child).removeprefix("import").replace("static ", "").strip(" ;\n\t"))
        elif language in ("c", "cpp"):
            stack = [child]
            while stack:
                node = stack.pop()
                if node.type == "preproc_include":
                    path = node.child_by_field_name("path")
                    if path is not None:
                        found.append(text(path).strip('"<>'))
                elif node.type.startswith("preproc_") and node.type not in (
                    "preproc_def",
                    "preproc_function_def",
                ):
                    stack.extend(node.named_children)
    return found


# Lines (at column 0) that open an import statement, per language. Imports are parsed from the
# file's import region only: the text up to the first top-level statement after the last such
# line. That is where imports live in every supported language (Python's function-level lazy
# imports aside), and it keeps ranking a large tree to a small fraction of a full parse.
_IMPORT_START = {
    "python": r"(?:import|from)[ \t]",
    "javascript": r"(?:import[\s{*\"']|export[^\n]*\sfrom\s|(?:const|let|var)\s[^\n]*\brequire\()",
    "go": r"import[\s(]",
    "rust": r"(?:pub(?:\([^)\n]*\))?\s+)?(?:use|mod)\s",
    "java": r"import\s",
    "c": r"[ \t]*#[ \t]*include",
}
_IMPORT_START["typescript"] = _IMPORT_START["tsx"] = _IMPORT_START["javascript"]
_IMPORT_START["cpp"] = _IMPORT_START["c"]
# "\n" first rather than "^" with re.M: a literal first character lets the regex engine skip
# ahead at memory speed (10x faster on the stdlib); the first line is checked on its own.
_IMPORT_LINE = {lang: re.compile("\n" + start) for lang, start in _IMPORT_START.items()}
_IMPORT_FIRST_LINE = {lang: re.compile(start) for lang, start in _IMPORT_START.items()}
_NEXT_STATEMENT = re.compile(r"\n(?=[A-Za-z_$@#/])")


def import_region(language: str, text: str) -> str:
    """The prefix of `text` that holds its top-level imports: up to the first top-level
    statement after the last import line ('' when there is no import line). It starts at the
    top of the file, so an 'import' inside a leading string is parsed as the string it is."""
    pattern = _IMPORT_LINE.get(language)
    if pattern is None:
        return ""
    last_end = -1
    for match in pattern.finditer(text):
        last_end = match.end()
    if last_end < 0:
        first = _IMPORT_FIRST_LINE[language].match(text)
        if first is None:
            return ""
        last_end = first.end()
    line_end = text.find("\n", last_end)
    if line_end < 0:
        return text
    nxt = _NEXT_STATEMENT.search(text, line_end)
    return text[: nxt.start() + 1] if nxt else text


def imports_of(language: str, text: str) -> list[str]:
    """Import specifiers of `text` (see `_imports` for their per-language shape)."""
    region = import_region(language, text)
    if not region:
        return []
    source = region.encode("utf-8", "surrogatepass")
    return _imports(language, parse(language, source).root_node, source)


def skeleton_of(language: str, text: str) -> str | None:
    """The skeleton of `text`: starts with a non-whitespace character and ends with a newline;
    None when the language is not supported or nothing worth keeping was found."""
    spec = SPECS.get(language)
    if spec is None:
        return None
    source = text.encode("utf-8", "surrogatepass")
    root = parse(language, source).root_node
    builder = _Builder(spec, source)
    try:
        lines = builder.children(root)
    except RecursionError:  # pathological nesting: no skeleton rather than a crash
        return None
    skeleton = "\n".join(lines).strip()
    return skeleton + "\n" if skeleton else None


def run_many(
    fn: Callable[[str, str], Any], jobs: Sequence[tuple[str, str]], threads: int = 2
) -> list[Any]:
    """fn(language, text) for many jobs, in order, on `threads` threads (parsing drops the GIL)."""
    if threads <= 1 or len(jobs) < 8:
        return [fn(lang, text) for lang, text in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: fn(*job), jobs, chunksize=8))
