"""Atomic file writes: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_AT_FDCWD = -100

_RENAME_EXCHANGE = 2


@functools.cache
def libc_keeping_gil() -> ctypes.PyDLL | None:
    """The C library through ctypes.PyDLL, whose calls keep the GIL: for system calls of microseconds on a
    hot path, where os.* would hand the GIL to another thread and wait to get it back. None without one."""
    try:
        return ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file (0600) beside `path` for the block to write and fsync: renamed over `path`, and
    the directory fsynced, when the block ends well; removed when it does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with _replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def copy_atomic(con: Any, select: str, dest: Path, options: str, mode: int | None = None) -> int:
    """DuckDB's `COPY (select) TO dest (options)` through a temporary file beside dest, fsynced, then
    renamed over dest; returns the rows written. `mode` sets the file's permissions before the rename
    (DuckDB creates files 0644 whatever the temporary file had)."""
    from zerodoc.sql import sql_literal

    with _replacing(Path(dest)) as tmp:
        (rows,) = con.execute(f"COPY ({select}) TO {sql_literal(str(tmp))} ({options})").fetchone()
        if mode is not None:
            os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return int(rows)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def _load_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE).

    False when the platform or file system cannot do it; the caller falls back to two renames.
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _remove_stale_staging(final: Path) -> None:
    """Scratch directories left by a writer killed mid-write (kill -9, OOM): never visible, only litter.

    One writer per directory is the rule (a task owns its partition), so any leftover is dead.
    """
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(final.with_name(f".{final.name}.old"), ignore_errors=True)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory beside `final`; on success it replaces `final` in one atomic step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        if not final.exists():
            os.replace(tmp, final)
        elif exchange_paths(tmp, final):
            # Readers resolving `final` now reach the new tree; the old one sits in `tmp`.
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            # rename() cannot replace a non-empty directory: move the old one aside first
            # (a reader can see `final` missing for that instant, never a mix).
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
