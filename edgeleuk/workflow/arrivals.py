"""Find the files the microscope writes, and decide when each is complete enough to read.

Listing (:class:`FolderScanner`): a folder is read again only when its
modification time changed (a file was added, removed or renamed in it), so a
session folder of 20,000 images costs one ``stat`` per folder per poll, not a
listing and a sort of every name. A recursive watch enters each real folder
once and never follows a link out of the tree; a file link whose target lies outside the
tree is not read either (:meth:`FolderScanner.leads_out`).

Completeness (:class:`ArrivalTracker`): a file counts as complete once its size
and modification time are the same on two consecutive polls (an empty one must
stay empty for ``give_up_s``). Writers that pause longer than a poll can still
be caught mid-file, so a file that then fails to decode is not reported at once:
it is read again on later polls, goes back to waiting if it changes, and is
reported as an error only once it has stayed unchanged for ``give_up_s`` seconds
while failing. A file already handled that is overwritten under the same name
(new size or mtime) is read again and gets a new row.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edgeleuk.core.errors import DataError
from edgeleuk.core.text import printable
from edgeleuk.io.files import enters, image_entries, list_images, natural_key
from edgeleuk.io.imageio import is_image_name

log = logging.getLogger(__name__)

Signature = tuple[int, int]  # (size in bytes, mtime in ns)

#: A recursive watch stops descending after this many folders (a mount of a whole disk).
MAX_FOLDERS = 10_000
#: Files not yet handled that one poll looks at; the rest wait for later polls.
MAX_PENDING = 2_000
#: Files already handled whose signature one poll checks again (overwritten in place?).
RECHECK_PER_POLL = 256
#: A folder modified this recently may gain a file within its mtime tick: list it again.
_RACY_NS = 2_000_000_000
#: Every so often list everything again: network shares do not always update folder mtimes.
FULL_RESCAN_S = 60.0


def signature(path: str | os.PathLike[str]) -> Signature | None:
    """``(size, mtime_ns)`` of a file, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def list_arrivals(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` in natural order, skipping hidden names (temporary files).

    The same listing as ``predict`` (:func:`edgeleuk.io.files.list_images`, with files
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
class _Listing:
    mtime_ns: int
    listed_ns: int  # wall clock when it was listed
    images: list[Path]
    dirs: list[Path]


class FolderScanner:
    """Lists a watched folder poll after poll, re-reading only folders that changed.

    Paths come back absolute (so they double as :meth:`ArrivalTracker.key`), each
    folder's images in natural order, the root's first, then each sub-folder's.
    """

    def __init__(self, root: Path, recursive: bool = False, max_folders: int = MAX_FOLDERS) -> None:
        self.root = Path(os.path.abspath(root))
        self.root_real = Path(os.path.realpath(self.root))
        self.recursive = recursive
        self.max_folders = max_folders
        self._cache: dict[Path, _Listing] = {}
        self._full_at = time.monotonic()
        self._warned = False

    def _listing(self, folder: Path, full: bool) -> _Listing | None:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        cached = self._cache.get(folder)
        if cached and not full and cached.mtime_ns == mtime and cached.listed_ns - mtime > _RACY_NS:
            return cached
        listed = time.time_ns()
        try:
            images, dirs = image_entries(folder, unsupported=True)  # those get an error row
        except DataError:
            return None  # a share hiccup: the next poll tries again
        if not self.recursive:  # as predict: a folder named like an image gets an error row, not silence
            images += [d for d in dirs if is_image_name(d.name, unsupported=True)]
        images.sort(key=lambda p: natural_key(p.name))
        self._cache[folder] = _Listing(mtime, listed, images, sorted(dirs))
        return self._cache[folder]

    def list(self) -> list[Path]:
        """Image files now in the tree (none while the folder is missing)."""
        full = time.monotonic() - self._full_at >= FULL_RESCAN_S
        if full:
            self._full_at = time.monotonic()
        found: list[Path] = []
        todo: deque[Path] = deque([self.root])
        root_real = self.root.resolve()
        seen = {root_real}
        visited: set[Path] = set()
        while todo:
            folder = todo.popleft()
            visited.add(folder)
            listing = self._listing(folder, full)
            if listing is None:
                continue
            found.extend(listing.images)
            for d in listing.dirs if self.recursive else ():
                if len(seen) >= self.max_folders:
                    self._warn_once()
                    break
                if enters(d, root_real, seen, within=True):
                    todo.append(d)
        self._cache = {k: v for k, v in self._cache.items() if k in visited}
        return found

    def leads_out(self, path: Path) -> bool:
        """Whether ``path`` (a listed file) resolves outside the watched folder: a link out, never read.

        A link could hand any file the user can read (``/etc/...``, another lab's share) to
        the decoder and into the CSV; a link inside the tree is fine.
        """
        real = Path(os.path.realpath(path))  # a broken link resolves as far as it goes
        return self.root_real not in real.parents

    def _warn_once(self) -> None:
        if not self._warned:
            log.warning(
                "%s holds more than %d folders; only the first are watched", self.root, self.max_folders
            )
            self._warned = True


@dataclass
class ArrivalTracker:
    """Follows files from first sight to a final result, and notices when one is overwritten.

    Attributes:
        done: Key -> signature of files already handled (None: not known yet, e.g. read
            from an earlier run's CSV; taken on its first re-check).
        give_up_s: How long an unchanged file may keep failing to read before it is an error.
        max_pending: Files not yet handled that one poll looks at.
        recheck_per_poll: Handled files whose signature one poll checks again.
    """

    done: dict[str, Signature | None] = field(default_factory=dict)
    give_up_s: float = 10.0
    max_pending: int = MAX_PENDING
    recheck_per_poll: int = RECHECK_PER_POLL
    _seen: dict[str, Signature] = field(default_factory=dict)
    _since: dict[str, float] = field(default_factory=dict)  # when the current signature was first seen
    _recheck: deque[str] = field(default_factory=deque)

    @staticmethod
    def key(path: str | os.PathLike[str]) -> str:
        """The identity of a file across polls and sessions (its absolute path)."""
        return os.path.abspath(path)

    @property
    def waiting(self) -> int:
        """Files seen but not yet finished (still being written, or being retried)."""
        return len(self._seen)

    def _overwritten(self) -> None:
        """Forget handled files whose size or mtime changed since: they are read again."""
        if not self._recheck:
            self._recheck.extend(self.done)
        for _ in range(min(self.recheck_per_poll, len(self._recheck))):
            key = self._recheck.popleft()
            if key not in self.done:
                continue
            sig, before = signature(key), self.done[key]
            if sig is None:
                continue  # gone: if it comes back unchanged it is not classified twice
            if before is None:
                self.done[key] = sig
            elif sig != before:
                del self.done[key]
                log.info("%s was overwritten since it was classified: classifying it again", printable(key))

    def poll(self, paths: list[Path]) -> list[Path]:
        """Record this poll's listing and return the files that are ready to read.

        Args:
            paths: Absolute paths, as :class:`FolderScanner` lists them.
        """
        self._overwritten()
        ready, current, now = [], {}, time.monotonic()
        for path in paths:
            key = os.fspath(path)
            if key in self.done:
                continue
            if len(current) >= self.max_pending:
                break
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
        key = os.fspath(path)
        sig = self._seen.get(key)
        now = signature(path)
        if now != sig and (failed or now is not None):  # a good read of a file deleted since still counts
            # Changed while it was read (a writer paused longer than a poll): what was read may be
            # neither the old nor the new file. Wait until stable again; otherwise the change would
            # later look like an overwrite and give the file a second row.
            self._seen.pop(key, None)
            return False
        if failed and time.monotonic() - self._since.get(key, 0.0) < self.give_up_s:
            return False
        self.done[key] = sig
        self._seen.pop(key, None)
        self._since.pop(key, None)
        return True
