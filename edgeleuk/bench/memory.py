"""Peak resident memory: of this process, or of a child process measured on its own.

A process's peak RSS only ever grows, so one process measuring several engines
would report the largest so far for all of them: each backend is measured in its
own process instead. The figure is the peak of the process's own address space,
as the OS keeps it where it does:

* Windows: psutil's ``peak_wset`` (the peak working set);
* Linux: the kernel's high-water mark ``VmHWM`` in ``/proc/<pid>/status`` (psutil
  reports no peak there). ``ru_maxrss`` (``getrusage``/``wait4``) is not used on
  Linux because Linux carries the parent's peak over into a child across fork and
  exec: a big parent would hide a small child;
* elsewhere (macOS): the larger of the child's ``ru_maxrss`` from ``wait4`` (bytes
  there) and the largest RSS psutil sampled while it ran. Sampling alone is the
  Linux figure if ``/proc/<pid>/status`` cannot be read. (The macOS path has not
  been run on macOS: the tests simulate it on Linux.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from edgeleuk.core.errors import EdgeleukError

# ru_maxrss is KiB on Linux and bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024
# Linux starts a child's ru_maxrss from the parent's peak at fork; elsewhere it is taken as the child's own.
_CHILD_MAXRSS_OWN = not sys.platform.startswith("linux")


def _vm_hwm(pid: int | str) -> int | None:
    """Linux's ``VmHWM`` of a live process in bytes; None without ``/proc`` (or for a zombie)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def os_peak_rss(pid: int | None = None) -> int | None:
    """Peak resident bytes of a live process (None: this one) as the OS keeps it; None where it keeps none.

    Windows: ``peak_wset``; Linux: ``VmHWM``; macOS keeps no peak of a live process.
    """
    if psutil.WINDOWS:
        try:
            return int(psutil.Process(pid).memory_info().peak_wset)
        except psutil.Error:
            return None
    return _vm_hwm("self" if pid is None else pid)  # None without /proc


def rss_now(pid: int | None = None) -> int | None:
    """Resident bytes of a live process (None: this one) now; None if psutil cannot read it."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def self_peak_rss() -> int:
    """Peak resident bytes of this process so far (its RSS now where no peak of its own is known)."""
    peak = os_peak_rss()
    if peak is not None:
        return peak
    now = rss_now() or 0
    if not _CHILD_MAXRSS_OWN:
        return now
    try:
        import resource  # lazy: Unix-only stdlib module (macOS here: Windows and Linux answered above)
    except ImportError:
        return now
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT, now)


@dataclass(frozen=True)
class Measured:
    """A finished child process.

    Attributes:
        returncode: Exit status (negative: killed by that signal).
        peak_rss: The child's peak resident bytes.
        wall_s: Seconds from start to exit.
        stdout: Its standard output.
        stderr: Its standard error.
    """

    returncode: int
    peak_rss: int
    wall_s: float
    stdout: str
    stderr: str


def _read(fh) -> str:
    fh.seek(0)
    return fh.read().decode("utf-8", errors="replace")


def run_measured(
    argv: Sequence[str], timeout: float | None = None, env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Measured:
    """Run a command to completion and report its peak resident memory.

    Output goes to temporary files rather than pipes, so the child never blocks on
    a full pipe while we poll it.

    Raises:
        EdgeleukError: The command ran longer than ``timeout`` seconds (it is killed).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        status, peak = _wait(proc, timeout, argv)
        wall = time.perf_counter() - t0
        return Measured(returncode=status, peak_rss=peak, wall_s=wall, stdout=_read(out), stderr=_read(err))


def _wait(proc: subprocess.Popen, timeout: float | None, argv: Sequence[str], poll_s: float = 0.02):
    """Reap ``proc``, sampling its memory until it exits; ``(exit code, peak bytes)``.

    Where the OS keeps a high-water mark (:func:`os_peak_rss`) it only grows, so the
    last sample misses at most the growth of the final ``poll_s`` seconds. Elsewhere
    the largest sampled RSS and the child's own ``ru_maxrss`` give the peak.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    kept, sampled = 0, 0
    while True:
        peak = os_peak_rss(proc.pid)  # read before reaping: a zombie has no memory figures
        if peak is not None:
            kept = max(kept, peak)
        else:
            sampled = max(sampled, rss_now(proc.pid) or 0)
        done = _reap_if_exited(proc)
        if done is not None:
            code, maxrss = done
            return code, kept or max(sampled, maxrss)
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise EdgeleukError(f"timed out after {timeout:.0f} s: {' '.join(map(str, argv))}")
        time.sleep(poll_s)


def _reap_if_exited(proc: subprocess.Popen) -> tuple[int, int] | None:
    """``(exit code, the child's own ru_maxrss in bytes)`` once ``proc`` exited (it is then reaped), else None.

    0 where there is no ``ru_maxrss`` of the child's own: without ``os.wait4`` (Windows), and on Linux.
    """
    if not hasattr(os, "wait4"):
        code = proc.poll()
        return None if code is None else (code, 0)
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid != proc.pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
    return proc.returncode, usage.ru_maxrss * _RSS_UNIT if _CHILD_MAXRSS_OWN else 0
