"""Decide when a file the microscope is writing is complete enough to read.

A file counts as complete once its size and modification time are the same on
two consecutive polls (an empty one must stay empty for ``give_up_s``). Writers
that pause longer than a poll can still be caught mid-file, so a file that then
fails to decode is not reported at once: it is read again on later polls, goes
back to waiting if it changes, and is reported as an error only once it has
stayed unchanged for ``give_up_s`` seconds while failing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeleuk.errors import DataError
from edgeleuk.files import list_images

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


def signature(path: Path) -> Signature | None:
    """``(size, mtime_ns)`` of a file, or None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def list_arrivals(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` in natural order, skipping hidden names (temporary files).

    The same listing as ``predict`` (:func:`edgeleuk.files.list_images`, with files
    named like unsupported image formats, which get an error row), except
    that a folder that is missing or cannot be listed gives no files instead of an
    error: the microscope may not have created it yet, or a network share may
    hiccup; the next poll tries again.
    """
    try:
        return list_images(folder, recursive=recursive, unsupported=True)
    except DataError:
        return []


@dataclass
class ArrivalTracker:
    """Follows files from first sight to a final result.

    Attributes:
        done: Resolved paths already handled (e.g. read from an earlier run's CSV).
        give_up_s: How long an unchanged file may keep failing to read before it is an error.
    """

    done: set[str] = field(default_factory=set)
    give_up_s: float = 10.0
    _seen: dict[str, Signature] = field(default_factory=dict)
    _since: dict[str, float] = field(default_factory=dict)  # when the current signature was first seen

    @staticmethod
    def key(path: Path) -> str:
        """The identity of a file across polls and sessions."""
        # abspath, not resolve(): no system call per file per poll on folders of thousands.
        return os.path.abspath(path)

    @property
    def waiting(self) -> int:
        """Files seen but not yet finished (still being written, or being retried)."""
        return len(self._seen)

    def poll(self, paths: list[Path]) -> list[Path]:
        """Record this poll's listing and return the files that are ready to read."""
        ready, current, now = [], {}, time.monotonic()
        for path in paths:
            key = self.key(path)
            if key in self.done:
                continue
            sig = signature(path)
            if sig is None:
                continue
            current[key] = sig
            if self._seen.get(key) == sig:
                # An empty file is usually one just created; it is read (and reported) only
                # if it stays empty for give_up_s.
                if sig[0] > 0 or now - self._since[key] >= self.give_up_s:
                    ready.append(path)
            else:
                self._since[key] = now
        # Files that vanished (renamed by their writer, deleted) stop being tracked.
        self._since = {k: v for k, v in self._since.items() if k in current}
        self._seen = current
        return ready

    def accept(self, path: Path, failed: bool) -> bool:
        """Whether a read of ``path`` is final; if not, the file waits for another poll.

        Args:
            path: A file returned by :meth:`poll` and just read.
            failed: The read failed (for example it would not decode).
        """
        key = self.key(path)
        if failed:
            if signature(path) != self._seen.get(key):
                self._seen.pop(key, None)  # still changing: wait until stable again
                return False
            if time.monotonic() - self._since.get(key, 0.0) < self.give_up_s:
                return False
        self.done.add(key)
        self._seen.pop(key, None)
        self._since.pop(key, None)
        return True
