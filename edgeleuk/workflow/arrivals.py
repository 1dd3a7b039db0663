"""Decide when a file the microscope is writing is complete enough to read.

A file counts as complete once its size and modification time are the same on
two consecutive polls (and it is not empty). Writers that pause longer than a
poll can still be caught mid-file, so a file that then fails to decode is not
reported at once: if it changes again it goes back to waiting, and only after
it failed ``max_attempts`` times while unchanged is it reported as an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgeleuk.imageio import is_image_name

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


def signature(path: Path) -> Signature | None:
    """``(size, mtime_ns)`` of a file, or None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def list_arrivals(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` sorted by path, skipping hidden names (temporary files).

    Unlike ``edgeleuk.data.list_images`` an empty folder is normal here: the
    microscope has not written anything yet.
    """
    found: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                if recursive:
                    found.extend(list_arrivals(Path(entry.path), recursive=True))
            elif entry.is_file() and is_image_name(entry.name):
                found.append(Path(entry.path))
        except OSError:  # vanished between listing and checking
            continue
    return sorted(found)


@dataclass
class ArrivalTracker:
    """Follows files from first sight to a final result.

    Attributes:
        done: Resolved paths already handled (e.g. read from an earlier run's CSV).
        max_attempts: Failed reads of an unchanged file before it is reported as an error.
    """

    done: set[str] = field(default_factory=set)
    max_attempts: int = 3
    _seen: dict[str, Signature] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def key(path: Path) -> str:
        return str(Path(path).resolve())

    @property
    def waiting(self) -> int:
        """Files seen but not yet finished (still being written, or being retried)."""
        return len(self._seen)

    def poll(self, paths: list[Path]) -> list[Path]:
        """Record this poll's listing and return the files that are ready to read."""
        ready, current = [], {}
        for path in paths:
            key = self.key(path)
            if key in self.done:
                continue
            sig = signature(path)
            if sig is None:
                continue
            current[key] = sig
            if sig[0] > 0 and self._seen.get(key) == sig:
                ready.append(path)
        # Files that vanished (renamed by their writer, deleted) stop being tracked.
        self._failures = {k: n for k, n in self._failures.items() if k in current}
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
                self._failures.pop(key, None)
                return False
            self._failures[key] = self._failures.get(key, 0) + 1
            if self._failures[key] < self.max_attempts:
                return False
        self._finish(key)
        return True

    def _finish(self, key: str) -> None:
        self.done.add(key)
        self._seen.pop(key, None)
        self._failures.pop(key, None)
