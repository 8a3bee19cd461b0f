"""Local files given to the tool, checked where they enter: the one place that says why
a path cannot be used.

Disk images, the configuration, user data files and Packer var files all pass through
:func:`check_file` (and text files through :func:`read_text`) before anything reads
them. The checks, in order: the path exists (a symlink loop and a dangling symlink are
named as such), is a regular file (a directory, FIFO, socket or device is refused and
named; a FIFO is never opened, so nothing hangs), can be opened for reading, is within
the size limits, and for text is UTF-8 without NUL bytes. Every refusal is one
:class:`~pipeline.core.errors.InputError` line: ``WHAT PATH: problem; what to do``.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pipeline.core.errors import InputError

__all__ = ["check_file", "read_text", "file_kind", "MiB"]

MiB = 1024 * 1024


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"


def _label(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


def check_file(path: str | os.PathLike[str], *, what: str, hint: str,
               max_bytes: int | None = None, allow_empty: bool = False) -> Path:
    """``path`` as a :class:`Path` if it is a readable regular file within the limits.

    ``what`` names the input (``--image``, ``configuration``...), ``hint`` says what to do
    (``give the path of a disk image``). Raises :class:`InputError` otherwise.
    """
    p = Path(path).expanduser()
    label = _label(what, p)
    if not str(path):
        raise InputError(f"{what}: empty path; {hint}")
    try:
        st = os.stat(p)
    except OSError as err:
        raise InputError(f"{label}: {_stat_problem(p, err)}; {hint}") from err
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{label}: is {file_kind(st.st_mode)}, not a regular file; {hint}")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, open does not wait.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise InputError(f"{label}: cannot be opened for reading ({err.strerror}); "
                         f"check its permissions; {hint}") from err
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{label}: is {file_kind(st.st_mode)}, not a regular file; {hint}")
    if st.st_size == 0 and not allow_empty:
        raise InputError(f"{label}: is empty (0 bytes); {hint}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"{label}: is {st.st_size} bytes, more than the {max_bytes} bytes "
                         f"expected here; {hint}")
    return p


def _stat_problem(p: Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "is a symlink loop (the links point at each other); fix or remove the link"
    if err.errno == errno.ENOENT:
        if p.is_symlink():
            return f"is a dangling symlink (to {os.readlink(p)!r}, which does not exist)"
        return "no such file"
    if err.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    if err.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    if err.errno == errno.EACCES:
        return "permission denied on a directory of the path"
    return f"cannot be read ({err.strerror})"


def read_text(path: str | os.PathLike[str], *, what: str, hint: str,
              max_bytes: int = MiB, allow_empty: bool = False) -> str:
    """The UTF-8 text of a file that passes :func:`check_file`."""
    p = check_file(path, what=what, hint=hint, max_bytes=max_bytes, allow_empty=allow_empty)
    label = _label(what, p)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as err:
        raise InputError(f"{label}: cannot be read ({err.strerror}); {hint}") from err
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{label}: is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw:
        line = raw[:raw.index(b"\x00")].count(b"\n") + 1
        raise InputError(f"{label}: is binary (a NUL byte on line {line}), not text; {hint}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise InputError(f"{label}: is not UTF-8 text (byte 0x{raw[err.start]:02x} on line "
                         f"{line}); save it as UTF-8") from err
    return text.removeprefix("\ufeff")
