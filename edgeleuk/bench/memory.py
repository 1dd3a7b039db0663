"""Peak resident memory: of this process, or of a child process measured on its own.

A process's peak RSS only ever grows, so one process measuring several engines
would report the largest so far for all of them: each backend is measured in its
own process instead. On Linux the figure is the kernel's high-water mark of the
process's own address space (``VmHWM`` in ``/proc/<pid>/status``). ``ru_maxrss``
(``getrusage``/``wait4``) is not used there because Linux carries the parent's
peak over into a child across fork and exec: a big parent would hide a small child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from edgeleuk.core.errors import EdgeleukError

# ru_maxrss is KiB on Linux and bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak resident bytes of a live process's address space (Linux ``VmHWM``); None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def self_peak_rss() -> int:
    """Peak resident bytes of this process so far."""
    hwm = vm_hwm()
    if hwm is not None:
        return hwm
    import resource  # lazy: Unix-only stdlib module; Linux answers from VmHWM above

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT


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
    a full pipe while we wait for it with ``os.wait4``.

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
    """Reap ``proc``, sampling its ``VmHWM`` until it exits; ``(exit code, peak bytes)``.

    The high-water mark only grows, so the last sample misses at most the growth of
    the final ``poll_s`` seconds. Without ``/proc`` the child's ``ru_maxrss`` is used.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    peak = 0
    while True:
        hwm = vm_hwm(proc.pid)  # read before reaping: a zombie has no memory figures
        peak = max(peak, hwm or 0)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
            return proc.returncode, peak or usage.ru_maxrss * _RSS_UNIT
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise EdgeleukError(f"timed out after {timeout:.0f} s: {' '.join(map(str, argv))}")
        time.sleep(poll_s)
