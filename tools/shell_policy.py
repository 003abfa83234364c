"""The approval policy of `run_command`: read-only, needs approval, or forbidden.

    classify("git status && ls src", root)  -> Verdict("read_only", ...)
    classify("pip install -e .", root)      -> Verdict("needs_approval", ...)
    classify("git push origin main", root)  -> Verdict("forbidden", ...)

A command is read-only only if every part of it is: each command of every pipeline and list
(`|`, `&&`, `||`, `;`, `&`, subshells, groups), every command substitution, and what `sudo`,
`env`, `xargs`, `bash -c`, `eval`… run. Anything this parser does not understand needs
approval; nothing unknown is ever read-only.

Forbidden commands are refused even with `--yes`: they destroy work that `v4code undo` cannot
bring back (files outside the repository, uncommitted changes, the object store), reach outside
the machine irreversibly (push, publish), or damage the machine (devices, permissions on /,
fork bombs, `curl … | sh`).

The lexer is our own rather than `shlex`, because the policy must know whether a `;`, `|` or
`>` was quoted (a word) or not (an operator), and where `$(…)` and backticks start and end.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.context.rules import secret_name_rule
from tools.paths import is_git_dir_name

READ_ONLY = "read_only"
NEEDS_APPROVAL = "needs_approval"
FORBIDDEN = "forbidden"
_RANK = {READ_ONLY: 0, NEEDS_APPROVAL: 1, FORBIDDEN: 2}


@dataclass(frozen=True)
class Verdict:
    level: str
    reason: str = ""

    @property
    def read_only(self) -> bool:
        return self.level == READ_ONLY

    @property
    def forbidden(self) -> bool:
        return self.level == FORBIDDEN


_OK = Verdict(READ_ONLY, "read-only")


def _approval(reason: str) -> Verdict:
    return Verdict(NEEDS_APPROVAL, reason)


def _forbid(reason: str) -> Verdict:
    return Verdict(FORBIDDEN, reason)


def _worst(verdicts: Iterable[Verdict]) -> Verdict:
    worst = _OK
    for verdict in verdicts:
        if _RANK[verdict.level] > _RANK[worst.level]:
            worst = verdict
    return worst


def classify(command: str, root: Path) -> Verdict:
    """Classify a shell command line that would run with `root` as working directory."""
    real_root = Path(os.path.realpath(root))
    try:
        return _Analyzer(real_root).script(command, _State(real_root), depth=0).verdict
    except _ParseError as exc:
        return _approval(f"the command could not be parsed ({exc}), so it needs approval")


def simple_command_words(command: str) -> list[str] | None:
    """The words of `command` if it is one plain command (no operators, redirections or
    expansions), else None. Leading VAR=value assignments are kept."""
    try:
        toks = _lex(command, [])
    except _ParseError:
        return None
    if not toks or any(t.op or t.dynamic for t in toks):
        return None
    return [t.text for t in toks]


# --------------------------------------------------------------------------------------------
# Lexer


class _ParseError(Exception):
    pass


@dataclass
class _Tok:
    text: str
    op: bool = False  # an unquoted shell operator
    dynamic: bool = False  # contains an expansion: its value is only known at run time
    subs: tuple[int, ...] = ()  # indices of command substitutions inside this word


_OPERATORS = sorted(
    [";;&", ";;", ";&", "&&", "||", "|&", "&>>", "&>", ">>", ">&", "<&", "<>", ">|", "<<<", "<<-",
     "<<", ";", "&", "|", "(", ")", "<", ">"],
    key=len,
    reverse=True,
)  # fmt: skip
_REDIRECTS = frozenset({"&>>", "&>", ">>", ">&", "<&", "<>", ">|", "<<<", "<<-", "<<", "<", ">"})
_LIST_OPS = frozenset({";;&", ";;", ";&", "&&", "||", ";", "&", "(", ")"})
_PIPE_OPS = frozenset({"|", "|&"})


def _lex(s: str, subs: list[str]) -> list[_Tok]:
    toks: list[_Tok] = []
    buf: list[str] = []
    state = {"word": False, "dynamic": False, "subs": []}

    def flush() -> None:
        if state["word"]:
            toks.append(_Tok("".join(buf), dynamic=state["dynamic"], subs=tuple(state["subs"])))
        buf.clear()
        state.update(word=False, dynamic=False, subs=[])

    def add(text: str, *, dynamic: bool = False) -> None:
        buf.append(text)
        state["word"] = True
        state["dynamic"] = state["dynamic"] or dynamic

    def add_sub(inner: str) -> None:
        state["subs"].append(len(subs))
        add(f"\x00{len(subs)}\x00", dynamic=True)
        subs.append(inner)

    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            flush()
            i += 1
        elif c == "\n":
            flush()
            toks.append(_Tok(";", op=True))
            i += 1
        elif c == "#" and not state["word"]:
            end = s.find("\n", i)
            i = n if end == -1 else end
        elif c == "\\":
            if s.startswith("\\\n", i):
                i += 2
            else:
                add(s[i + 1 : i + 2])
                i += 2
        elif c == "'":
            end = s.find("'", i + 1)
            if end == -1:
                raise _ParseError("unterminated single quote")
            add(s[i + 1 : end])
            i = end + 1
        elif c == '"':
            i = _lex_double_quoted(s, i + 1, add, add_sub)
        elif c in "$`":
            i = _expansion(s, i, add, add_sub)
        elif c in "<>" and s.startswith("(", i + 1):
            flush()
            inner, i = _balanced(s, i + 2)
            add_sub(inner)
            flush()
        else:
            op = next((o for o in _OPERATORS if s.startswith(o, i)), None)
            if op is None:
                add(c)
                i += 1
                continue
            if op in _REDIRECTS and state["word"] and "".join(buf).isdigit():
                buf.clear()  # `2>file`: the 2 is a file descriptor, not an argument
                state.update(word=False)
            flush()
            toks.append(_Tok(op, op=True))
            i += len(op)
    flush()
    return toks


def _lex_double_quoted(s: str, i: int, add, add_sub) -> int:
    add("")  # "" is an (empty) word
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
            add(s[i + 1] if s[i + 1] != "\n" else "")
            i += 2
        elif c in "$`":
            i = _expansion(s, i, add, add_sub)
        else:
            add(c)
            i += 1
    raise _ParseError("unterminated double quote")


def _expansion(s: str, i: int, add, add_sub) -> int:
    """The `$` or backtick expansion at `i`, lexed the same unquoted and inside double quotes:
    a command substitution becomes a sub, anything else a dynamic part of the word. Returns the
    index after it."""
    if s.startswith("$((", i):
        inner, i = _balanced(s, i + 3, depth=2)
        _arithmetic(inner, add, add_sub)
    elif s.startswith("$(", i):
        inner, i = _balanced(s, i + 2)
        add_sub(inner)
    elif s[i] == "`":
        inner, i = _backticks(s, i + 1)
        add_sub(inner)
    else:
        add("$", dynamic=True)
        i += 1
    return i


def _arithmetic(inner: str, add, add_sub) -> None:
    """`$(( … ))`: a number, but bash expands `$( … )` and backticks inside it (array
    subscripts such as `x[$(cmd)]` run cmd), so those are analysed like any substitution."""
    nested: list[str] = []
    _lex(inner, nested)
    for sub in nested:
        add_sub(sub)
    add("0", dynamic=True)


def _balanced(s: str, i: int, depth: int = 1) -> tuple[str, int]:
    """Text up to the parenthesis closing an opening one just before `i`, quote-aware."""
    start, n = i, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            end = s.find("'", i + 1)
            if end == -1:
                raise _ParseError("unterminated single quote")
            i = end + 1
            continue
        if c == '"':
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[start:i], i + 1
        i += 1
    raise _ParseError("unbalanced parentheses")


def _backticks(s: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif s[i] == "`":
            return "".join(out), i + 1
        else:
            out.append(s[i])
            i += 1
    raise _ParseError("unterminated backquote")


# --------------------------------------------------------------------------------------------
# Analysis


def _assignment_verdict(text: str) -> Verdict:
    """`NAME=value` before a command, alone, or given to env/export/declare."""
    name = re.split(r"[\[+=]", text, maxsplit=1)[0]
    if _HARMLESS_VARS.fullmatch(name):
        return _OK
    return _approval(f"it sets {name}, which can change what programs run or read")


@dataclass
class _State:
    cwd: Path | None  # None once a `cd` went somewhere only known at run time


@dataclass
class _Result:
    verdict: Verdict
    fetches: bool = False  # downloads something (curl, wget …)
    interpreter: bool = False  # a shell or language interpreter (can run what it is fed)
    sub_fetch: bool = False  # one of its words is a substitution that downloads


_FORK_BOMB = re.compile(r"([\w:.]+)\s*\(\s*\)\s*\{[^}]*?\1\s*\|\s*\1\s*&")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_SKIP_KEYWORDS = frozenset({"!", "{", "}", "then", "else", "elif", "if", "do", "while", "until",
                            "fi", "done", "esac"})  # fmt: skip
_COMPOUND_KEYWORDS = frozenset({"for", "case", "select", "function", "coproc"})

_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "csh", "tcsh"})
_MULTICALL = frozenset({"busybox", "toybox"})  # `busybox rm -rf ~` is `rm -rf ~`
_INTERPRETER_PREFIXES = ("python", "pypy", "perl", "ruby", "node", "nodejs", "php", "deno", "bun",
                         "lua", "Rscript", "osascript", "tclsh", "pwsh", "powershell")  # fmt: skip
_FETCHERS = frozenset({"curl", "wget", "aria2c", "http", "https", "xh", "fetch", "lynx", "links"})
_NETWORK = _FETCHERS | {"ssh", "scp", "sftp", "nc", "ncat", "netcat", "telnet", "ftp", "socat"}

_READ_ONLY_PROGRAMS = frozenset({
    "ls", "cat", "head", "tail", "wc", "grep", "egrep", "fgrep", "zgrep", "ag", "ack", "pwd",
    "echo", "printf", "which", "whereis", "type", "file", "stat", "du", "df", "diff", "cmp",
    "cut", "tr", "nl", "less", "more", "basename", "dirname", "realpath", "readlink", "md5sum",
    "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum", "b2sum", "cksum", "hexdump",
    "od", "strings", "column", "jq", "tac", "rev", "paste", "join", "comm", "fold", "fmt",
    "expand", "unexpand", "seq", "sleep", "true", "false", "test", "[", "[[", "whoami", "id",
    "groups", "uname", "arch", "printenv", "ps", "pgrep", "uptime", "free", "nproc", "locale",
    "cal", "expr", "bc", "zcat", "bzcat", "xzcat", "lsof", "getconf", "tty", "logname",
    "users", "who", "w", "lscpu", "lsblk", "lsmod", "dmesg", "factor", "numfmt", "look",
    "shuf", "tput", "sum", "wait", "hash", "ulimit", "umask", "alias", "set", "shopt",
    "export", "unset", "local", "declare", "typeset", "readonly", "read", "let", "return",
    "exit", "shift", "getopts", "break", "continue", ":", "cd", "pushd", "popd", "dirs",
    "jobs", "help", "man", "info", "apropos", "cloc", "tokei", "scc",
})  # fmt: skip
# Where a program named by its path is the system's own; `./ls` or `src/cat` could be anything.
_SYSTEM_BIN_DIRS = ("/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/",
                    "/usr/local/sbin/", "/opt/homebrew/bin/")  # fmt: skip
# Environment variables a read-only command may set. Anything else can change what a program
# runs (GIT_EXTERNAL_DIFF, LD_PRELOAD, PATH, PAGER, LESSOPEN, GIT_CONFIG_*, HOME, BASH_ENV …),
# so setting it needs approval. All-lowercase names are shell variables by convention.
_HARMLESS_VARS = re.compile(
    r"[a-z_][a-z0-9_]*|LC_[A-Z]+|LANG|LANGUAGE|TZ|COLUMNS|LINES|TERM|NO_COLOR|FORCE_COLOR|"
    r"CLICOLOR(_FORCE)?|GREP_COLORS?|LS_COLORS|POSIXLY_CORRECT|CI"
)
# Builtins that evaluate array subscripts in their arguments: `let 'a[$(cmd)]'`,
# `[[ 1 -eq 'a[$(cmd)]' ]]`, `test -v 'a[$(cmd)]'` run cmd although it is quoted.
_SUBSCRIPT_BUILTINS = frozenset({"[[", "[", "test", "let", "declare", "typeset", "local", "export",
                                 "readonly", "unset", "read", "printf", "getopts", "wait",
                                 "mapfile", "readarray"})  # fmt: skip
# Programs whose extra operands (as `xargs` appends them) can only be more things to read.
_XARGS_SAFE = frozenset({"cat", "head", "tail", "wc", "grep", "egrep", "fgrep", "ls", "stat",
                         "md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum",
                         "b2sum", "cksum", "basename", "dirname", "realpath", "readlink", "echo",
                         "du", "diff", "cmp", "nl", "strings", "od", "hexdump", "zcat",
                         "true", "false"})  # fmt: skip
_VERSION_ARGS = frozenset({"--version", "-V", "-version", "version", "--help", "-h", "help"})
_TEMP_DIRS = tuple(
    dict.fromkeys(
        os.path.realpath(p) for p in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir())
    )
)
_HARMLESS_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero",
                               "/dev/random", "/dev/urandom", "/dev/fd/1", "/dev/fd/2"})  # fmt: skip
_DISK_TOOLS = frozenset({"mkfs", "mke2fs", "mkswap", "mkntfs", "mkdosfs", "wipefs", "fdisk",
                         "sfdisk", "cfdisk", "parted", "gdisk", "sgdisk", "blkdiscard",
                         "badblocks", "hdparm", "nvme", "zpool", "lvremove", "vgremove",
                         "pvremove", "cryptsetup", "mdadm"})  # fmt: skip
_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff", "telinit", "init", "kexec",
                    "killall5"})  # fmt: skip
_SYSTEMCTL_POWER = frozenset({"poweroff", "reboot", "halt", "kexec", "isolate"})
_GH_REMOTE_CHANGES = frozenset({"repo delete", "release create", "release delete", "pr merge"})
_PUBLISH = {
    "npm": {"publish", "unpublish", "deprecate", "owner", "adduser", "login", "token"},
    "yarn": {"publish", "npm"},
    "pnpm": {"publish"},
    "bun": {"publish"},
    "cargo": {"publish", "yank", "owner", "login"},
    "twine": {"upload", "register"},
    "gem": {"push", "yank", "owner"},
    "docker": {"push", "login"},
    "podman": {"push", "login"},
    "poetry": {"publish"},
    "flit": {"publish"},
    "hatch": {"publish"},
    "uv": {"publish"},
    "dotnet": {"nuget"},
}
_FIND_FILTERS = frozenset({
    "name", "iname", "path", "ipath", "wholename", "iwholename", "regex", "iregex", "type",
    "newer", "mtime", "mmin", "ctime", "cmin", "atime", "amin", "size", "empty", "user", "group",
    "perm", "links", "inum", "samefile", "lname", "ilname", "maxdepth", "mindepth", "prune",
})  # fmt: skip
# Long options whose abbreviations must be recognised (see git_subcommand).
_GIT_LONG_OPTIONS = ("--hard", "--merge", "--keep", "--force", "--discard-changes",
                     "--overwrite-ignore", "--output", "--open-files-in-pager", "--upload-pack",
                     "--lost-found", "--unset", "--unset-all", "--remove-section",
                     "--rename-section", "--replace-all", "--edit", "--delete", "--prune",
                     "--exec", "--no-preserve-root")  # fmt: skip
# Git's own commands: an alias can never shadow these, so they are not looked up as aliases.
_GIT_BUILTINS = frozenset({
    "add", "am", "apply", "archive", "bisect", "branch", "bundle", "checkout", "cherry-pick",
    "clean", "clone", "commit", "config", "fetch", "format-patch", "gc", "init", "merge", "mv",
    "notes", "pull", "push", "rebase", "reflog", "remote", "reset", "restore", "revert", "rm",
    "sparse-checkout", "stash", "submodule", "switch", "tag", "worktree", "update-index",
    "update-ref", "symbolic-ref", "read-tree", "write-tree", "commit-tree", "hash-object",
    "prune", "repack", "replace", "maintenance", "filter-branch", "send-email", "request-pull",
})  # fmt: skip
_GIT_READ_ONLY = frozenset({
    "status", "log", "diff", "show", "blame", "annotate", "rev-parse", "rev-list", "ls-files",
    "ls-tree", "ls-remote", "grep", "describe", "shortlog", "cat-file", "merge-base", "name-rev",
    "show-ref", "for-each-ref", "count-objects", "whatchanged", "help", "version", "check-ignore",
    "check-attr", "var", "diff-tree", "diff-files", "diff-index", "range-diff", "show-branch",
    "cherry", "verify-commit", "verify-tag", "fsck", "check-ref-format",
})  # fmt: skip
# Options of wrapper programs that consume the next word.
_WRAPPERS: dict[str, frozenset[str]] = {
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "-P", "-u", "--class", "--classdata"}),
    "nohup": frozenset(),
    "time": frozenset({"-f", "--format", "-o", "--output"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "setsid": frozenset(),
    "unbuffer": frozenset(),
    "chronic": frozenset(),
    "caffeinate": frozenset(),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "watch": frozenset({"-n", "--interval", "-d", "--differences"}),
    "xargs": frozenset(
        "-I -n -L -P -d -s -E -a --max-args --max-lines --max-procs --delimiter --arg-file "
        "--max-chars".split()
    ),
    "sudo": frozenset(
        "-u -g -C -h -p -r -t -U -D --user --group --host --prompt --role --type --other-user "
        "--chdir".split()
    ),
    "doas": frozenset({"-u", "-C"}),
}


class _Analyzer:
    def __init__(self, root: Path):
        self.root = root
        self.home = os.path.realpath(os.path.expanduser("~"))
        self._git_aliases: dict[str, str | None] = {}

    # -- scripts, lists and pipelines ------------------------------------------------------

    def script(self, text: str, state: _State, depth: int) -> _Result:
        if depth > 6:
            return _Result(_approval("the command nests shells too deeply to check"))
        if _FORK_BOMB.search(text):
            return _Result(_forbid("this is a fork bomb"))
        subs: list[str] = []
        toks = _lex(text, subs)
        sub_results = [self.script(inner, _State(state.cwd), depth + 1) for inner in subs]
        verdicts = [r.verdict for r in sub_results]
        fetches = any(r.fetches for r in sub_results)
        pipelines: list[list[list[_Tok]]] = [[[]]]
        for tok in toks:
            if tok.op and tok.text in _PIPE_OPS:
                pipelines[-1].append([])
            elif tok.op and tok.text in _LIST_OPS:
                pipelines.append([[]])
            else:
                pipelines[-1][-1].append(tok)
        for pipeline in pipelines:
            results = [self.simple(cmd, state, sub_results, depth) for cmd in pipeline if cmd]
            verdicts.extend(r.verdict for r in results)
            fetches = fetches or any(r.fetches for r in results)
            for k, res in enumerate(results):
                if res.interpreter and (res.sub_fetch or any(prev.fetches for prev in results[:k])):
                    verdicts.append(
                        _forbid("it runs code downloaded from the network (like `curl … | sh`)")
                    )
        return _Result(_worst(verdicts), fetches=fetches)

    def simple(self, toks: list[_Tok], state: _State, subs: list[_Result], depth: int) -> _Result:
        """One simple command: redirections, assignments, then the program and its words."""
        words: list[_Tok] = []
        inputs: list[_Tok] = []
        verdicts: list[Verdict] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if not tok.op:
                words.append(tok)
                i += 1
                continue
            if i + 1 >= len(toks) or toks[i + 1].op:
                raise _ParseError(f"redirection {tok.text} without a target")
            target = toks[i + 1]
            i += 2
            if tok.text in ("<<", "<<-"):
                verdicts.append(_approval("it uses a here-document"))
            elif tok.text in (">&", "<&") and (target.text.isdigit() or target.text == "-"):
                continue
            elif tok.text == "<":
                inputs.append(target)
            elif tok.text not in ("<<<", "<&"):
                verdicts.append(self.writes([target], state, f"it writes to '{target.text}'"))
        while words and _ASSIGNMENT.match(words[0].text):
            verdicts.append(_assignment_verdict(words.pop(0).text))
        while words and words[0].text in _SKIP_KEYWORDS and not words[0].dynamic:
            words.pop(0)
        if not words:
            return _Result(_worst(verdicts))
        if words[0].text in _COMPOUND_KEYWORDS:
            verdicts.append(_approval(f"it uses a shell `{words[0].text}` construct"))
            rest = [w for w in words[1:] if w.text != "{"]
            if words[0].text == "coproc" and rest:
                # `coproc CMD` (or `coproc NAME { CMD; }`) runs CMD in the background.
                named = len(words) > 2 and words[2].text == "{"
                rest = rest[1:] if named else rest
                if rest:
                    verdicts.append(self.program(rest, state, subs, depth).verdict)
            return _Result(_worst(verdicts))
        secret = next(
            (w.text for w in words[1:] + inputs if not w.dynamic and secret_name_rule(w.text)), None
        )
        if secret is not None:
            verdicts.append(_approval(f"it reads '{secret}', which looks like it holds secrets"))
        result = self.program(words, state, subs, depth)
        result.fetches = result.fetches or any(subs[k].fetches for w in words for k in w.subs)
        verdicts.append(result.verdict)
        result.verdict = _worst(verdicts)
        return result

    # -- programs ----------------------------------------------------------------------------

    def program(self, words: list[_Tok], state: _State, subs: list[_Result], depth: int) -> _Result:
        head, args = words[0], words[1:]
        if head.dynamic:
            return _Result(_approval("the program to run is only known at run time"))
        # Case-insensitive file systems run `Git` or `RM` as git and rm.
        prog = PurePosixPath(head.text).name.lower()
        texts = [a.text for a in args]
        sub_fetch = any(subs[k].fetches for a in args for k in a.subs)
        local = "/" in head.text and not head.text.startswith(_SYSTEM_BIN_DIRS)
        if local and not prog.startswith(_INTERPRETER_PREFIXES):
            # `./ls` is whatever the repository (or the model) put there, not ls.
            return _Result(_approval(f"`{head.text}` is a program from the working tree"))

        if prog in _MULTICALL:
            return self.program(args, state, subs, depth) if args else _Result(_OK)
        if prog in _SUBSCRIPT_BUILTINS and any("$(" in t or "`" in t for t in texts):
            return _Result(
                _approval(f"`{prog}` evaluates the command substitution in its argument")
            )
        if prog in _WRAPPERS:
            return self.wrapper(prog, args, state, subs, depth)
        if prog in ("pytest", "py.test") or (
            prog.startswith("python") and texts[:2] == ["-m", "pytest"]
        ):
            basetemp = self.pytest_basetemp(args, state)
            if basetemp.forbidden:
                return _Result(basetemp)
        if prog == "eval":
            inner = self.script(" ".join(texts), state, depth + 1)
            verdict = _worst([inner.verdict, _approval("`eval` runs generated code")])
            return _Result(verdict, inner.fetches, interpreter=True, sub_fetch=sub_fetch)
        if prog in ("source", "."):
            return _Result(
                _approval("it runs a shell script"), interpreter=True, sub_fetch=sub_fetch
            )
        if prog == "env":
            return self.env(args, state, subs, depth)
        if prog in _SHELLS:
            return self.shell(prog, args, state, depth, sub_fetch)
        if prog.startswith(_INTERPRETER_PREFIXES):
            if len(texts) == 1 and texts[0] in _VERSION_ARGS and not local:
                return _Result(_OK)
            return _Result(_approval(f"`{prog}` runs code"), interpreter=True, sub_fetch=sub_fetch)
        if len(texts) == 1 and texts[0] in _VERSION_ARGS and "/" not in head.text:
            return _Result(_OK)
        if prog == "git":
            return _Result(self.git(args, state, depth))
        if prog in _FETCHERS:
            return _Result(_approval("it accesses the network"), fetches=True)
        if prog in _NETWORK:
            return _Result(_approval("it accesses the network"))
        if prog in _PUBLISH and texts and texts[0] in _PUBLISH[prog]:
            return _Result(_forbid(f"`{prog} {texts[0]}` publishes outside this machine"))
        if prog == "gh" and " ".join(texts[:2]) in _GH_REMOTE_CHANGES:
            return _Result(_forbid(f"`gh {' '.join(texts[:2])}` changes a remote repository"))
        if prog.split(".")[0] in _DISK_TOOLS:
            return _Result(_forbid(f"`{prog}` formats, partitions or erases disks"))
        if prog in _POWER or (prog == "systemctl" and set(texts) & _SYSTEMCTL_POWER):
            return _Result(_forbid(f"`{prog}` shuts down or reboots the machine"))
        if prog == "cd" or prog == "pushd":
            self.change_dir(args, state)
            return _Result(_OK)
        handler = getattr(self, "prog_" + prog.replace("-", "_"), None)
        if handler is not None:
            return _Result(handler(args, state))
        if prog in _READ_ONLY_PROGRAMS:
            return _Result(_OK)
        return _Result(_approval(f"`{prog}` is not known to be read-only"))

    def pytest_basetemp(self, args: list[_Tok], state: _State) -> Verdict:
        """pytest deletes its --basetemp directory before the run: never an existing one."""
        for k, arg in enumerate(args):
            if arg.text.startswith("--basetemp="):
                target = _Tok(arg.text.split("=", 1)[1], dynamic=arg.dynamic)
            elif arg.text == "--basetemp" and k + 1 < len(args):
                target = args[k + 1]
            else:
                continue
            place = self.where(target, state)
            resolved = Path(os.path.realpath(os.path.join(state.cwd or self.root, target.text)))
            encloses_repo = not target.dynamic and self.root.is_relative_to(resolved)
            fresh = place == "inside" and not self.exists(target, state)
            if not encloses_repo and (place == "temp" or fresh):
                return _approval("pytest --basetemp deletes and recreates that directory")
            return _forbid(
                f"pytest --basetemp={target.text} deletes that directory and everything in it"
            )
        return _OK

    def exists(self, tok: _Tok, state: _State) -> bool:
        base = state.cwd or self.root
        return os.path.lexists(os.path.join(base, tok.text))

    def wrapper(self, prog: str, args: list[_Tok], state: _State, subs, depth) -> _Result:
        takes_value = _WRAPPERS[prog]
        i = 0
        while i < len(args) and args[i].text.startswith("-") and args[i].text != "-":
            opt = args[i].text
            i += 2 if opt in takes_value else 1
            if opt == "--":
                break
        if prog == "timeout" and i < len(args):
            i += 1  # the duration
        rest = args[i:]
        if prog == "command" and args and args[0].text in ("-v", "-V"):
            return _Result(_OK)
        if prog == "xargs" and not rest:
            return _Result(_OK)  # xargs without a command runs echo
        if prog in ("sudo", "doas") and not rest:
            listing = {"-l", "--list", "-v", "--validate", "-k", "-K", "-V", "--version"}
            if {a.text for a in args} <= listing:
                return _Result(_OK)
            return _Result(_approval(f"`{prog}` without a command opens a root shell"))
        if not rest:
            return _Result(_OK)
        if prog == "watch" and len(rest) == 1:
            return self.script(rest[0].text, state, depth + 1)  # watch runs its argument via sh -c
        if prog == "xargs":
            # The arguments xargs reads are only known at run time: `echo push | xargs git`.
            as_written = self.program(rest, state, subs, depth)
            if as_written.verdict.forbidden:
                return as_written
            appended = [*rest, _Tok("\x00xargs\x00", dynamic=True)]
            inner = self.program(appended, state, subs, depth)
            name = PurePosixPath(rest[0].text).name.lower()
            if not inner.verdict.read_only or name not in _XARGS_SAFE or rest[0].dynamic:
                # Not forbidden for what it reads from its input (`find … | xargs rm -rf`), but
                # not read-only either: the arguments are only known at run time.
                inner.verdict = _worst(
                    [
                        as_written.verdict,
                        _approval(f"xargs gives `{rest[0].text}` arguments only known at run time"),
                    ]
                )
            return inner
        inner = self.program(rest, state, subs, depth)
        if prog in ("sudo", "doas"):
            inner.verdict = _worst([inner.verdict, _approval(f"it uses {prog}")])
        elif prog == "time" and any(a.text in ("-o", "--output") for a in args[:i]):
            inner.verdict = _worst([inner.verdict, _approval("`time -o` writes a file")])
        return inner

    def env(self, args: list[_Tok], state: _State, subs, depth) -> _Result:
        assigned: list[Verdict] = []
        i = 0
        while i < len(args):
            text = args[i].text
            if text in ("-u", "--unset", "-C", "--chdir"):
                if text in ("-C", "--chdir"):
                    state = _State(None)
                i += 2
            elif text in ("-S", "--split-string") and i + 1 < len(args):
                return self.script(" ".join(a.text for a in args[i + 1 :]), state, depth + 1)
            elif _ASSIGNMENT.match(text):
                assigned.append(_assignment_verdict(text))
                i += 1
            elif text.startswith("-"):
                i += 1
            else:
                break
        if i >= len(args):
            return _Result(_worst(assigned))  # prints the (already scrubbed) environment
        result = self.program(args[i:], state, subs, depth)
        result.verdict = _worst([result.verdict, *assigned])
        return result

    def shell(
        self, prog: str, args: list[_Tok], state: _State, depth: int, sub_fetch: bool
    ) -> _Result:
        has_c = False
        for arg in args:
            text = arg.text
            if text.startswith("-") and not text.startswith("--") and len(text) > 1:
                has_c = has_c or "c" in text[1:]
                continue
            if text.startswith("--") or (text.startswith("+") and len(text) > 1):
                continue
            if has_c:
                if arg.dynamic:
                    return _Result(_approval("the script it runs is only known at run time"),
                                   interpreter=True, sub_fetch=sub_fetch)  # fmt: skip
                inner = self.script(text, state, depth + 1)
                return _Result(inner.verdict, inner.fetches, interpreter=True, sub_fetch=sub_fetch)
            return _Result(
                _approval(f"`{prog}` runs a script"), interpreter=True, sub_fetch=sub_fetch
            )
        return _Result(_approval(f"`{prog}` runs commands from its input"), interpreter=True,
                       sub_fetch=sub_fetch)  # fmt: skip

    def change_dir(self, args: list[_Tok], state: _State) -> None:
        targets = [a for a in args if not a.text.startswith("-") or a.text == "-"]
        if not targets or targets[0].text.startswith("~"):
            state.cwd = Path(self.home)
            return
        target = targets[0]
        relative_to_unknown = state.cwd is None and not target.text.startswith("/")
        if target.dynamic or target.text == "-" or relative_to_unknown:
            state.cwd = None
        else:
            state.cwd = Path(os.path.realpath(os.path.join(state.cwd or "/", target.text)))

    # -- where a path points ------------------------------------------------------------------

    def where(self, tok: _Tok, state: _State) -> str:
        """inside | root | git | temp | outside | device | unknown"""
        text = tok.text
        if tok.dynamic:
            if re.match(r"\$\{?HOME\b", text):
                return "outside"
            return "unknown"
        if "{" in text and "}" in text:
            # Brace expansion: `rm -rf {..,build}` removes the parent directory too.
            alternatives = _brace_alternatives(text)
            if alternatives is None:
                return "unknown"
            if alternatives != [text]:
                places = [self.where(_Tok(alt), state) for alt in alternatives]
                return min(places, key=_PLACE_SEVERITY.index)
        if text.startswith("~"):
            return "outside"
        if text.startswith("/dev/"):
            return "inside" if text in _HARMLESS_DEVICES else "device"
        if not text.startswith("/") and state.cwd is None:
            return "unknown"
        base = state.cwd or self.root
        parts = PurePosixPath(text).parts
        glob_at = next((k for k, part in enumerate(parts) if any(ch in part for ch in "*?[")), None)
        if glob_at is not None:
            parent = os.path.join(base, *parts[:glob_at]) if glob_at else str(base)
            resolved = os.path.realpath(parent)
            # `rm -rf *` at the top of the repository is as bad as removing the repository.
            if glob_at == len(parts) - 1 and re.fullmatch(r"\.?\*(\.\*)?|\.\[[^]]*\]\*", parts[-1]):
                if Path(resolved) == self.root:
                    return "root"
            return self.place(Path(resolved), glob=True)
        return self.place(Path(os.path.realpath(os.path.join(base, text))))

    def place(self, path: Path, glob: bool = False) -> str:
        if path == self.root:
            return "inside" if glob else "root"
        if path.is_relative_to(self.root):
            rel = path.relative_to(self.root).parts
            return "git" if any(is_git_dir_name(p) for p in rel) else "inside"
        if str(path).startswith("/dev/"):
            return "inside" if str(path) in _HARMLESS_DEVICES else "device"
        if any(path == Path(t) or path.is_relative_to(t) for t in _TEMP_DIRS):
            return "outside" if str(path) in _TEMP_DIRS else "temp"
        return "outside"

    def writes(self, targets: list[_Tok], state: _State, reason: str) -> Verdict:
        verdicts = []
        for target in targets:
            place = self.where(target, state)
            if place == "device":
                verdicts.append(_forbid(f"it writes to the device {target.text}"))
            elif place == "git":
                verdicts.append(_forbid("it writes inside .git"))
            elif place == "outside":
                verdicts.append(_forbid(f"it writes outside the repository ({target.text})"))
            elif place == "inside" and target.text in _HARMLESS_DEVICES:
                continue
            else:
                verdicts.append(_approval(reason))
        return _worst(verdicts)

    # -- programs with rules of their own -----------------------------------------------------

    def prog_rm(self, args: list[_Tok], state: _State) -> Verdict:
        options, targets = _split_options(args)
        recursive = any(
            o in ("--recursive", "-r", "-R") or (not o.startswith("--") and set(o[1:]) & {"r", "R"})
            for o in options
        )
        if "--no-preserve-root" in options:
            return _forbid("rm --no-preserve-root")
        if not targets:
            return _approval("rm deletes files")
        for target in targets:
            place = self.where(target, state)
            if place == "root":
                return _forbid("it deletes the repository itself")
            if place in ("outside", "temp", "device"):
                return _forbid(f"it deletes outside the repository ({target.text})")
            if place == "git":
                return _forbid("it deletes inside .git")
            if place == "unknown" and recursive:
                return _forbid(
                    f"rm -r on '{target.text}', which is only known at run time (it could "
                    "expand to / or the repository root)"
                )
        return _approval("rm deletes files")

    prog_unlink = prog_rm

    def prog_rmdir(self, args: list[_Tok], state: _State) -> Verdict:
        return self.prog_rm([a for a in args if not a.text.startswith("-")], state)

    def prog_shred(self, args: list[_Tok], state: _State) -> Verdict:
        verdict = self.prog_rm([a for a in args if not a.text.startswith("-")], state)
        return verdict if verdict.forbidden else _approval("shred destroys file contents")

    def prog_dd(self, args: list[_Tok], state: _State) -> Verdict:
        for arg in args:
            if arg.text.startswith("of="):
                target = _Tok(arg.text[3:], dynamic=arg.dynamic)
                return _worst([self.writes([target], state, "dd writes a file"),
                               _approval("dd writes a file")])  # fmt: skip
        return _approval("dd copies raw data")

    def prog_chmod(self, args: list[_Tok], state: _State) -> Verdict:
        options, operands = _split_options(args)
        recursive = any(o in ("-R", "--recursive") or (o[:1] == "-" and "R" in o) for o in options)
        targets = operands[1:]  # the first operand is the mode / owner
        for target in targets:
            place = self.where(target, state)
            if target.text == "/" or place in ("outside", "temp", "device", "git"):
                return _forbid(f"it changes permissions outside the repository ({target.text})")
            if recursive and place == "unknown":
                return _forbid(
                    f"recursive permission change on '{target.text}', which is only known at "
                    "run time"
                )
        return _approval("it changes file permissions or ownership")

    prog_chown = prog_chgrp = prog_chattr = prog_setfacl = prog_chmod

    def prog_mv(self, args: list[_Tok], state: _State) -> Verdict:
        _, operands = _split_options(args)
        for operand in operands:
            place = self.where(operand, state)
            if place == "root":
                return _forbid("it moves the repository itself")
            if place in ("git", "device"):
                return _forbid(f"it moves {operand.text}")
            if place == "outside":
                return _forbid(f"it moves files outside the repository ({operand.text})")
        return _approval("mv moves files")

    def prog_cp(self, args: list[_Tok], state: _State) -> Verdict:
        options, operands = _split_options(args, takes_value={"-t", "--target-directory", "-S"})
        dest = [operands[-1]] if operands else []
        for opt in options:
            if opt.startswith("--target-directory="):
                dest = [_Tok(opt.split("=", 1)[1])]
        return self.writes(dest, state, "it copies or links files") if dest else _approval("cp")

    prog_install = prog_ln = prog_rsync = prog_cp

    def prog_tee(self, args: list[_Tok], state: _State) -> Verdict:
        _, operands = _split_options(args)
        return self.writes(operands, state, "it writes files") if operands else _OK

    def prog_touch(self, args: list[_Tok], state: _State) -> Verdict:
        _, operands = _split_options(args, takes_value={"-d", "-t", "-r", "--date", "--reference"})
        return self.writes(operands, state, "it creates or changes files")

    prog_mkdir = prog_truncate = prog_mkfifo = prog_touch

    def prog_find(self, args: list[_Tok], state: _State) -> Verdict:
        starts: list[_Tok] = []
        for arg in args:
            if arg.text.startswith(("-", "(", "!")):
                break
            starts.append(arg)
        texts = [a.text for a in args]
        verdicts: list[Verdict] = []
        writing = {"-delete", "-fprint", "-fprint0", "-fprintf", "-fls", "-ok", "-okdir"}
        if writing & set(texts):
            verdicts.append(_approval(f"find {sorted(writing & set(texts))[0]} changes files"))
        for k, text in enumerate(texts):
            if text in ("-exec", "-execdir"):
                inner: list[_Tok] = []
                for arg in args[k + 1 :]:
                    if arg.text in (";", "+"):
                        break
                    inner.append(arg)
                if inner:
                    verdicts.append(self.program(inner, state, [], 1).verdict)
        verdict = _worst(verdicts)
        if verdict.level == NEEDS_APPROVAL:
            filtered = any(t.lstrip("-") in _FIND_FILTERS for t in texts if t.startswith("-"))
            for start in starts or [_Tok(".")]:
                place = self.where(start, state)
                if place in ("outside", "temp", "device", "unknown", "git"):
                    return _forbid(f"find changes files outside the repository ({start.text})")
                if place == "root" and not filtered:
                    return _forbid("find would delete or change every file of the repository")
        return verdict

    def prog_sed(self, args: list[_Tok], state: _State) -> Verdict:
        scripts: list[_Tok] = []
        positional: list[_Tok] = []
        sandbox = False
        it = iter(args)
        for arg in it:
            text = arg.text
            if arg.dynamic and text.startswith("-"):
                return _approval("the sed options are only known at run time")
            if text == "--sandbox":  # GNU sed refuses w, e and r then
                sandbox = True
            elif text.startswith("--in-place") or text == "-i":
                return _approval("sed -i edits files in place")
            elif text in ("--expression", "-e") or text.startswith("--expression="):
                script = text.split("=", 1)[1] if "=" in text else None
                scripts.append(_Tok(script) if script is not None else next(it, _Tok("")))
            elif text in ("--file", "-f") or text.startswith("--file="):
                return _approval("sed runs a script file")
            elif text.startswith("--"):
                continue
            elif text.startswith("-") and len(text) > 1:
                # A cluster of short options: e, f and l take the rest (or the next word).
                for k, flag in enumerate(text[1:], start=1):
                    if flag == "i":
                        return _approval("sed -i edits files in place")
                    if flag == "f":
                        return _approval("sed runs a script file")
                    if flag == "e":
                        rest = text[k + 1 :]
                        scripts.append(_Tok(rest) if rest else next(it, _Tok("")))
                        break
                    if flag == "l":
                        if not text[k + 1 :]:
                            next(it, None)
                        break
            else:
                positional.append(arg)
        if not scripts and positional:
            scripts.append(positional[0])
        if sandbox:
            return _OK
        for script in scripts:
            if script.dynamic:
                return _approval("the sed script is only known at run time")
            danger = _sed_danger(script.text)
            if danger:
                return _approval(f"the sed script {danger}")
        return _OK

    def prog_awk(self, args: list[_Tok], state: _State) -> Verdict:
        programs: list[_Tok] = []
        sandbox = False
        k = 0
        while k < len(args):
            arg, text = args[k], args[k].text
            if arg.dynamic and text.startswith("-"):
                return _approval("the awk options are only known at run time")
            if text == "--":
                k += 1
                break
            if text in ("-S", "--sandbox"):  # gawk: no system(), no redirection
                sandbox = True
            elif text in ("-F", "-v", "--field-separator", "--assign"):
                k += 1
            elif text.startswith(("-F", "-v", "--field-separator=", "--assign=")):
                pass
            elif text in ("-e", "--source"):
                k += 1
                if k < len(args):
                    programs.append(args[k])
            elif text.startswith("--source="):
                programs.append(_Tok(text.split("=", 1)[1], dynamic=arg.dynamic))
            elif text in ("-b", "-c", "-P", "-r", "-s", "-n", "-N", "-t", "--posix",
                          "--traditional", "--characters-as-bytes", "--re-interval"):  # fmt: skip
                pass
            elif text.startswith("-") and text != "-":
                # -f/-i/-l/-E (script files, in-place, extensions), mawk -W exec …
                return _approval(f"awk {text} runs a script file, an extension or edits in place")
            else:
                break
            k += 1
        if not programs and k < len(args):
            programs.append(args[k])
        if sandbox:
            return _OK
        for program in programs:
            if program.dynamic:
                return _approval("the awk program is only known at run time")
            if re.search(r"system\s*\(|[|>]|getline|@load|@include", program.text):
                return _approval("the awk program writes files or runs commands")
        return _OK

    prog_gawk = prog_mawk = prog_nawk = prog_awk

    def prog_sort(self, args: list[_Tok], state: _State) -> Verdict:
        texts = [a.text for a in args]
        if any(
            t == "-o" or t.startswith("--output") or (t.startswith("-o") and len(t) > 2)
            for t in texts
        ):
            return _approval("sort -o writes a file")
        if any(t.startswith("--compress-prog") for t in texts):
            return _approval("sort --compress-program runs a program")
        return _OK

    def prog_uniq(self, args: list[_Tok], state: _State) -> Verdict:
        _, operands = _split_options(args, takes_value={"-f", "-s", "-w"})
        return _approval("uniq writes its output file") if len(operands) > 1 else _OK

    def prog_xxd(self, args: list[_Tok], state: _State) -> Verdict:
        options, operands = _split_options(args, takes_value={"-c", "-g", "-l", "-s", "-o", "-n"})
        if "-r" in options or len(operands) > 1:
            return _approval("xxd writes a file")
        return _OK

    def prog_tree(self, args: list[_Tok], state: _State) -> Verdict:
        return _approval("tree -o writes a file") if "-o" in [a.text for a in args] else _OK

    def prog_rg(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text.startswith("--pre") for a in args):
            return _approval("rg --pre runs a command per file")
        return _OK

    def prog_date(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text in ("-s", "--set") or a.text.startswith("--set=") for a in args):
            return _approval("it sets the clock")
        return _OK

    def prog_hostname(self, args: list[_Tok], state: _State) -> Verdict:
        _, operands = _split_options(args)
        return _approval("it sets the hostname") if operands else _OK

    def prog_kill(self, args: list[_Tok], state: _State) -> Verdict:
        texts = [a.text for a in args]
        if "-1" in texts or "1" in texts:
            return _forbid("it kills every process (or init)")
        return _approval("it kills processes")

    def prog_pkill(self, args: list[_Tok], state: _State) -> Verdict:
        return _approval("it kills processes")

    prog_killall = prog_pkill

    def prog_crontab(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text.startswith("-r") for a in args):
            return _forbid("crontab -r deletes every scheduled job")
        return _OK if [a.text for a in args] == ["-l"] else _approval("it changes scheduled jobs")

    def prog_export(self, args: list[_Tok], state: _State) -> Verdict:
        verdicts = []
        for arg in args:
            if arg.text.startswith("-"):
                if "f" in arg.text[1:]:
                    verdicts.append(_approval("it exports shell functions"))
                continue
            # `export NAME` exports a value set earlier, so the name matters even without '='.
            verdicts.append(_assignment_verdict(arg.text if "=" in arg.text else arg.text + "="))
        return _worst(verdicts)

    prog_declare = prog_typeset = prog_local = prog_readonly = prog_export

    def prog_alias(self, args: list[_Tok], state: _State) -> Verdict:
        if any("=" in a.text for a in args):
            return _approval("it defines an alias, which changes what a command name runs")
        return _OK

    def prog_shopt(self, args: list[_Tok], state: _State) -> Verdict:
        if "expand_aliases" in [a.text for a in args]:
            return _approval("it makes aliases change what command names run")
        return _OK

    def prog_hash(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text.startswith("-") and "p" in a.text for a in args):
            return _approval("hash -p changes which program a command name runs")
        return _OK

    def prog_history(self, args: list[_Tok], state: _State) -> Verdict:
        if not args:
            return _OK
        options, operands = _split_options(args)
        if any(set(o[1:]) & {"w", "a"} for o in options if not o.startswith("--")):
            # `history -w FILE` overwrites FILE with the (empty) history of this shell.
            return _worst(
                [self.writes(operands, state, "it writes a file"), _approval("it writes a file")]
            )
        return _approval("it changes the shell history")

    def prog_man(self, args: list[_Tok], state: _State) -> Verdict:
        risky = ("-P", "--pager", "-H", "--html", "-X", "--gxditview", "-C", "--config-file")
        if any(a.text.startswith(risky) for a in args):
            return _approval("man runs the pager, browser or configuration it is given")
        return _OK

    def prog_info(self, args: list[_Tok], state: _State) -> Verdict:
        risky = ("-o", "--output", "--dribble", "--init-file")
        if any(a.text.startswith(risky) for a in args):
            return _approval("info writes or reads a file it is given")
        return _OK

    def prog_less(self, args: list[_Tok], state: _State) -> Verdict:
        risky = ("-o", "-O", "--log-file", "--LOG-FILE", "-k", "--lesskey", "+")
        if any(a.text.startswith(risky) for a in args):
            return _approval("less writes a log file or runs commands it is given")
        return _OK

    prog_more = prog_less

    def prog_shuf(self, args: list[_Tok], state: _State) -> Verdict:
        for k, arg in enumerate(args):
            if arg.text in ("-o", "--output") and k + 1 < len(args):
                return self.writes([args[k + 1]], state, "shuf -o writes a file")
            if arg.text.startswith("--output="):
                target = _Tok(arg.text.split("=", 1)[1], dynamic=arg.dynamic)
                return self.writes([target], state, "shuf -o writes a file")
            if arg.text.startswith("-o") and len(arg.text) > 2:
                return self.writes([_Tok(arg.text[2:])], state, "shuf -o writes a file")
        return _OK

    def prog_file(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text in ("-C", "--compile") for a in args):
            return _approval("file -C writes a compiled magic file")
        return _OK

    def prog_ag(self, args: list[_Tok], state: _State) -> Verdict:
        if any(a.text.startswith(("--pager", "--output", "--ackrc")) for a in args):
            return _approval("it runs the pager or Perl code it is given")
        return _OK

    prog_ack = prog_ag

    def prog_cloc(self, args: list[_Tok], state: _State) -> Verdict:
        writing = ("--out", "--report-file", "--sql", "-o", "--output")
        if any(a.text.startswith(writing) for a in args):
            return _approval("it writes a report file")
        return _OK

    prog_scc = prog_cloc

    def prog_dmesg(self, args: list[_Tok], state: _State) -> Verdict:
        changing = {"-c", "-C", "-D", "-E", "-n", "--clear", "--read-clear", "--console-off",
                    "--console-on", "--console-level"}  # fmt: skip
        if any(a.text in changing or a.text.startswith("--console") for a in args):
            return _approval("it changes the kernel log")
        return _OK

    def prog_pip(self, args: list[_Tok], state: _State) -> Verdict:
        texts = [a.text for a in args if not a.text.startswith("-")]
        if texts[:1] in (["list"], ["show"], ["freeze"], ["check"], ["help"]):
            return _OK
        return _approval("pip changes installed packages")

    prog_pip3 = prog_pip

    def prog_npm(self, args: list[_Tok], state: _State) -> Verdict:
        texts = [a.text for a in args if not a.text.startswith("-")]
        if texts[:1] in (["ls"], ["list"], ["help"], ["root"], ["prefix"], ["bin"]):
            return _OK
        return _approval("npm runs scripts or changes packages")

    # -- git ------------------------------------------------------------------------------------

    def git(self, args: list[_Tok], state: _State, depth: int = 0) -> Verdict:
        extra: list[Verdict] = []
        aliases: dict[str, str] = {}
        i = 0
        while i < len(args) and args[i].text.startswith("-"):
            opt = args[i].text
            if opt.startswith(("-c", "--config-env", "--exec-path")):
                extra.append(_approval("git -c / --exec-path can make git run arbitrary commands"))
                setting = args[i + 1].text if opt == "-c" and i + 1 < len(args) else opt[2:]
                name, _, value = setting.partition("=")
                if name.lower().startswith("alias."):
                    aliases[name[6:].lower()] = value
            i += 2 if opt in ("-C", "-c", "--git-dir", "--work-tree", "--namespace",
                              "--config-env", "--super-prefix") else 1  # fmt: skip
        if i >= len(args):
            return _worst([_OK, *extra])
        if args[i].dynamic:
            return _worst([_approval("the git command is only known at run time"), *extra])
        sub = args[i].text.lower()  # git-PUSH is git-push on a case-insensitive disk
        rest = [a.text for a in args[i + 1 :]]
        verdict = self.git_subcommand(sub, rest, args[i + 1 :], state)
        expansion = aliases.get(sub)
        if expansion is None and not verdict.read_only and sub not in _GIT_BUILTINS:
            expansion = self.git_alias(sub)
        if expansion is not None:
            # An alias is what it expands to: `git -c alias.p=push p` is git push.
            verdict = _worst([verdict, self.git_alias_verdict(expansion, rest, state, depth)])
        return _worst([verdict, *extra])

    def git_alias(self, name: str) -> str | None:
        """The repository's (or the user's) alias `name`, read with git itself."""
        if name not in self._git_aliases:
            try:
                proc = subprocess.run(
                    ["git", "config", "--get", f"alias.{name}"],
                    cwd=self.root,
                    capture_output=True,
                    text=True,
                    timeout=10,
                    env={**os.environ, "GIT_PAGER": "cat", "GIT_TERMINAL_PROMPT": "0"},
                )
                found = proc.stdout.strip() if proc.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                found = None
            self._git_aliases[name] = found or None
        return self._git_aliases[name]

    def git_alias_verdict(
        self, expansion: str, rest: list[str], state: _State, depth: int
    ) -> Verdict:
        if depth > 3:
            return _approval("git aliases nest too deeply to check")
        if expansion.startswith("!"):
            return self.script(expansion[1:] + " " + " ".join(rest), state, depth + 2).verdict
        try:
            words = _lex(expansion, [])
        except _ParseError:
            return _approval("the git alias could not be parsed")
        return self.git([*words, *(_Tok(r) for r in rest)], state, depth + 1)

    def git_subcommand(
        self, sub: str, rest: list[str], rest_toks: list[_Tok], state: _State
    ) -> Verdict:
        flags = {r for r in rest if r.startswith("-")}
        # git accepts unambiguous abbreviations of long options: `--har` is `--hard`.
        for r in rest:
            name = r.split("=", 1)[0]
            if name.startswith("--") and len(name) >= 4:
                flags.update(f for f in _GIT_LONG_OPTIONS if f.startswith(name))
        short = "".join(r[1:] for r in rest if r.startswith("-") and not r.startswith("--"))
        if sub in ("push", "send-pack"):
            return _forbid("git push publishes commits to a remote")
        if sub == "reset":
            if "--hard" in flags or "--merge" in flags or "--keep" in flags:
                return _forbid("git reset --hard discards uncommitted changes")
            return _approval("git reset moves the branch or the index")
        if sub == "clean":
            if "f" in short or "--force" in flags:
                return _forbid("git clean -f deletes untracked files for good")
            return _OK if ("n" in short or "--dry-run" in flags) else _approval("git clean")
        if sub in ("checkout", "restore", "switch"):
            if {"-f", "--force", "--discard-changes", "--overwrite-ignore"} & flags:
                return _forbid(f"git {sub} --force discards uncommitted changes")
            paths = (
                rest[rest.index("--") + 1 :]
                if "--" in rest
                else ([r for r in rest if not r.startswith("-")] if sub == "restore" else rest[1:])
            )
            path_toks = [_Tok(p) for p in paths]
            if sub == "restore" and "--staged" in flags and not {"--worktree", "-W"} & flags:
                return _approval("git restore --staged changes the index")
            if any(p in (".", "./", ":/", ":/*", "*", ":(top)", "-A") for p in paths) or any(
                self.where(t, state) == "root" for t in path_toks if not t.text.startswith(":")
            ):
                return _forbid(f"git {sub} of the whole tree discards every uncommitted change")
            if sub == "checkout" and not paths and len(rest) == 1 and rest[0] == ".":
                return _forbid("git checkout . discards every uncommitted change")
            return _approval(f"git {sub} changes the working tree")
        if sub == "stash":
            action = rest[0] if rest else "push"
            if action in ("clear", "drop"):
                return _forbid(f"git stash {action} deletes stashed work")
            return (
                _OK
                if action in ("list", "show")
                else _approval("git stash changes the working tree")
            )
        if sub in ("filter-branch", "filter-repo"):
            return _forbid(f"git {sub} rewrites history")
        if sub == "prune":
            return _forbid("git prune deletes unreachable objects for good")
        if sub == "submodule" and rest[:1] == ["foreach"]:
            command = [r for r in rest[1:] if r not in ("--recursive", "-q", "--quiet")]
            inner = self.script(" ".join(command), state, 1).verdict
            return _worst([inner, _approval("git submodule foreach runs a command in each")])
        if sub == "bisect" and rest[:1] == ["run"] and len(rest_toks) > 1:
            inner = self.program(rest_toks[1:], state, [], 1).verdict
            return _worst([inner, _approval("git bisect run runs a command")])
        if sub == "rebase":
            scripts = [
                rest[k + 1]
                for k, r in enumerate(rest[:-1])
                if r in ("-x", "--exec") or (r.startswith("--exe") and "=" not in r)
            ] + [r.split("=", 1)[1] for r in rest if r.startswith("--exe") and "=" in r]
            verdicts = [self.script(c, state, 1).verdict for c in scripts]
            return _worst([*verdicts, _approval("git rebase rewrites commits")])
        if sub == "reflog":
            if rest[:1] in (["expire"], ["delete"]):
                return _forbid("it deletes reflog entries, the last way to recover lost commits")
            return _OK
        if sub == "gc" and "--prune" in flags:
            return _forbid("git gc --prune deletes unreachable objects for good")
        if sub == "update-ref" and ({"-d", "--delete"} & flags):
            return _forbid("git update-ref -d deletes a ref")
        if sub == "branch":
            changing = {"-D", "-d", "--delete", "-m", "-M", "-c", "-C", "--move", "--copy", "-f",
                        "--force", "-u", "--set-upstream-to", "--unset-upstream",
                        "--edit-description"}  # fmt: skip
            listing = {"-l", "--list", "-a", "--all", "-r", "--remotes", "--show-current",
                       "--contains", "--merged", "--no-merged", "-v", "-vv"}  # fmt: skip
            positional = [r for r in rest if not r.startswith("-")]
            if flags & changing or (positional and not flags & listing):
                return _approval("git branch changes branches")
            return _OK
        if sub == "tag":
            return (
                _OK if not rest or {"-l", "--list"} & flags else _approval("git tag creates tags")
            )
        if sub == "remote":
            return (
                _OK if rest[:1] in ([], ["-v"], ["show"], ["get-url"]) else _approval("git remote")
            )
        if sub == "config":
            reading = {"--get", "--get-all", "--get-regexp", "--list", "-l", "get", "list"}
            writing = {"--unset", "--unset-all", "--remove-section", "--rename-section", "--add",
                       "--replace-all", "--edit", "-e", "set", "unset", "edit", "rename-section",
                       "remove-section"}  # fmt: skip
            positional = [r for r in rest if not r.startswith("-")]
            if positional and positional[0].lower().startswith("alias.") and len(positional) > 1:
                defined = self.git_alias_verdict(" ".join(positional[1:]), [], state, 1)
                if defined.forbidden:
                    return _forbid(
                        f"it defines a git alias for a destructive command ({defined.reason})"
                    )
            if not set(rest) & writing and (set(rest) & reading or len(positional) == 1):
                return _OK
            return _approval("git config changes configuration")
        if "--output" in flags or any(r.startswith("--output") for r in rest):
            targets = [_Tok(r.split("=", 1)[1]) for r in rest if r.startswith("--o") and "=" in r]
            targets += [
                _Tok(rest[k + 1])
                for k, r in enumerate(rest[:-1])
                if len(r) >= 4 and "--output".startswith(r)
            ]
            reason = f"git {sub} --output writes a file"
            return _worst([self.writes(targets, state, reason), _approval(reason)])
        if sub == "grep" and any(
            r.startswith("--open-files-in-pager") or (r.startswith("-O") and not r.startswith("--"))
            for r in rest
        ):
            return _approval("git grep -O opens the files in a program it is given")
        if sub == "ls-remote" and any(r.startswith(("--upload-pack", "-u")) for r in rest):
            return _approval("git ls-remote --upload-pack runs a program")
        if sub == "fsck" and any(r.startswith("--lost-found") for r in rest):
            return _approval("git fsck --lost-found writes into .git")
        if sub == "rm":
            forced = "f" in short or "--force" in flags
            paths = [_Tok(r) for r in rest if not r.startswith("-")]
            if forced and any(self.where(t, state) in ("root", "outside") for t in paths):
                return _forbid("git rm -f of the whole tree discards every uncommitted change")
            return _approval("git rm deletes files")
        if sub in ("worktree", "submodule", "notes") and rest[:1] in (
            [],
            ["list"],
            ["status"],
            ["show"],
        ):
            return _OK
        if sub in _GIT_READ_ONLY:
            return _OK
        return _approval(f"git {sub} changes the repository")


def _split_options(
    args: list[_Tok], takes_value: frozenset[str] | set[str] = frozenset()
) -> tuple[list[str], list[_Tok]]:
    options: list[str] = []
    operands: list[_Tok] = []
    it = iter(args)
    for arg in it:
        if arg.text == "--":
            operands.extend(it)
            break
        if arg.text.startswith("-") and arg.text != "-" and not arg.dynamic:
            options.append(arg.text)
            if arg.text in takes_value:
                next(it, None)
        else:
            operands.append(arg)
    return options, operands


_SED_SIMPLE = set("=dDgGhHlLnNpPxzF")


def _sed_danger(script: str) -> str | None:
    """What a sed script does beyond printing: 'writes files', 'runs commands', or that it
    could not be read (then it is not trusted). Follows GNU sed's grammar: addresses, `!`,
    blocks, and the commands whose arguments run to the end of the line."""
    i, n = 0, len(script)

    def regex_end(start: int, delim: str) -> int:
        """Index of the closing `delim` of a regex or replacement starting at `start`."""
        j = start
        while j < n:
            if script[j] == "\\":
                j += 2
                continue
            if script[j] == delim:
                return j
            j += 1
        raise ValueError("unterminated")

    def address(j: int) -> int:
        if j < n and script[j] in "/\\":
            delim = "/"
            if script[j] == "\\":
                if j + 1 >= n:
                    raise ValueError("bad address")
                delim, j = script[j + 1], j + 1
            j = regex_end(j + 1, delim) + 1
            while j < n and script[j] in "IM":
                j += 1
            return j
        while j < n and (script[j].isdigit() or script[j] in "$~+"):
            j += 1
        return j

    try:
        while i < n:
            while i < n and script[i] in " \t\n;":
                i += 1
            if i >= n:
                break
            if script[i] == "#":
                end = script.find("\n", i)
                i = n if end == -1 else end
                continue
            i = address(i)
            if i < n and script[i] == ",":
                i = address(i + 1)
            while i < n and script[i] in " \t!":
                i += 1
            if i >= n:
                raise ValueError("address without command")
            cmd = script[i]
            i += 1
            if cmd in "{}":
                continue
            if cmd in "wW":
                return "writes files"
            if cmd == "e":
                return "runs commands"
            if cmd in "aicrR:btTv":
                # Text, file name or label: up to the end of the line (labels also end at ';').
                while i < n and script[i] != "\n" and not (cmd in "btT:v" and script[i] == ";"):
                    i += 2 if script[i] == "\\" else 1
                continue
            if cmd in "qQ":
                while i < n and script[i] in " \t0123456789":
                    i += 1
                continue
            if cmd in _SED_SIMPLE:
                while i < n and script[i].isdigit():  # l 40, L 40
                    i += 1
                continue
            if cmd in "sy":
                if i >= n or script[i] in "\\\n":
                    raise ValueError("bad delimiter")
                delim = script[i]
                i = regex_end(i + 1, delim)
                i = regex_end(i + 1, delim) + 1
                if cmd == "s":
                    while i < n and script[i] not in " \t\n;}#":
                        if script[i] == "w":
                            return "writes files"
                        if script[i] == "e":
                            return "runs commands"
                        if script[i] not in "gpiImM0123456789":
                            raise ValueError("unknown flag")
                        i += 1
                continue
            raise ValueError(f"unknown command {cmd!r}")
    except ValueError:
        return "could not be checked"
    return None


# The worst place first: where a brace expansion (or any list of targets) counts as its worst.
_PLACE_SEVERITY = ("device", "root", "outside", "git", "temp", "unknown", "inside")


def _brace_alternatives(word: str) -> list[str] | None:
    """The words bash's brace expansion makes of `word` ([word] when it has none); None for
    sequence expressions (`{1..9}`) and anything too intricate to expand here."""
    depth, start = 0, -1
    for k, ch in enumerate(word):
        if ch == "{":
            if depth == 0:
                start = k
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                body = word[start + 1 : k]
                parts, level, last = [], 0, 0
                for j, c in enumerate(body):
                    level += (c == "{") - (c == "}")
                    if c == "," and level == 0:
                        parts.append(body[last:j])
                        last = j + 1
                parts.append(body[last:])
                if len(parts) == 1:
                    if ".." in body:
                        return None
                    continue  # `{}` or `{x}`: literal braces
                head, tail = word[:start], word[k + 1 :]
                out: list[str] = []
                for part in parts:
                    expanded = _brace_alternatives(head + part + tail)
                    if expanded is None or len(out) > 64:
                        return None
                    out.extend(expanded)
                return out
    return [word]
