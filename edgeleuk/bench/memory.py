"""Peak resident memory: of this process, or of a child process measured on its own.

A process's peak RSS (``ru_maxrss``) only ever grows, so one process measuring
several engines would report the largest so far for all of them. A command run
through :func:`run_measured` is reaped with ``os.wait4``, which returns that
child's own peak: a clean figure per backend, or for the whole ``predict`` path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeleuk.errors import EdgeleukError

# ru_maxrss is KiB on Linux and bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def self_peak_rss() -> int:
    """Peak resident bytes of this process so far."""
    import resource

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
        status, usage = _wait(proc, timeout, argv)
        wall = time.perf_counter() - t0
        return Measured(
            returncode=status, peak_rss=usage.ru_maxrss * _RSS_UNIT, wall_s=wall,
            stdout=_read(out), stderr=_read(err),
        )


def _wait(proc: subprocess.Popen, timeout: float | None, argv: Sequence[str]):
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise EdgeleukError(f"timed out after {timeout:.0f} s: {' '.join(map(str, argv))}")
        time.sleep(0.05)
