"""The calling thread's alternate signal stack, kept as it was across OpenVINO work (Linux).

Why this exists: OpenVINO's CPU plugin (seen in 2026.4) gives the thread that compiles a model
on a ``Core`` an alternate signal stack of its own (mmap'd), remembering the one before, and
releasing that ``Core`` puts the remembered stack back and unmaps its own. Two Cores released in
the order they were made therefore leave the thread on a stack that no longer exists; the next
signal with a Python handler (Ctrl-C, SIGTERM, a SIGCHLD handler) cannot be delivered and the
kernel kills the process with SIGSEGV instead of Python raising. edgeleuk avoids the pattern in
its own code (one shared ``Core``, :func:`edgeleuk.runtime.openvino.shared_core`) and wraps work
whose Cores it does not own (NNCF's) in :func:`kept_signal_stack`. Elsewhere than Linux every
function here is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
from collections.abc import Iterator
from typing import Any

SS_DISABLE = 2  # <signal.h>, the same on every Linux architecture
DISABLED = (0, SS_DISABLE, 0)
Stack = tuple[int, int, int]  # address, flags (SS_DISABLE or 0), size in bytes


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sigaltstack.argtypes = [ctypes.POINTER(_StackT), ctypes.POINTER(_StackT)]
    except (OSError, AttributeError):  # no usable libc symbol: nothing to keep
        return None
    return libc


def current() -> Stack | None:
    """The calling thread's alternate signal stack, or None where it cannot be read (not Linux)."""
    libc = _libc()
    st = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(st)) != 0:
        return None
    if st.ss_flags & SS_DISABLE:
        return DISABLED
    return (st.ss_sp or 0, 0, st.ss_size)


def usable(stack: Stack) -> bool:
    """Whether the kernel could deliver a signal onto ``stack`` (mapped read/write, both ends)."""
    sp, flags, size = stack
    if flags & SS_DISABLE:
        return True  # no alternate stack: handlers run on the thread's own
    ends = {sp, sp + size - 1}
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if perms.startswith("rw"):
                ends -= {p for p in ends if lo <= p < hi}
    return not ends


def _set(stack: Stack) -> None:
    sp, flags, size = stack
    # Fails only while a handler runs on the current stack (EPERM); then it must stay anyway.
    _libc().sigaltstack(ctypes.byref(_StackT(sp or None, flags, size)), None)


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Give the calling thread back the alternate signal stack it had on entry.

    On exit, garbage is collected first so that Cores made inside (NNCF's) are released while this
    can still undo what their release did; then the stack from entry is put back, or none at all
    if that one has meanwhile been unmapped (a Core made before entry and released inside).
    """
    saved = current()
    try:
        yield
    finally:
        if saved is not None:
            gc.collect()
            if current() != saved:
                _set(saved if usable(saved) else DISABLED)
