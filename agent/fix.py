"""`v4code fix`: run the tests; if they fail, plan, edit, re-run — until they pass or a limit.

Every change is journalled before it happens (agent/undo.py), so `v4code undo` can put the
files back; the result carries the exact patch of the fix and, with --commit, a commit that
holds only the fix.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prompts
from agent.errors import ExitCode, UsageError
from agent.fileio import atomic_write
from agent.gitcmd import IDENTITY, run_git
from agent.loop import Agent, Limits, Recoverable, Run, RunResult, RunSetup, Stop, nudge
from agent.providers.base import Reply, ToolCall
from agent.undo import (
    ChangeTracker,
    FileChange,
    SnapshotError,
    deferred_interrupt,
    diffstat,
    git_toplevel,
    unified_patch,
)
from tools.testing import TestSummary

DEFAULT_FIX_TURNS = 40
DEFAULT_MAX_ITERATIONS = 10
FAILURES_CAP = 6_000  # characters of failure output restated to the model per iteration

# Out of turns or going in circles with tests still failing is "tests still failing" (exit 3);
# a cost or time limit is a limit (exit 4), as for ask.
FIX_OUTCOMES = {
    "turns": ("tests_failing", ExitCode.TESTS_FAILING),
    "stuck": ("tests_failing", ExitCode.TESTS_FAILING),
    # The tests pass, but what was asked for besides could not be done (exit 1).
    "commit": ("commit_failed", ExitCode.INTERNAL),
    "output": ("patch_failed", ExitCode.INTERNAL),
}


@dataclass
class FixResult(RunResult):
    test_command: str | None = None
    tests_before: dict[str, Any] | None = None
    tests_after: dict[str, Any] | None = None
    already_passing: bool = False
    iterations: int = 0
    plan: str | None = None
    changes: list[FileChange] = field(default_factory=list)
    patch: str = ""
    patch_file: str | None = None
    commit: str | None = None
    snapshot_ref: str | None = None
    unrestorable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = self.common_json("fix")
        data.update(
            patch=self.patch,
            changed_files=sorted(c.path for c in self.changes),
            tests_before=self.tests_before,
            tests_after=self.tests_after,
            iterations=self.iterations,
            plan=self.plan,
            already_passing=self.already_passing,
            test_command=self.test_command,
            diffstat=diffstat(self.changes),
            patch_file=self.patch_file,
            commit=self.commit,
            snapshot_ref=self.snapshot_ref,
            unrestorable_files=self.unrestorable,
        )
        return data


class FixAgent(Agent):
    def __init__(
        self,
        *args: Any,
        run: Run,
        test_command: str,
        tests: TestSummary,
        max_iterations: int,
        instructions: str,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.run_, self.test_command, self.tests = run, test_command, tests
        self.max_iterations, self.instructions = max_iterations, instructions
        self.plan: str | None = None
        self.iterations = 0

    def after_turn(self, reply: Reply, changed: list[str]) -> None:
        if self.plan is None and reply.text.strip():
            self.plan = reply.text.strip()
            self.log.emit("plan", text=self.plan)
            if not reply.tool_calls:
                raise Recoverable(nudge("nudge_proceed"))
        if changed:
            self.iterations += 1
            self.tests = run_tests(
                self.run_,
                self.test_command,
                phase="after",
                iteration=self.iterations,
                remaining=self.remaining(),
            )
            if self.tests.ok:
                raise Stop("done")
            if self.iterations >= self.max_iterations:
                raise Stop(
                    "iterations",
                    f"tests still fail after {self.iterations} iterations "
                    f"(--max-iterations {self.max_iterations})",
                )
            raise Recoverable(
                nudge(
                    "reminder_fix",
                    iteration=self.iterations,
                    max_iterations=self.max_iterations,
                    command=self.test_command,
                    summary=self.tests.line(),
                    failures=failures_text(self.tests),
                    instructions=self.instructions,
                )
            )
        if reply.tool_calls:
            return  # reading and searching: carry on
        if reply.finish_reason == "length":
            self.idle(nudge("nudge_truncated"))
        if not reply.text.strip():
            self.idle(
                nudge(
                    "nudge_empty",
                    what="Make the fix with `edit_file`, or read what you need first.",
                )
            )
        self.idle(nudge("nudge_no_tool_call"))

    def on_changed(self, call: ToolCall, changes: list[FileChange]) -> None:
        for change in changes:
            self.log.emit(
                "edit",
                turn=self.turns,
                tool=call.name,
                path=change.path,
                kind=change.kind,
                diff=unified_patch([change]),
            )


def run_fix(
    setup: RunSetup,
    *,
    limits: Limits | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    patch_path: Path | None = None,
    commit: bool = False,
    instructions: str = "",
) -> FixResult:
    """Make the failing tests of `setup.root` pass; see the module docstring."""
    limits = limits or Limits(max_turns=DEFAULT_FIX_TURNS)
    run = Run(setup, "fix", tool_kind="fix")
    result = FixResult(run_id=run.log.run_id)
    tracker = ChangeTracker(run.root, run.log.run_id)
    stop = Stop("interrupted", "interrupted (Ctrl-C)")
    try:
        # Bad options fail now (exit 2), before any test run or model call, never after the fix.
        if commit:
            check_can_commit(run.root)
        if patch_path is not None:
            check_patch_path(patch_path)
        from tools import detect_test_command

        command = setup.test_command or detect_test_command(run.root)
        if not command:
            raise UsageError(
                "no test command found in this repository",
                hint='Pass one with --test-cmd, e.g. --test-cmd "python -m pytest -q".',
            )
        result.test_command = command
        before = run_tests(run, command, phase="before", iteration=0, remaining=limits.timeout_s)
        result.tests_before = result.tests_after = summary_json(before)
        if before.exit_code in (126, 127) and before.total == 0:
            # The shell could not start it: no edit of the code can fix that.
            tail = "\n".join(before.output.strip().splitlines()[-5:])
            raise UsageError(
                f"the test command could not run (exit code {before.exit_code}): {command}",
                hint=(tail + "\n" if tail else "") + "Pass a working one with --test-cmd.",
            )
        if before.ok:
            result.already_passing = True
            stop = Stop("done")
        else:
            extra = f"\nAlso: {instructions.strip()}" if instructions.strip() else ""
            task = prompts.render(
                "task_fix",
                command=command,
                summary=before.line(),
                failures=failures_text(before),
                instructions=extra,
            )
            run.pack_prompt(prompts.load("system_fix"), task)
            agent = run.make_agent(
                FixAgent,
                limits,
                tracker=tracker,
                run=run,
                test_command=command,
                tests=before,
                max_iterations=max_iterations,
                instructions=extra,
            )
            stop = run.drive(agent)
    except KeyboardInterrupt:
        pass  # `stop` says interrupted; the journal below still makes the run undoable
    except BaseException as exc:
        tracker.finalize()
        run.fail(exc)
        raise
    # The run is over: journal, patch, commit and result are finished even if Ctrl-C arrives now
    # (a half-done wrap-up would print a second, bare result); the run's outcome stands.
    with deferred_interrupt(reraise=False):
        agent = run.agent
        if isinstance(agent, FixAgent):  # also after Ctrl-C: what the run got to
            result.plan, result.iterations = agent.plan, agent.iterations
            result.tests_after = summary_json(agent.tests)
        result.changes = tracker.finalize()
        result.unrestorable = tracker.unrestorable()
        result.snapshot_ref = tracker.snapshot.ref if tracker.snapshot else None
        result.patch = unified_patch(result.changes)
        if patch_path is not None:
            try:
                atomic_write(patch_path, result.patch.encode("utf-8", errors="surrogateescape"))
                result.patch_file = str(patch_path)
            except OSError as exc:
                failed = f"the patch could not be written to {patch_path}: {exc}"
                stop = (
                    Stop("output", failed)
                    if stop.kind == "done"
                    else Stop(stop.kind, f"{stop.message}; also, {failed}")
                )
        if commit and stop.kind == "done" and result.changes:
            try:
                result.commit = commit_fix(run.root, result)
            except (SnapshotError, OSError) as exc:
                stop = Stop("commit", f"the fix works but could not be committed: {exc}")
        run.finish(result, stop, outcomes=FIX_OUTCOMES)
    return result


def check_can_commit(root: Path) -> None:
    top = git_toplevel(root)
    if top is None:
        raise UsageError("--commit needs a git repository", hint=f"{root} is not inside one.")
    if not _git_out(["rev-parse", "--verify", "-q", "HEAD"], top, check=False):
        raise UsageError(
            "--commit needs a commit to build on: this repository has no commits yet",
            hint="Commit your files first, or run without --commit (the fix stays in the "
            "working tree; --patch FILE saves it as a diff).",
        )


def check_patch_path(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"--patch {path}: is a directory; give a file name")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise UsageError(f"--patch {path}: cannot create a file in {parent}")


# --- tests ---------------------------------------------------------------------------------


def run_tests(
    run: Run, command: str, *, phase: str, iteration: int, remaining: float | None
) -> TestSummary:
    from tools import run_test_command

    timeout = (
        run.setup.test_timeout_s
        if remaining is None
        else max(1.0, min(run.setup.test_timeout_s, remaining))
    )
    run.log.status("running the tests")
    summary = run_test_command(run.root, command, timeout_s=timeout)
    run.log.emit("test_run", phase=phase, iteration=iteration, **summary_json(summary))
    return summary


def summary_json(summary: TestSummary) -> dict[str, Any]:
    return {**summary.to_json(), "summary": summary.line()}


def failures_text(summary: TestSummary) -> str:
    text = summary.failure_text()
    if len(text) > FAILURES_CAP:
        half = FAILURES_CAP // 2
        text = (
            text[:half]
            + f"\n[... {len(text) - FAILURES_CAP} characters elided ...]\n"
            + text[-half:]
        )
    return text


# --- commit --------------------------------------------------------------------------------


def commit_fix(root: Path, result: FixResult) -> str:
    """Commit exactly the fix on top of HEAD; the user's other changes stay uncommitted.

    The commit is built in a temporary index (HEAD + the fix's patch), so files the user changed
    but the fix did not never enter it. Hooks do not run (plumbing commands).
    """
    top = git_toplevel(root)
    assert top is not None
    prefix = root.relative_to(top).as_posix()
    head = _git_out(["rev-parse", "--verify", "-q", "HEAD"], top, check=False)
    with tempfile.TemporaryDirectory(prefix="v4code-commit-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git_out(["read-tree", head] if head else ["read-tree", "--empty"], top, env=env)
        patch_file = Path(tmp) / "fix.patch"
        patch_file.write_bytes(result.patch.encode("utf-8", errors="surrogateescape"))
        directory = [f"--directory={prefix}"] if prefix not in ("", ".") else []
        applied = run_git(["apply", "--cached", *directory, str(patch_file)], top, env=env)
        if not applied.ok:
            raise SnapshotError(
                "your uncommitted changes in the fixed files overlap the fix, so it cannot be "
                "committed alone (it is left in the working tree): " + applied.error_text()
            )
        tree = _git_out(["write-tree"], top, env=env)
    message = commit_message(result)
    parents = ["-p", head] if head else []
    try:
        commit = _git_out(["commit-tree", tree, *parents], top, input=message)
    except SnapshotError:  # no user identity configured: commit as v4code rather than not at all
        commit = _git_out(["commit-tree", tree, *parents], top, env=IDENTITY, input=message)
    _git_out(["update-ref", "-m", "v4code fix", "HEAD", commit, head or "0" * 40], top)
    # The user's index still has the old blobs of the fixed files; bring them up to the commit
    # unless the user had staged something there (then their staging is left as it was).
    for change in result.changes:
        path = f"{prefix}/{change.path}" if prefix not in ("", ".") else change.path
        staged = _git_out(["ls-files", "-s", "--", path], top, check=False).split()
        old = (
            _git_out(["rev-parse", "-q", "--verify", f"{head}:{path}"], top, check=False)
            if head
            else ""
        )
        if (staged[1] if staged else "") == old:
            _git_out(["reset", "-q", commit, "--", path], top, check=False)
    return commit


def commit_message(result: FixResult) -> str:
    plan_line = next(
        (line.strip(" -*#") for line in (result.plan or "").splitlines() if line.strip(" -*#")), ""
    )
    subject = "Fix failing tests" + (f": {plan_line}" if plan_line else "")
    if len(subject) > 72:
        subject = subject[:71] + "…"
    before, after = result.tests_before or {}, result.tests_after or {}
    body = [
        f"Tests: `{result.test_command}`",
        f"  before: {before.get('summary', '?')}",
        f"  after:  {after.get('summary', '?')}",
        "",
        "Files: " + ", ".join(sorted(c.path for c in result.changes)),
    ]
    if result.plan:
        body += ["", "Plan:", *("  " + line for line in result.plan.strip().splitlines())]
    body += ["", f"Made by v4code fix (run {result.run_id or 'unknown'})."]
    return subject + "\n\n" + "\n".join(body) + "\n"


def _git_out(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
) -> str:
    result = run_git(args, cwd, env=env, input=input)
    if check and not result.ok:
        raise SnapshotError(f"git {args[0]} failed: {result.error_text()}")
    return result.text().strip() if result.ok else ""
