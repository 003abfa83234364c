"""Test detection, running and summaries, on real tiny projects of each ecosystem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.run_tests import is_test_invocation
from tools.testing import detect_test_command, run_test_command

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b  # bug\n"
PYTEST_TESTS = """import pytest

from calc import add, sub


def test_add():
    assert add(2, 3) == 5


def test_sub():
    assert sub(3, 1) == 2


class TestMore:
    def test_sub_zero(self):
        assert sub(0, 0) == 0

    def test_sub_neg(self):
        assert sub(1, 2) == -1


@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")


def test_uses_broken(broken):
    pass


@pytest.mark.skip(reason="later")
def test_later():
    pass
"""
UNITTEST_TESTS = """import unittest

from calc import add, sub


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_sub(self):
        self.assertEqual(sub(3, 1), 2)

    def test_error(self):
        raise KeyError("missing")

    @unittest.skip("later")
    def test_later(self):
        pass
"""


@pytest.fixture
def py_repo(make_git_repo) -> Path:
    return make_git_repo({"calc.py": CALC, "tests/test_calc.py": PYTEST_TESTS})


def test_pytest_detection_and_junit_summary(py_repo: Path):
    command = detect_test_command(py_repo)
    assert command is not None and command.endswith(" -m pytest")
    summary = run_test_command(py_repo, command, timeout_s=120)
    assert summary.framework == "pytest" and summary.parsed_from == "junit"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (2, 2, 1, 1)
    assert not summary.ok and summary.exit_code == 1
    assert summary.failing_tests == [
        "tests/test_calc.py::test_sub",
        "tests/test_calc.py::TestMore::test_sub_neg",
        "tests/test_calc.py::test_uses_broken (error)",
    ]
    first = summary.failures[0]
    assert first.message.startswith("assert 4 == 2")
    assert (
        "def test_sub():" in first.excerpt
        and "tests/test_calc.py:11: AssertionError" in first.excerpt
    )
    assert "fixture exploded" in summary.failures[2].excerpt
    assert summary.line().startswith("FAILED: 2 failed, 1 error, 2 passed, 1 skipped (exit code 1,")
    text = summary.failure_text()
    assert "FAILED tests/test_calc.py::test_sub - assert 4 == 2" in text
    data = summary.to_json()
    assert (
        data["failing_tests"] == summary.failing_tests
        and data["ok"] is False
        and data["total"] == 6
    )
    # The junit file lived in a temp dir; nothing is left in the repository.
    assert not list(py_repo.rglob("*.xml"))

    (py_repo / "calc.py").write_text(CALC.replace("a + b  # bug", "a - b"))
    (py_repo / "tests/test_calc.py").write_text(
        PYTEST_TESTS.replace("raise RuntimeError", "return 1 #")
    )
    fixed = run_test_command(py_repo, command, timeout_s=120)
    assert fixed.ok and fixed.failing_tests == [] and fixed.failure_text() == ""
    assert fixed.line().startswith("tests passed: 5 passed, 1 skipped")


def test_pytest_output_is_parsed_when_no_junit_is_written(py_repo: Path):
    # The user's own --junitxml wins over ours, so the summary falls back to pytest's output.
    command = f"{sys.executable} -m pytest --junitxml=/dev/null -rfE"
    summary = run_test_command(py_repo, command, timeout_s=120)
    assert summary.parsed_from == "output"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (2, 2, 1, 1)
    assert "tests/test_calc.py::test_sub" in summary.failing_tests
    assert (
        "assert 4 == 2" in summary.failures[0].excerpt
        or "assert 4 == 2" in summary.failures[0].message
    )


def test_unittest_summary(make_git_repo):
    repo = make_git_repo({"calc.py": CALC, "tests/test_calc.py": UNITTEST_TESTS})
    summary = run_test_command(
        repo, f"{sys.executable} -m unittest discover -v -s tests", timeout_s=120
    )
    assert summary.framework == "unittest" and summary.parsed_from == "output"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (1, 1, 1, 1)
    # unittest reports errors before failures.
    assert summary.failing_tests == [
        "test_calc.CalcTest.test_error (error)",
        "test_calc.CalcTest.test_sub",
    ]
    assert "KeyError: 'missing'" in summary.failures[0].excerpt
    assert summary.failures[1].message == "AssertionError: 4 != 2"
    assert not summary.ok


def test_unittest_is_chosen_for_a_project_venv_without_pytest(make_git_repo):
    repo = make_git_repo({"calc.py": CALC, "tests/test_calc.py": UNITTEST_TESTS})
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    command = detect_test_command(repo)
    assert command == f"{repo / '.venv/bin/python'} -m unittest discover -v -s tests"
    summary = run_test_command(repo, command, timeout_s=120)
    assert (summary.passed, summary.failed, summary.errors) == (1, 1, 1)


@pytest.mark.skipif(
    shutil.which("npm") is None or shutil.which("node") is None, reason="node/npm not installed"
)
def test_npm_test_with_node_test_runner(make_git_repo):
    repo = make_git_repo(
        {
            "package.json": '{"name": "calc", "version": "1.0.0", "scripts": {"test": "node --test"}}\n',
            "test/calc.test.js": (
                "const test = require('node:test');\n"
                "const assert = require('node:assert');\n"
                "test('adds', () => { assert.strictEqual(1 + 1, 2); });\n"
                "test('subtracts', () => { assert.strictEqual(3 - 1, 3); });\n"
                "test.skip('later', () => {});\n"
                "test('group', async (t) => {\n"
                "  await t.test('inner ok', () => {});\n"
                "  await t.test('inner bad', () => { throw new Error('boom'); });\n"
                "});\n"
            ),
        }
    )
    assert detect_test_command(repo) == "npm test"
    summary = run_test_command(repo, "npm test", timeout_s=120)
    assert summary.framework == "node"
    assert (summary.passed, summary.failed, summary.skipped) == (2, 2, 1)
    assert summary.failing_tests == ["subtracts", "inner bad"]
    assert "3 !== 2" in summary.failures[0].excerpt or "2 !== 3" in summary.failures[0].excerpt
    assert summary.failures[1].message == "boom"
    assert not summary.ok


def test_npm_placeholder_test_script_is_not_a_test_command(make_git_repo):
    repo = make_git_repo(
        {"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}'}
    )
    assert detect_test_command(repo) is None


GO_TEST = """package calc

import "testing"

func TestAdd(t *testing.T) {
	if Add(2, 3) != 5 {
		t.Fatal("bad add")
	}
}

func TestSub(t *testing.T) {
	t.Run("small", func(t *testing.T) {
		if got := Sub(3, 1); got != 2 {
			t.Errorf("Sub(3, 1) = %d, want 2", got)
		}
	})
	t.Run("zero", func(t *testing.T) {
		if Sub(0, 0) != 0 {
			t.Fatal("bad")
		}
	})
}

func TestLater(t *testing.T) { t.Skip("later") }
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="go toolchain not installed")
def test_go_test_json(make_git_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOPROXY", "off")  # offline: the module has no dependencies
    monkeypatch.setenv("GOCACHE", str(tmp_path / "gocache"))
    repo = make_git_repo(
        {
            "go.mod": "module example.com/calc\n\ngo 1.19\n",
            "calc.go": "package calc\n\nfunc Add(a, b int) int { return a + b }\nfunc Sub(a, b int) int { return a + b }\n",
            "calc_test.go": GO_TEST,
        }
    )
    command = detect_test_command(repo)
    assert command == "go test -json ./..."
    summary = run_test_command(repo, command, timeout_s=300)
    assert summary.framework == "go" and summary.parsed_from == "json"
    assert (summary.passed, summary.failed, summary.skipped) == (2, 1, 1)
    assert summary.failing_tests == ["example.com/calc.TestSub/small"]
    assert "Sub(3, 1) = 4, want 2" in summary.failures[0].message
    # A compile error is an error, not a pass.
    (repo / "calc.go").write_text("package calc\n\nfunc Add(a, b int) int { return a + }\n")
    broken = run_test_command(repo, command, timeout_s=300)
    assert not broken.ok and broken.errors == 1
    assert "example.com/calc (error)" in broken.failing_tests
    assert "syntax error" in broken.failure_text()


CARGO_LIB = """pub fn add(a: i32, b: i32) -> i32 { a + b }
pub fn sub(a: i32, b: i32) -> i32 { a + b }

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn adds() { assert_eq!(add(2, 3), 5); }
    #[test]
    fn subtracts() { assert_eq!(sub(3, 1), 2, "sub is broken"); }
    #[test]
    #[ignore]
    fn slow() {}
}
"""


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo not installed")
def test_cargo_test(make_git_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path / "target"))
    monkeypatch.setenv("CARGO_NET_OFFLINE", "true")
    repo = make_git_repo(
        {
            "Cargo.toml": '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n',
            "src/lib.rs": CARGO_LIB,
        }
    )
    assert detect_test_command(repo) == "cargo test"
    summary = run_test_command(repo, "cargo test", timeout_s=300)
    assert summary.framework == "cargo"
    assert (summary.passed, summary.failed, summary.skipped) == (1, 1, 1)
    assert summary.failing_tests == ["tests::subtracts"]
    assert "sub is broken" in summary.failures[0].message
    (repo / "src/lib.rs").write_text('pub fn add(a: i32) -> i32 { a + "x" }\n')
    broken = run_test_command(repo, "cargo test", timeout_s=300)
    assert not broken.ok and broken.errors == 1 and broken.failing_tests == ["build (error)"]
    assert "error[E" in broken.failure_text()


def test_make_test_with_pytest_inside_still_reads_junit(make_git_repo):
    repo = make_git_repo(
        {
            "calc.py": CALC,
            "checks/check_calc.py": "from calc import sub\n\n\ndef test_sub():\n    assert sub(3, 1) == 2\n",
            "Makefile": f"test:\n\t{sys.executable} -m pytest -q checks/check_calc.py\n",
        }
    )
    # No test_*.py file and no pytest configuration: only the Makefile says how to test.
    assert detect_test_command(repo) == "make test"
    summary = run_test_command(repo, "make test", timeout_s=120)
    assert summary.framework == "pytest" and summary.parsed_from == "junit"
    assert summary.failing_tests == ["checks/check_calc.py::test_sub"]
    assert not summary.ok


def test_detection_order_and_nothing_to_run(make_git_repo):
    both = make_git_repo(
        {"package.json": '{"scripts": {"test": "jest"}}', "test_x.py": "def test_x():\n    pass\n"},
        name="both",
    )
    assert detect_test_command(both).endswith("-m pytest")
    nothing = make_git_repo({"README.md": "hi\n"}, name="nothing")
    assert detect_test_command(nothing) is None


def test_failing_exit_code_without_parsable_results_is_a_failure(tmp_path: Path):
    summary = run_test_command(tmp_path, "echo 'something broke'; exit 3", timeout_s=30)
    assert not summary.ok and summary.exit_code == 3
    assert "exit code 3 but no failing test was reported" in summary.line()
    assert "something broke" in summary.failure_text()


def test_timeout_is_a_failure(tmp_path: Path):
    summary = run_test_command(tmp_path, "echo begun; sleep 30", timeout_s=1)
    assert summary.timed_out and not summary.ok and summary.exit_code is None
    assert summary.line().startswith("timed out after 1s")
    assert summary.duration_s < 10


def test_long_output_is_truncated_keeping_head_and_tail(tmp_path: Path):
    summary = run_test_command(tmp_path, "seq 1 100000; echo FINAL-LINE; exit 1", timeout_s=60)
    assert summary.to_json()["output_truncated"] and summary.elided_bytes > 0
    assert summary.output.startswith("1\n2\n") and "FINAL-LINE" in summary.output
    assert "lines elided ...]" in summary.output
    assert len(summary.output) < 25_000


def test_run_tests_tool(py_repo: Path, toolbox):
    tools = toolbox(py_repo)
    obs = tools("run_tests")
    assert not obs.ok
    assert obs.text.split("\n")[1].startswith("FAILED: 2 failed, 1 error, 2 passed, 1 skipped")
    assert "FAILED tests/test_calc.py::test_sub - assert 4 == 2" in obs.text
    assert obs.data["summary"]["failed"] == 2
    # A subset with the runner's own arguments runs without approval.
    obs = tools("run_tests", command="python3 -m pytest tests/test_calc.py::test_add -q")
    assert obs.ok and obs.data["summary"]["passed"] == 1
    # Anything else is a shell command under the approval policy.
    obs = tools("run_tests", command="pytest; touch pwned")
    assert not obs.ok and "approval" in obs.text and not (py_repo / "pwned").exists()
    obs = toolbox(py_repo, yes=True)("run_tests", command="git push origin main")
    assert not obs.ok and "refused" in obs.text


def test_run_tests_uses_the_users_test_command(py_repo: Path, toolbox):
    obs = toolbox(py_repo, test_command=f"{sys.executable} -m pytest -q tests/test_calc.py -k add")(
        "run_tests"
    )
    assert obs.ok and obs.data["summary"]["passed"] == 1


def test_run_tests_without_any_test_command(make_git_repo, toolbox):
    repo = make_git_repo({"README.md": "hi\n"})
    obs = toolbox(repo)("run_tests")
    assert not obs.ok and "no test command was found" in obs.text


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        ("pytest -x tests/test_a.py", True),
        ("python3.11 -m pytest -k foo", True),
        ("/usr/bin/python -m unittest tests.test_a", True),
        ("PYTHONPATH=src pytest", True),
        ("go test ./pkg/...", True),
        ("cargo test it_works", True),
        ("npm test -- --grep x", True),
        ("pytest && rm -rf /", False),
        ("pytest $(curl x)", False),
        ("OPENAI_API_KEY=x pytest", False),
        ("bash run_tests.sh", False),
    ],
)
def test_test_invocations(command: str, allowed: bool):
    assert is_test_invocation(command, None) is allowed


def test_configured_command_prefix_is_a_test_invocation():
    assert is_test_invocation("./ci/test.sh --fast", "./ci/test.sh")
    assert not is_test_invocation("./ci/other.sh", "./ci/test.sh")


def test_jest_output_parser_on_recorded_jest_29_output():
    """jest cannot be installed offline, so its parser is checked on the verbatim output of
    `npm test` with jest 29.7.0 (one failing test, one suite that fails to import, one skip)."""
    from tools.testing import TestSummary, _parse_output

    output = (Path(__file__).parent / "data/jest29_npm_test_output.txt").read_text()
    summary = TestSummary(command="npm test", framework="npm", exit_code=1, output=output)
    _parse_output(summary)
    assert summary.framework == "jest"
    assert (summary.passed, summary.failed, summary.errors, summary.skipped) == (1, 1, 1, 1)
    assert summary.failing_tests == ["calc › subtracts", "./broken.test.js (failed to run)"]
    assert summary.failures[0].message == "expect(received).toBe(expected) // Object.is equality"
    assert "Received: 4" in summary.failures[0].excerpt
    assert "Cannot find module './nope'" in summary.failures[1].message
    assert not summary.ok
