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
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.context.rules import secret_name_rule

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
        elif s.startswith("$((", i):
            _, i = _balanced(s, i + 3, depth=2)
            add("0", dynamic=True)
        elif s.startswith("$(", i):
            inner, i = _balanced(s, i + 2)
            add_sub(inner)
        elif c == "`":
            inner, i = _backticks(s, i + 1)
            add_sub(inner)
        elif c == "$":
            add("$", dynamic=True)
            i += 1
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
        elif s.startswith("$((", i):
            _, i = _balanced(s, i + 3, depth=2)
            add("0", dynamic=True)
        elif s.startswith("$(", i):
            inner, i = _balanced(s, i + 2)
            add_sub(inner)
        elif c == "`":
            inner, i = _backticks(s, i + 1)
            add_sub(inner)
        elif c == "$":
            add("$", dynamic=True)
            i += 1
        else:
            add(c)
            i += 1
    raise _ParseError("unterminated double quote")


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

_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "busybox", "csh",
                     "tcsh"})  # fmt: skip
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
    "cal", "expr", "bc", "dc", "zcat", "bzcat", "xzcat", "lsof", "getconf", "tty", "logname",
    "users", "who", "w", "lscpu", "lsblk", "lsmod", "dmesg", "factor", "numfmt", "look",
    "shuf", "tput", "sum", "wait", "hash", "ulimit", "umask", "alias", "set", "shopt",
    "export", "unset", "local", "declare", "typeset", "readonly", "read", "let", "return",
    "exit", "shift", "getopts", "break", "continue", ":", "cd", "pushd", "popd", "dirs",
    "history", "jobs", "fc", "help", "man", "info", "apropos", "cloc", "tokei", "scc",
})  # fmt: skip
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
            words.pop(0)
        while words and words[0].text in _SKIP_KEYWORDS and not words[0].dynamic:
            words.pop(0)
        if not words:
            return _Result(_worst(verdicts))
        if words[0].text in _COMPOUND_KEYWORDS:
            verdicts.append(_approval(f"it uses a shell `{words[0].text}` construct"))
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
        prog = PurePosixPath(head.text).name
        texts = [a.text for a in args]
        sub_fetch = any(subs[k].fetches for a in args for k in a.subs)

        if prog in _WRAPPERS:
            return self.wrapper(prog, args, state, subs, depth)
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
            if len(texts) == 1 and texts[0] in _VERSION_ARGS:
                return _Result(_OK)
            return _Result(_approval(f"`{prog}` runs code"), interpreter=True, sub_fetch=sub_fetch)
        if len(texts) == 1 and texts[0] in _VERSION_ARGS and "/" not in head.text:
            return _Result(_OK)
        if prog == "git":
            return _Result(self.git(args, state))
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
        if not rest:
            return _Result(_OK)
        if prog == "watch" and len(rest) == 1:
            return self.script(rest[0].text, state, depth + 1)  # watch runs its argument via sh -c
        inner = self.program(rest, state, subs, depth)
        if prog in ("sudo", "doas"):
            inner.verdict = _worst([inner.verdict, _approval(f"it uses {prog}")])
        elif prog == "time" and any(a.text in ("-o", "--output") for a in args[:i]):
            inner.verdict = _worst([inner.verdict, _approval("`time -o` writes a file")])
        return inner

    def env(self, args: list[_Tok], state: _State, subs, depth) -> _Result:
        i = 0
        while i < len(args):
            text = args[i].text
            if text in ("-u", "--unset", "-C", "--chdir"):
                if text in ("-C", "--chdir"):
                    state = _State(None)
                i += 2
            elif text in ("-S", "--split-string") and i + 1 < len(args):
                return self.script(" ".join(a.text for a in args[i + 1 :]), state, depth + 1)
            elif text.startswith("-") or _ASSIGNMENT.match(text):
                i += 1
            else:
                break
        if i >= len(args):
            return _Result(_OK)  # prints the (already scrubbed) environment
        return self.program(args[i:], state, subs, depth)

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
            return "git" if any(p.lower() == ".git" for p in rel) else "inside"
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
        scripts: list[str] = []
        positional: list[str] = []
        it = iter(a.text for a in args)
        for text in it:
            if (
                text.startswith("-i")
                or text.startswith("--in-place")
                or (text.startswith("-") and not text.startswith("--") and "i" in text[1:])
            ):
                return _approval("sed -i edits files in place")
            if text in ("-e", "--expression"):
                scripts.append(next(it, ""))
            elif text.startswith("--expression="):
                scripts.append(text.split("=", 1)[1])
            elif text in ("-f", "--file") or text.startswith("--file="):
                return _approval("sed runs a script file")
            elif not text.startswith("-"):
                positional.append(text)
        if not scripts and positional:
            scripts.append(positional[0])
        # The w/W commands (and the w flag of s///) write files; e executes commands.
        if any(re.search(r"(^|[;{}\n]|/[gIimMpe0-9]*)\s*[wWe]\b", s) for s in scripts):
            return _approval("the sed script writes files or runs commands")
        return _OK

    def prog_awk(self, args: list[_Tok], state: _State) -> Verdict:
        texts = [a.text for a in args]
        if "-f" in texts or "-i" in texts or any(t.startswith("--file") for t in texts):
            return _approval("awk runs a script file or edits in place")
        program = next(
            (t for k, t in enumerate(texts)
             if not t.startswith("-") and (k == 0 or texts[k - 1] not in ("-F", "-v"))),
            "",
        )  # fmt: skip
        if re.search(r"system\s*\(|[|>]|getline", program):
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

    def git(self, args: list[_Tok], state: _State) -> Verdict:
        extra: list[Verdict] = []
        i = 0
        while i < len(args) and args[i].text.startswith("-"):
            opt = args[i].text
            if opt in ("-c", "--config-env") or opt.startswith("--exec-path"):
                extra.append(_approval("git -c / --exec-path can make git run arbitrary commands"))
            i += 2 if opt in ("-C", "-c", "--git-dir", "--work-tree", "--namespace",
                              "--config-env", "--super-prefix") else 1  # fmt: skip
        if i >= len(args):
            return _worst([_OK, *extra])
        sub = args[i].text
        rest = [a.text for a in args[i + 1 :]]
        return _worst([self.git_subcommand(sub, rest, args[i + 1 :], state), *extra])

    def git_subcommand(
        self, sub: str, rest: list[str], rest_toks: list[_Tok], state: _State
    ) -> Verdict:
        flags = {r for r in rest if r.startswith("-")}
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
        if sub == "reflog":
            if rest[:1] in (["expire"], ["delete"]):
                return _forbid("it deletes reflog entries, the last way to recover lost commits")
            return _OK
        if sub == "gc" and any(r.startswith("--prune") for r in rest):
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
            positional = [r for r in rest if not r.startswith("-")]
            if set(rest) & reading or len(positional) == 1:
                return _OK
            return _approval("git config changes configuration")
        if sub == "diff" and any(r.startswith("--output") for r in rest):
            return _approval("git diff --output writes a file")
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
