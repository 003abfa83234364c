"""Replacing a file so that a crash, a full disk or Ctrl-C leaves the old file or the new one,
never half of each. Every writer in the project goes through `atomic_write`: the tools' edits,
the undo journal, `fix --patch`, `context --output`, the tokenizer and KV caches.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

TEMP_SUFFIX = ".v4tmp"  # the name of a write in flight ends so: listings of a store skip it


def atomic_write(
    path: Path, data: bytes | memoryview, *, mode: int | None = None, durable: bool = True
) -> None:
    """Write `data` to a temporary file in `path`'s directory (created if missing), then
    `os.replace` it over `path`: readers see the old file or the whole new one.

    Permission bits: `mode` when given, else the existing file's, else the umask default of a
    new file (as `open` would make it). `durable` fsyncs the data before the rename and the
    directory after it, so a power loss cannot leave an empty file under the new name; caches
    that verify what they read skip that cost with `durable=False`. On any failure, including
    KeyboardInterrupt, the temporary file is removed and `path` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            mode = path.stat().st_mode
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _create_temp(path: Path) -> tuple[int, Path]:
    # Created with 0o666 so the kernel applies the umask to a new file: reading the umask
    # would mean setting it, which races with other threads creating files.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # O_BINARY: Windows only
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(directory: Path) -> None:
    # The rename lives in the directory; some platforms cannot open one for fsync (best effort).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
