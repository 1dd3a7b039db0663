"""Atomic, durable file writes: a file is complete or absent, never half-written.

Every writer goes through :func:`atomic_path`: the data goes to a temporary file
beside the destination, is fsync'ed, renamed over the destination, and the
folder is fsync'ed too, so after a power cut the new name points at the whole
new file (or the old one is still there).

Permissions: a new file gets what a plain ``open()`` would give it
(``0o666 & ~umask``); a rewritten file keeps its own (a 0600 file stays 0600).

Targets: only a regular file (or a name not yet taken) is written. A rename over a
symbolic link replaces the link, not its target (``out.csv -> /dev/null`` became a 0666
file), and a device or FIFO (``--out /dev/stdout``, as root) would be replaced by a file,
so :func:`check_target` refuses them with a usage error.
The umask is read from ``/proc/self/status`` where it exists: the classic
``os.umask(0); os.umask(old)`` round trip would briefly change it for every
thread of the process.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from edgeleuk.core.errors import UsageError


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _startup_umask() -> int:
    found = _umask_from_proc()
    if found is not None:
        return found
    # No /proc (macOS, Windows): read it once, at import, before any writer thread exists.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_STARTUP_UMASK = _startup_umask()


def current_umask() -> int:
    """The process umask, read without changing it (the value at import where /proc is missing)."""
    found = _umask_from_proc()
    return _STARTUP_UMASK if found is None else found


def mode_for(dest: Path, new: int | None = None) -> int:
    """Permissions for the file about to replace ``dest``: its own if it exists, else ``new`` or open()'s."""
    try:
        return stat.S_IMODE(dest.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask() if new is None else new


def check_target(dest: str | os.PathLike[str], *, folder_ok: bool = False) -> None:
    """Refuse an output path that exists as anything but a regular file (or, with ``folder_ok``, a folder).

    Raises:
        UsageError: ``dest`` is a symbolic link, a device, a FIFO or a socket (or a folder).
    """
    try:
        st = os.lstat(dest)
    except OSError:
        return  # not there yet (or unreadable: the write itself says why)
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(
            f"{dest} is a symbolic link (to {os.readlink(dest)}): an output is written whole and renamed "
            "over its name, which would replace the link, not write through it; give the target's own path"
        )
    if stat.S_ISREG(st.st_mode) or folder_ok and stat.S_ISDIR(st.st_mode):
        return
    what = "a folder" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
    raise UsageError(f"{dest} is {what}, not a regular file: give the name of a file to write")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's data to disk (for writers that take a path, not a handle)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or a new name in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows: folders cannot be opened this way, and NTFS journals renames
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file itself is already on disk
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; fsync it and rename it over ``dest`` on success.

    On any exception the temporary file is removed and ``dest`` is untouched.
    The temporary name keeps ``suffix`` (e.g. ``.onnx``) for tools that sniff it.

    Raises:
        UsageError: ``dest`` is not a regular file (:func:`check_target`); nothing is written.
    """
    dest = Path(dest)
    check_target(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes owner-only files; give the result the permissions it should have.
        os.chmod(tmp_path, mode_for(dest))
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``dest`` only when closed cleanly."""
    with atomic_path(dest) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text to ``dest`` atomically (complete or absent)."""
    with atomic_open(dest, "w", encoding="utf-8") as fh:
        fh.write(text)

