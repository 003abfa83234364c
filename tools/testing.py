"""Finding, running and summarising a repository's tests (for `run_tests` and `v4code fix`).

    command = detect_test_command(root)          # "python3 -m pytest", "go test -json ./...", …
    summary = run_test_command(root, command, timeout_s=600)
    summary.ok, summary.line(), summary.failure_text(), summary.to_json()

Detection order: pytest, unittest, npm test (jest, node --test, …), go test, cargo test,
make test. Results are read from structured output where the runner has one — pytest's JUnit
XML (requested through PYTEST_ADDOPTS, so it also works when pytest runs under make or tox),
`go test -json` — and from the runner's own summary lines otherwise. A failing exit code is
never reported as passing, even when no failing test could be parsed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tools.process import child_env, run_process

HEAD_BYTES = 4_000
TAIL_BYTES = 16_000
EXCERPT_HEAD_LINES = 6
EXCERPT_TAIL_LINES = 30
MAX_EXCERPTS = 8


@dataclass
class TestFailure:
    id: str
    message: str = ""  # one line: the assertion or exception
    excerpt: str = ""  # the relevant part of the traceback / output

    __test__ = False


@dataclass
class TestSummary:
    command: str
    framework: str  # pytest | unittest | jest | node | go | cargo | make | unknown
    exit_code: int | None  # None when killed by the timeout
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[TestFailure] = field(default_factory=list)
    duration_s: float = 0.0
    output: str = ""  # stdout+stderr, head and tail kept
    elided_bytes: int = 0
    timed_out: bool = False
    parsed_from: str = "none"  # junit | json | output | none
    timeout_s: float | None = None

    __test__ = False

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped

    @property
    def failing_tests(self) -> list[str]:
        return [f.id for f in self.failures]

    @property
    def ok(self) -> bool:
        """Tests pass: exit code 0 and nothing failed. Never true for a failing exit code."""
        return not self.timed_out and self.exit_code == 0 and self.failed == 0 and self.errors == 0

    def line(self) -> str:
        """One line for humans and for the model: what happened."""
        took = f"{self.duration_s:.1f}s"
        if self.timed_out:
            return f"timed out after {self.timeout_s or self.duration_s:g}s ({self._counts() or 'no results'})"
        counts = self._counts()
        if self.ok:
            return (
                f"all {self.passed} tests passed ({took})"
                if not self.skipped
                else (f"tests passed: {counts} ({took})")
            )
        if not counts or (self.failed == 0 and self.errors == 0):
            why = "no tests ran" if not counts else counts
            return f"FAILED: exit code {self.exit_code} but no failing test was reported ({why}; see the output) ({took})"
        return f"FAILED: {counts} (exit code {self.exit_code}, {took})"

    def _counts(self) -> str:
        parts = [
            f"{n} {word}"
            for n, word in (
                (self.failed, "failed"),
                (self.errors, "errors" if self.errors != 1 else "error"),
                (self.passed, "passed"),
                (self.skipped, "skipped"),
            )
            if n
        ]
        return ", ".join(parts)

    def failure_text(self) -> str:
        """The failing tests with their traceback excerpts; the output when none was parsed."""
        if self.ok:
            return ""
        parts: list[str] = []
        for failure in self.failures[:MAX_EXCERPTS]:
            head = f"FAILED {failure.id}" + (f" - {failure.message}" if failure.message else "")
            parts.append(head + ("\n" + failure.excerpt if failure.excerpt else ""))
        if len(self.failures) > MAX_EXCERPTS:
            rest = [f.id for f in self.failures[MAX_EXCERPTS:]]
            parts.append(f"... and {len(rest)} more failing: " + ", ".join(rest[:50]))
        if not parts or not any(f.excerpt for f in self.failures):
            parts.append("Output:\n" + self.output.strip())
        return "\n\n".join(parts)

    def render(self) -> str:
        """What run_tests shows the model."""
        text = f"$ {self.command}\n{self.line()}"
        details = self.failure_text()
        if details:
            text += "\n\n" + details
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "framework": self.framework,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "skipped": self.skipped,
            "total": self.total,
            "failing_tests": self.failing_tests,
            "failures": [{"id": f.id, "message": f.message} for f in self.failures],
            "duration_s": round(self.duration_s, 3),
            "timed_out": self.timed_out,
            "parsed_from": self.parsed_from,
            "output_truncated": self.elided_bytes > 0,
        }


# --------------------------------------------------------------------------------------------
# Detection

_PY_TEST_FILE = re.compile(r"(^|/)(test_[^/]*|[^/]*_test)\.py$|(^|/)tests?/[^/]*\.py$")
_NPM_PLACEHOLDER = "no test specified"


def detect_test_command(root: Path) -> str | None:
    """The command that runs this repository's tests, or None when none is recognisable."""
    root = Path(root)
    python_tests = _python_test_files(root)
    if python_tests or _has_pytest_config(root):
        python, has_pytest = _python_for(root)
        if has_pytest:
            return f"{python} -m pytest"
        if python_tests:
            return _unittest_command(root, python)
    package = root / "package.json"
    if package.is_file():
        try:
            scripts = json.loads(package.read_text(encoding="utf-8")).get("scripts") or {}
        except (ValueError, OSError, AttributeError):
            scripts = {}
        test = scripts.get("test") if isinstance(scripts, dict) else None
        if isinstance(test, str) and test.strip() and _NPM_PLACEHOLDER not in test:
            return "npm test"
    if (root / "go.mod").is_file() and shutil.which("go"):
        return "go test -json ./..."
    if (root / "Cargo.toml").is_file() and shutil.which("cargo"):
        return "cargo test"
    for name in ("GNUmakefile", "makefile", "Makefile"):
        path = root / name
        if path.is_file() and re.search(r"^test\s*:", _read(path), re.MULTILINE):
            return "make test"
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _python_test_files(root: Path) -> list[str]:
    from tools.repo import visible_files

    try:
        paths = visible_files(root).paths()
    except Exception:  # noqa: BLE001 - detection must not fail on a strange tree
        return []
    return [p for p in paths if _PY_TEST_FILE.search(p)]


def _has_pytest_config(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or (root / "conftest.py").is_file():
        return True
    checks = {
        "pyproject.toml": "[tool.pytest.ini_options]",
        "setup.cfg": "[tool:pytest]",
        "tox.ini": "[pytest]",
    }
    return any(marker in _read(root / name) for name, marker in checks.items())


def _python_for(root: Path) -> tuple[str, bool]:
    """(interpreter as written in the command, whether it has pytest).

    The project's own virtualenv (or the active one) is the project's interpreter, pytest or
    not. Without one, the first of python3/python on PATH and the interpreter running v4code
    that has pytest, else the first of them."""
    for exe in (root / ".venv/bin/python", root / "venv/bin/python", root / "env/bin/python"):
        if exe.is_file():
            return shlex.quote(str(exe)), _has_module(str(exe), "pytest")
    if os.environ.get("VIRTUAL_ENV"):
        exe = Path(os.environ["VIRTUAL_ENV"]) / "bin" / "python"
        if exe.is_file():
            return shlex.quote(str(exe)), _has_module(str(exe), "pytest")
    candidates = [(name, found) for name in ("python3", "python") if (found := shutil.which(name))]
    candidates.append((shlex.quote(sys.executable), sys.executable))
    for written, exe in candidates:
        if _has_module(exe, "pytest"):
            return written, True
    return candidates[0][0], False


@lru_cache(maxsize=32)
def _has_module(python: str, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        return (
            subprocess.run([python, "-c", probe], capture_output=True, timeout=30).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _unittest_command(root: Path, python: str) -> str:
    for name in ("tests", "test"):
        directory = root / name
        if directory.is_dir() and not (directory / "__init__.py").exists():
            return f"{python} -m unittest discover -v -s {name}"
    return f"{python} -m unittest discover -v"


# --------------------------------------------------------------------------------------------
# Running


def run_test_command(root: Path, command: str, timeout_s: float = 600.0) -> TestSummary:
    """Run `command` in `root` and summarise the result (never raises for failing tests)."""
    with tempfile.TemporaryDirectory(prefix="v4code-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        addopts = f"--junitxml={shlex.quote(str(junit))} -o junit_family=xunit1"
        existing = os.environ.get("PYTEST_ADDOPTS", "")
        env, _ = child_env(
            extra={
                "PYTEST_ADDOPTS": f"{existing} {addopts}".strip(),
                "CI": "true",  # watch modes (jest, vitest) would never exit
                "NO_COLOR": "1",
                "FORCE_COLOR": "0",
                "CARGO_TERM_COLOR": "never",
            }
        )
        result = run_process(
            command,
            Path(root),
            timeout_s=timeout_s,
            env=env,
            head_bytes=HEAD_BYTES,
            tail_bytes=TAIL_BYTES,
        )
        summary = TestSummary(
            command=command,
            framework=_framework(command),
            exit_code=result.exit_code,
            duration_s=result.duration_s,
            output=result.output,
            elided_bytes=result.elided_bytes,
            timed_out=result.timed_out,
            timeout_s=timeout_s,
        )
        parsed = _parse_junit(junit) if junit.is_file() else None
        if parsed is not None:
            summary.framework = "pytest"
            _apply(summary, parsed, "junit")
        else:
            _parse_output(summary)
    return summary


# The first pattern the command matches names its framework (whose output parser applies).
_FRAMEWORKS = (
    ("pytest", re.compile(r"\bpytest\b|py\.test")),
    ("unittest", re.compile(r"\bunittest\b")),
    ("go", re.compile(r"\bgo\s+test\b")),
    ("cargo", re.compile(r"\bcargo\s+(test|nextest)\b")),
    ("npm", re.compile(r"\b(npm|yarn|pnpm|npx|bun)\b|\bjest\b|\bnode\b")),
    ("make", re.compile(r"\bmake\b")),
)


def _framework(command: str) -> str:
    return next((name for name, pattern in _FRAMEWORKS if pattern.search(command)), "unknown")


@dataclass
class _Parsed:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[TestFailure] = field(default_factory=list)
    framework: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.passed or self.failed or self.errors or self.skipped or self.failures)


def _apply(summary: TestSummary, parsed: _Parsed, source: str) -> None:
    summary.passed, summary.failed = parsed.passed, parsed.failed
    summary.errors, summary.skipped = parsed.errors, parsed.skipped
    summary.failures = parsed.failures
    summary.parsed_from = source
    if parsed.framework:
        summary.framework = parsed.framework


def _parse_output(summary: TestSummary) -> None:
    text = summary.output
    if summary.framework == "go":
        parsed = _parse_go_json(text)
        if not parsed.empty:
            _apply(summary, parsed, "json")
            return
    order = {
        "pytest": [_parse_pytest_text],
        "unittest": [_parse_unittest],
        "cargo": [_parse_cargo],
        "npm": [_parse_jest, _parse_node_tap],
        "go": [_parse_go_text],
    }.get(summary.framework, [])
    everything = [_parse_pytest_text, _parse_unittest, _parse_cargo, _parse_jest, _parse_node_tap,
                  _parse_go_json, _parse_go_text]  # fmt: skip
    for parser in order + [p for p in everything if p not in order]:
        parsed = parser(text)
        if not parsed.empty:
            _apply(summary, parsed, "json" if parser is _parse_go_json else "output")
            return


def excerpt(text: str, head: int = EXCERPT_HEAD_LINES, tail: int = EXCERPT_TAIL_LINES) -> str:
    lines = text.strip("\n").split("\n")
    if len(lines) <= head + tail + 1:
        return "\n".join(lines)
    cut = len(lines) - head - tail
    return "\n".join(lines[:head] + [f"    [... {cut} lines ...]"] + lines[-tail:])


def _first_line(text: str | None) -> str:
    for line in (text or "").strip().split("\n"):
        if line.strip():
            return line.strip()[:300]
    return ""


# -- pytest ------------------------------------------------------------------------------------


def _parse_junit(path: Path) -> _Parsed | None:
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError):
        return None
    parsed = _Parsed(framework="pytest")
    for case in tree.getroot().iter("testcase"):
        test_id = _junit_id(case)
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed" if child.tag == "failure" else "errors"
                setattr(parsed, kind, getattr(parsed, kind) + 1)
                outcome = kind
                label = test_id if child.tag == "failure" else f"{test_id} (error)"
                message = child.get("message") or _first_line(child.text)
                parsed.failures.append(TestFailure(label, message, excerpt(child.text or message)))
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        if outcome == "passed":
            parsed.passed += 1
        elif outcome == "skipped":
            parsed.skipped += 1
    return parsed


def _junit_id(case: ET.Element) -> str:
    """Rebuild pytest's node id (`tests/test_x.py::TestA::test_b`) from xunit1 attributes."""
    name = case.get("name", "?")
    classname = case.get("classname", "")
    file = case.get("file")
    if file and file.endswith(".py"):
        module = file[:-3].replace("/", ".").replace("\\", ".")
        inner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
        return "::".join([file, *(inner.split(".") if inner else []), name])
    if not classname:
        return name  # collection errors are reported with the module as the name
    return f"{classname}::{name}"


_PYTEST_SUMMARY = re.compile(
    r"^=*\s*((?:\d+ (?:failed|passed|skipped|errors?|xfailed|xpassed|deselected|warnings?)"
    r"(?:, )?)+)(?: in [\d.]+s.*?)?\s*=*\s*$",
    re.MULTILINE,
)
_PYTEST_SHORT = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.MULTILINE)
_PYTEST_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$", re.MULTILINE)


def _parse_pytest_text(text: str) -> _Parsed:
    parsed = _Parsed()
    summaries = _PYTEST_SUMMARY.findall(text)
    if not summaries:
        return parsed
    for count, word in re.findall(r"(\d+) (\w+)", summaries[-1]):
        n = int(count)
        if word == "failed":
            parsed.failed = n
        elif word == "passed" or word == "xpassed":
            parsed.passed += n
        elif word in ("skipped", "xfailed"):
            parsed.skipped += n
        elif word.startswith("error"):
            parsed.errors = n
    sections = {}
    matches = list(_PYTEST_SECTION.finditer(text))
    for k, match in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = text[match.end() : end]
        body = re.split(r"^=+ ", body, maxsplit=1, flags=re.MULTILINE)[0]
        sections[match.group(1).strip()] = body
    for kind, test_id, message in _PYTEST_SHORT.findall(text):
        tail = test_id.split("::")
        key = ".".join(tail[1:]) if len(tail) > 1 else test_id
        body = sections.get(key) or sections.get(tail[-1]) or ""
        label = test_id if kind == "FAILED" else f"{test_id} (error)"
        parsed.failures.append(TestFailure(label, (message or "").strip(), excerpt(body)))
    parsed.framework = "pytest"
    return parsed


# -- unittest ----------------------------------------------------------------------------------

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s", re.MULTILINE)
_UNITTEST_RESULT = re.compile(r"^(OK|FAILED)(?: \(([^)]*)\))?\s*$", re.MULTILINE)
_UNITTEST_BLOCK = re.compile(
    r"^={40,}\n(FAIL|ERROR): (\S+) \(([^)]*)\)[^\n]*\n-{40,}\n(.*?)(?=^={40,}\n|^-{40,}\nRan |\Z)",
    re.MULTILINE | re.DOTALL,
)


def _parse_unittest(text: str) -> _Parsed:
    parsed = _Parsed()
    ran = _UNITTEST_RAN.findall(text)
    if not ran:
        return parsed
    total = sum(int(n) for n in ran)
    counts = {"failures": 0, "errors": 0, "skipped": 0}
    for _, details in _UNITTEST_RESULT.findall(text):
        for key, value in re.findall(r"([a-z ]+)=(\d+)", details):
            key = key.strip()
            if key in counts:
                counts[key] += int(value)
    for kind, name, where, body in _UNITTEST_BLOCK.findall(text):
        test_id = where if where.endswith("." + name) else f"{where}.{name}"
        label = test_id if kind == "FAIL" else f"{test_id} (error)"
        lines = [line for line in body.strip().split("\n") if line.strip()]
        message = lines[-1].strip() if lines else ""
        parsed.failures.append(TestFailure(label, message[:300], excerpt(body)))
    parsed.failed, parsed.errors, parsed.skipped = (
        counts["failures"],
        counts["errors"],
        counts["skipped"],
    )
    parsed.passed = max(0, total - parsed.failed - parsed.errors - parsed.skipped)
    parsed.framework = "unittest"
    return parsed


# -- jest / node --test ----------------------------------------------------------------------------


_JEST_SUITE = re.compile(r"^\s*(?:FAIL|PASS)\s+(\S+)", re.MULTILINE)


def _parse_jest(text: str) -> _Parsed:
    parsed = _Parsed()
    tests = re.findall(r"^Tests:\s+(.*\d+ total)\s*$", text, re.MULTILINE)
    suites = re.findall(r"^Test Suites:\s+(.*\d+ total)\s*$", text, re.MULTILINE)
    if not tests and not suites:
        return parsed
    counts = dict((w, int(n)) for n, w in re.findall(r"(\d+) (\w+)", tests[-1])) if tests else {}
    parsed.failed = counts.get("failed", 0)
    parsed.passed = counts.get("passed", 0)
    parsed.skipped = counts.get("skipped", 0) + counts.get("todo", 0)
    suite_lines = [(m.start(), m.group(1)) for m in _JEST_SUITE.finditer(text)]
    markers = list(re.finditer(r"^\s*● (.*)$", text, re.MULTILINE))
    broken_suites = 0
    for k, marker in enumerate(markers):
        end = markers[k + 1].start() if k + 1 < len(markers) else len(text)
        body = text[marker.end() : end]
        body = re.split(
            r"^(?:Test Suites:|Tests:|(?:PASS|FAIL) )", body, maxsplit=1, flags=re.MULTILINE
        )[0]
        suite = next((name for pos, name in reversed(suite_lines) if pos < marker.start()), "")
        title = marker.group(1).strip()
        if title == "Test suite failed to run":
            broken_suites += 1
            title = f"{suite or 'a test suite'} (failed to run)"
        parsed.failures.append(TestFailure(title, _first_line(body), excerpt(body)))
    parsed.errors = broken_suites
    parsed.framework = "jest"
    return parsed


_TAP_LINE = re.compile(r"^( *)(ok|not ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?$")


def _parse_node_tap(text: str) -> _Parsed:
    """node --test (TAP reporter): count leaf tests; a parent fails when a subtest fails."""
    parsed = _Parsed()
    lines = text.split("\n")
    deeper_seen: dict[int, bool] = {}
    found = False
    for k, line in enumerate(lines):
        match = _TAP_LINE.match(line)
        if not match:
            continue
        found = True
        indent, status, name, directive = (
            len(match.group(1)),
            match.group(2),
            match.group(3),
            match.group(4),
        )
        # Subtests are printed before their parent: a line with deeper lines since the previous
        # line at its own level is a parent, whose result only repeats its subtests'.
        is_parent = deeper_seen.get(indent, False)
        deeper_seen[indent] = False
        for level in range(indent):
            deeper_seen[level] = True
        if is_parent:
            continue
        if directive:
            parsed.skipped += 1
        elif status == "ok":
            parsed.passed += 1
        else:
            parsed.failed += 1
            block = []
            for follow in lines[k + 1 :]:
                if _TAP_LINE.match(follow) or follow.strip() == "...":
                    break
                block.append(follow)
            body = "\n".join(block)
            error = re.search(r"error: (?:\|-\n)?\s*(.+)", body)
            parsed.failures.append(
                TestFailure(name, error.group(1).strip("'") if error else "", excerpt(body))
            )
    if found:
        parsed.framework = "node"
    return parsed


# -- go ------------------------------------------------------------------------------------------


_GO_BUILD_FAILED = re.compile(r"^FAIL\s+(\S+)\s+\[(?:build|setup) failed\]")


def _parse_go_json(text: str) -> _Parsed:
    parsed = _Parsed()
    outputs: dict[tuple[str, str], list[str]] = {}
    results: dict[tuple[str, str], str] = {}
    package_fail: dict[str, bool] = {}
    stray: list[str] = []
    for line in text.split("\n"):
        if not line.startswith("{"):
            if line.strip():
                stray.append(line)
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        package, test, action = event.get("Package", ""), event.get("Test"), event.get("Action")
        key = (package, test or "")
        if action == "output":
            outputs.setdefault(key, []).append(event.get("Output", ""))
        elif action in ("pass", "fail", "skip"):
            if test:
                results[key] = action
            elif action == "fail":
                package_fail[package] = True
    # Build failures print no JSON at all in older Go versions: "FAIL\tpkg [build failed]".
    for line in stray:
        match = _GO_BUILD_FAILED.match(line)
        if match:
            package_fail.setdefault(match.group(1), True)
    if not results and not package_fail:
        return parsed
    parents = {(p, t.rsplit("/", 1)[0]) for p, t in results if "/" in t}
    for key, action in sorted(results.items()):
        if key in parents:
            continue
        if action == "pass":
            parsed.passed += 1
        elif action == "skip":
            parsed.skipped += 1
        else:
            parsed.failed += 1
            body = "".join(outputs.get(key, []))
            message = next(
                (ln.strip() for ln in body.split("\n") if re.search(r"\.go:\d+:", ln)), ""
            )
            parsed.failures.append(TestFailure(f"{key[0]}.{key[1]}", message, excerpt(body)))
    failing_packages = {package for (package, _), action in results.items() if action == "fail"}
    for package in package_fail:
        if package not in failing_packages:
            parsed.errors += 1
            body = "".join(outputs.get((package, ""), [])) + "\n".join(stray)
            detail = next((ln for ln in stray if re.search(r"\.go:\d+", ln)), "")
            parsed.failures.append(
                TestFailure(
                    f"{package} (error)", detail.strip() or _first_line(body), excerpt(body)
                )
            )
    parsed.framework = "go"
    return parsed


def _parse_go_text(text: str) -> _Parsed:
    parsed = _Parsed()
    for status, name in re.findall(r"^\s*--- (PASS|FAIL|SKIP): (\S+)", text, re.MULTILINE):
        if status == "PASS":
            parsed.passed += 1
        elif status == "SKIP":
            parsed.skipped += 1
        else:
            parsed.failed += 1
            parsed.failures.append(TestFailure(name))
    if not parsed.empty:
        parsed.framework = "go"
    return parsed


# -- cargo -------------------------------------------------------------------------------------

_CARGO_RESULT = re.compile(
    r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;", re.MULTILINE
)
_CARGO_TEST = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)", re.MULTILINE)


def _parse_cargo(text: str) -> _Parsed:
    parsed = _Parsed()
    results = _CARGO_RESULT.findall(text)
    for passed, failed, ignored in results:
        parsed.passed += int(passed)
        parsed.failed += int(failed)
        parsed.skipped += int(ignored)
    sections = dict(
        re.findall(
            r"^---- (.+?) stdout ----\n(.*?)(?=^---- |^failures:|\Z)",
            text,
            re.MULTILINE | re.DOTALL,
        )
    )
    for name, status in _CARGO_TEST.findall(text):
        if status == "FAILED":
            body = sections.get(name, "")
            panic = re.search(r"panicked at [^\n]*\n?(.*)", body)
            message = _first_line(panic.group(1)) if panic else _first_line(body)
            parsed.failures.append(TestFailure(name, message, excerpt(body)))
    if not results and ("error[E" in text or "error: could not compile" in text):
        errors = [
            m.group(0)
            for m in re.finditer(r"^error(\[E\d+\])?: .*(?:\n(?!\n).*){0,12}", text, re.MULTILINE)
        ]
        parsed.errors = 1
        parsed.failures.append(
            TestFailure(
                "build (error)",
                _first_line(errors[0]) if errors else "",
                excerpt("\n\n".join(errors)),
            )
        )
    if not parsed.empty:
        parsed.framework = "cargo"
    return parsed
