"""Packing: exact additive token counts, budget fitting, determinism, prefix stability, order,
content screening, and the on-disk cache."""

from __future__ import annotations

import ast
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.context import pack_repository
from agent.context.cache import Store, default_path
from agent.context.render import render_file
from agent.errors import UsageError
from agent.tokenizer import get_tokenizer, tokenizer_json_path
from tests.conftest import git

PACKAGES = ("json", "email", "http", "urllib", "logging", "concurrent")
_SKELETON_BLOCK = re.compile(
    r'<file path="([^"]+)" language="python" mode="skeleton">\n(.*?)</file>\n', re.S
)


@pytest.fixture
def real_repo(stdlib_repo) -> Path:
    return stdlib_repo(PACKAGES)


def _block_sum(pack) -> int:
    # Counted here, not taken from the pack: no untracked files, so the footer is the closing
    # tag in XML and empty in Markdown.
    footer = get_tokenizer().count("</repository>\n") if pack.fmt == "xml" else 0
    return pack.header_tokens + sum(f.tokens for f in pack.files) + footer


def test_counts_are_exact_and_additive_on_a_real_repository(real_repo: Path):
    tok = get_tokenizer()
    full = pack_repository(real_repo)
    assert {f.mode for f in full.files} == {"full"}
    budgets = [full.total_tokens // 3, full.total_tokens // 12]
    for fmt in ("xml", "markdown"):
        for budget in [None, *budgets]:
            pack = pack_repository(real_repo, budget=budget, fmt=fmt)
            assert tok.count(pack.text) == pack.total_tokens, (fmt, budget)
            assert _block_sum(pack) == pack.total_tokens, (fmt, budget)
            assert pack.total_tokens <= pack.budget
    tight = pack_repository(real_repo, budget=budgets[1])
    assert {f.mode for f in tight.files} >= {"full", "skeleton", "listed"}


def test_additivity_against_the_reference_tokenizer(write_tree):
    """Ground truth from the `tokenizers` library (the tokenizer.json's own pre-tokenizer), on
    contents built to stress block boundaries: leading blank lines and indentation, no final
    newline, CRLF, digits and CJK right after a delimiter, backticks, an empty file."""
    from tokenizers import Tokenizer

    files = {
        "a.py": "\n\n\n    indented_first = 1\n",
        "b.py": "    x = 1\n    y = 2",
        "c.txt": "123456 numbers first\r\nsecond line\r\n",
        "d.md": "中文开头的文件\n```\ncode\n```\n",
        "e.py": "",
        "f.py": " \n\t\n",
        "g.js": "}\n\n",
        "h/i.py": "\n\n",
    }
    root = write_tree(files, git_init=True, commit=True)
    reference = Tokenizer.from_file(tokenizer_json_path())
    for fmt in ("xml", "markdown"):
        pack = pack_repository(root, fmt=fmt)
        assert len(reference.encode(pack.text, add_special_tokens=False).ids) == pack.total_tokens
    for path, content in files.items():
        block = render_file(path, content, "markdown")
        assert block.endswith("\n") and not block[0].isspace()


def test_never_over_budget_and_skeletons_parse(real_repo: Path):
    tok = get_tokenizer()
    base = pack_repository(real_repo)
    header = base.header_tokens + 10
    for budget in (
        header + 50,
        header + 2_000,
        base.total_tokens // 5,
        base.total_tokens // 2,
        base.total_tokens - 1,
    ):
        pack = pack_repository(real_repo, budget=budget)
        assert pack.total_tokens <= budget
        assert tok.count(pack.text) == pack.total_tokens
        modes = [f.mode for f in pack.files]
        if budget == base.total_tokens - 1:
            assert "full" in modes and modes.count("full") > len(modes) // 2
        for path, body in _SKELETON_BLOCK.findall(pack.text):
            ast.parse(body, filename=path)
    # The most central modules stay whole longest: under a tight budget the whole files are the
    # ones others import (email's message/utils/errors are imported all over the package).
    pack = pack_repository(real_repo, budget=base.total_tokens // 4)
    whole = {f.path for f in pack.files if f.mode == "full"}
    assert {"src/email/errors.py", "src/email/utils.py"} <= whole


def test_budget_smaller_than_the_header_is_a_usage_error(real_repo: Path):
    with pytest.raises(UsageError, match="smaller than the pack's header"):
        pack_repository(real_repo, budget=50)


def test_deterministic_across_runs_and_caches(real_repo: Path, tmp_path: Path):
    budget = 60_000
    cold = pack_repository(real_repo, budget=budget)
    warm = pack_repository(real_repo, budget=budget)
    assert warm.stats["tokenized_tokens"] == 0  # cache hit: nothing re-tokenized
    other = pack_repository(real_repo, budget=budget, store=Store(tmp_path / "elsewhere.sqlite3"))
    uncached = pack_repository(real_repo, budget=budget, store=Store(None))
    assert cold.text == warm.text == other.text == uncached.text
    assert cold.manifest()["files"] == uncached.manifest()["files"]


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _block_start(pack_text: str, path: str) -> int:
    return pack_text.index(f'<file path="{path}"')


def test_prefix_stays_after_a_one_file_edit(real_repo: Path):
    """Edits land on recently changed files, which sit at the end: the prefix survives."""
    before = pack_repository(real_repo).text
    _append(
        real_repo / "src/concurrent/futures/thread.py", "\n\ndef added_by_test():\n    return 42\n"
    )
    after = pack_repository(real_repo).text
    common = len(os.path.commonprefix([before, after]))
    assert common / len(after) >= 0.9, common / len(after)
    assert after.endswith("return 42\n</file>\n</repository>\n")  # the changed file is last


def test_creating_a_file_keeps_the_prefix(real_repo: Path):
    """New (untracked) files are blocks at the end, not entries of the tree in the header."""
    before = pack_repository(real_repo).text
    (real_repo / "src/zz_new_module.py").write_text("def brand_new():\n    return 1\n")
    after = pack_repository(real_repo).text
    assert after.startswith(before[: before.index("</repository>")])
    assert "zz_new_module.py" not in after[: after.index("</file_tree>")]


def test_editing_an_old_file_changes_bytes_only_from_its_block_on(real_repo: Path):
    """The first edit of an old file moves it to the end: everything before its old place is
    byte-identical; from then on it is last, so further edits keep >= 90% of the prefix."""
    first = pack_repository(real_repo).text
    _append(real_repo / "src/json/decoder.py", "\n\ndef first_edit():\n    return 1\n")
    second = pack_repository(real_repo).text
    start = _block_start(first, "src/json/decoder.py")
    assert second[:start] == first[:start]  # all blocks before the edited file's old place
    assert second.index("def first_edit") > len(second) - 2_000  # the edited file now comes last
    _append(real_repo / "src/json/decoder.py", "\n\ndef second_edit():\n    return 2\n")
    third = pack_repository(real_repo).text
    assert len(os.path.commonprefix([second, third])) / len(third) >= 0.9


def test_order_follows_history_oldest_first(write_tree):
    root = write_tree({}, git_init=True)
    for i, name in enumerate(["old.py", "middle.py", "new.py"]):
        (root / name).write_text(f"value = {i}\n")
        git(root, "add", name)
        git(root, "commit", "-q", "-m", name, when=1_600_000_000 + i * 1000)
    (root / "old.py").write_text("value = 'edited, uncommitted'\n")
    (root / "untracked.py").write_text("fresh = True\n")
    pack = pack_repository(root)
    assert [f.path for f in pack.files] == ["middle.py", "new.py", "old.py", "untracked.py"]
    git(root, "add", "untracked.py")
    git(root, "commit", "-qm", "add the new file", when=1_600_050_000)
    git(root, "commit", "-qam", "commit the edit", when=1_600_100_000)
    assert [f.path for f in pack_repository(root).files] == [
        "middle.py",
        "new.py",
        "untracked.py",
        "old.py",
    ]


def test_content_screening(write_tree):
    latin1 = "# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1")
    files: dict[str, str | bytes] = {
        "ok.py": "x = 1\n",
        "image.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "legacy.txt": "caf\xe9 cr\xe8me \u20ac\n".encode("cp1252"),
        "noise.bin": bytes(range(1, 256)) * 4,  # binary without a NUL byte
        "cookie.py": latin1,
        "wide.txt": "utf-16 text\n".encode("utf-16"),
        "huge.py": "x = 1\n" * 180_000,
        "package-lock.json": "{}\n",
        "vendor.min.js": "var a=1;" * 100,
        "bundle.js": "var a=1;" * 2000,
        "gen.py": "# Code generated by protoc. DO NOT EDIT.\nx = 1\n",
    }
    root = write_tree(files, git_init=True, commit=True)
    pack = pack_repository(root)
    reasons = {e.path: e.reason for e in pack.excluded}
    assert reasons["image.png"].startswith("binary")
    assert reasons["noise.bin"].startswith("binary")
    assert reasons["huge.py"].startswith("too large")
    assert reasons["package-lock.json"] == "lock file"
    assert reasons["vendor.min.js"].startswith("minified")
    assert reasons["bundle.js"].startswith("minified")
    assert reasons["gen.py"].startswith("generated")
    assert sorted(f.path for f in pack.files) == ["cookie.py", "legacy.txt", "ok.py", "wide.txt"]
    assert "name = 'café'" in pack.text and "utf-16 text" in pack.text
    assert "café crème €" in pack.text  # legacy 8-bit text is decoded, not dropped
    encodings = {f.path: f.encoding for f in pack.files}
    assert encodings == {
        "cookie.py": "latin-1",
        "legacy.txt": "windows-1252",
        "ok.py": "utf-8",
        "wide.txt": "utf-16",
    }
    bigger = pack_repository(root, max_file_bytes=2_000_000)
    assert "huge.py" in {f.path for f in bigger.files}


def test_markdown_fences_outgrow_backticks_in_content(write_tree):
    root = write_tree(
        {"doc.md": "text\n````\nfour backticks\n````\n", "a.py": "x = 1\n"},
        git_init=True,
        commit=True,
    )
    pack = pack_repository(root, fmt="markdown")
    assert "`````markdown\ntext\n````\nfour backticks\n````\n`````\n" in pack.text
    assert "## a.py\n\n```python\nx = 1\n```\n" in pack.text


def test_progress_reports_phases_of_long_work(real_repo: Path):
    phases: list[tuple[str, int, int]] = []
    pack_repository(
        real_repo,
        budget=30_000,
        progress=lambda phase, done, total: phases.append((phase, done, total)),
    )
    seen = {p for p, _, _ in phases}
    assert {"imports", "skeletons"} <= seen
    assert all(0 <= done <= total for _, done, total in phases)


def test_corrupt_cache_is_rebuilt(real_repo: Path):
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a sqlite database" * 100)
    pack = pack_repository(real_repo, budget=40_000)
    assert pack.stats["cache"] is True
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] > 0
    assert any(p.name.startswith("context.sqlite3.corrupt-") for p in path.parent.iterdir())
    assert pack_repository(real_repo, budget=40_000).text == pack.text


def test_concurrent_runs_share_the_cache(real_repo: Path):
    script = (
        "import sys; from agent.context import pack_repository; "
        "p = pack_repository(sys.argv[1], budget=50_000); print(p.total_tokens)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(real_repo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert len({out for out, _ in results}) == 1
    assert pack_repository(real_repo, budget=50_000).stats["tokenized_tokens"] == 0


def test_untracked_files_are_listed_at_the_end_not_in_the_tree(real_repo: Path):
    """The header's tree holds tracked files only (creating a file must not change the cached
    prefix); untracked files get their own list after the last block, so the model still sees
    every packed file named in a tree, and the counts stay exact."""
    (real_repo / "src/zz_new.py").write_text("def brand_new():\n    return 1\n")
    (real_repo / "NOTES.md").write_text("# scratch\n")
    for fmt in ("xml", "markdown"):
        pack = pack_repository(real_repo, fmt=fmt)
        tree = pack.text[: pack.text.index("json/")]
        footer = pack.text[-pack.text[::-1].index("\n", 2) - 200 :]
        assert "zz_new.py" not in tree and "NOTES.md" not in tree
        assert "zz_new.py" in footer and "NOTES.md" in footer
        assert get_tokenizer().count(pack.text) == pack.total_tokens
        assert pack.header_tokens + sum(f.tokens for f in pack.files) + pack.footer_tokens == (
            pack.total_tokens
        )
    assert pack.text.endswith("```text\nNOTES.md\nsrc/\n  zz_new.py\n```\n\n")


def test_tiny_budgets_are_never_exceeded(write_tree):
    files = {f"pkg/mod{i}.py": f"def f{i}(x):\n    return x * {i}\n" * (i + 1) for i in range(12)}
    files["README.md"] = "# tiny\n" * 40
    root = write_tree(files, git_init=True, commit=True)
    (root / "untracked.py").write_text("y = 2\n")
    tok = get_tokenizer()
    smallest = None
    for budget in range(40, 900, 7):
        try:
            pack = pack_repository(root, budget=budget)
        except UsageError:
            assert smallest is None  # once the header fits, every larger budget packs
            continue
        smallest = smallest or budget
        assert pack.total_tokens <= budget and tok.count(pack.text) == pack.total_tokens
        modes = {f.mode for f in pack.files}
        assert modes <= {"full", "skeleton", "listed"}
    assert smallest is not None


def test_one_file_larger_than_the_budget(write_tree):
    body = "".join(
        f"def function_{i}(a, b):\n    '''Doc {i}.'''\n    return a + b * {i}\n\n"
        for i in range(3000)
    )
    root = write_tree({"big.py": body, "small.py": "x = 1\n"}, git_init=True, commit=True)
    pack = pack_repository(root, budget=20_000)
    modes = {f.path: f.mode for f in pack.files}
    assert modes["small.py"] == "full" and modes["big.py"] in ("skeleton", "listed")
    assert pack.total_tokens <= 20_000


def test_plan_cache_hit_is_identical_and_misses_on_any_change(real_repo: Path, tmp_path: Path):
    store_path = tmp_path / "plans.sqlite3"
    budget = 50_000
    cold = pack_repository(real_repo, budget=budget, store=Store(store_path))
    warm = pack_repository(real_repo, budget=budget, store=Store(store_path))
    assert (cold.stats["plan"], warm.stats["plan"]) == ("miss", "hit")
    assert warm.text == cold.text and warm.manifest()["files"] == cold.manifest()["files"]
    assert warm.excluded == cold.excluded and warm.total_tokens == cold.total_tokens
    other_budget = pack_repository(real_repo, budget=budget + 1, store=Store(store_path))
    assert other_budget.stats["plan"] == "miss"
    _append(real_repo / "src/json/decoder.py", "\n# touched\n")
    edited = pack_repository(real_repo, budget=budget, store=Store(store_path))
    assert edited.stats["plan"] == "miss"
    assert edited.text == pack_repository(real_repo, budget=budget, store=Store(None)).text
    # A damaged plan row is recomputed, not trusted.
    with sqlite3.connect(store_path) as db:
        db.execute('UPDATE plans SET data = \'{"modes": "FFF"}\'')
    again = pack_repository(real_repo, budget=budget, store=Store(store_path))
    assert again.stats["plan"] == "miss" and again.text == edited.text


def test_plan_hit_keeps_secret_and_content_exclusions(write_tree, tmp_path: Path):
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    root = write_tree(
        {
            "app/settings.py": f"TOKEN = '{token}'\n",
            "app/main.py": "print(1)\n",
            "blob.bin": b"\x00\x01",
            "legacy.txt": "caf\xe9\n".encode("latin-1"),
        },
        git_init=True,
        commit=True,
    )
    store_path = tmp_path / "c.sqlite3"
    first = pack_repository(root, store=Store(store_path))
    second = pack_repository(root, store=Store(store_path))
    assert second.stats["plan"] == "hit"
    for pack in (first, second):
        reasons = {e.path: e.reason for e in pack.excluded}
        assert reasons["app/settings.py"] == "secret: github-token (by content)"
        assert reasons["blob.bin"].startswith("binary") and token not in pack.text
        assert {f.path: f.encoding for f in pack.files}["legacy.txt"] == "windows-1252"
