"""Torch-free file helpers shared by data, predict, watch, report, bench and export.

* :func:`list_images`: the image files of a folder in natural order (``2.bmp`` before ``10.bmp``);
* :func:`read_csv`: header and rows of a CSV (labels CSVs, predictions files);
* :func:`sha256_file`: a file's identity, recorded in checkpoints, exports and bench records;
* :func:`synthetic_root`: where ``edgeleuk synth``'s marker file sits above a path, so
  every figure made from synthetic cells can say so.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import deque
from pathlib import Path

from edgeleuk.core.errors import DataError
from edgeleuk.io.imageio import is_image_name

#: The file ``edgeleuk synth`` writes at the root of every synthetic data set.
SYNTHETIC_MARKER = "SYNTHETIC.txt"


def natural_key(path: str | os.PathLike[str]) -> tuple:
    """Sort key that orders digit runs by value: ``2.bmp`` before ``10.bmp``, ``H2`` before ``H10``."""
    parts = []
    for part in Path(path).parts:
        parts.append(tuple((0, int(t), t) if t.isdigit() else (1, 0, t.lower())
                           for t in re.split(r"(\d+)", part) if t))
    return tuple(parts)


def image_entries(
    folder: Path, *, unsupported: bool = False, csvs: list[Path] | None = None
) -> tuple[list[Path], list[Path]]:
    """(images, sub-folders) of one folder; hidden entries (``.name``) skipped.

    Args:
        folder: Folder to list.
        unsupported: Also list files named like images edgeleuk cannot read (``.gif``...),
            so that ``predict`` and ``watch`` give them an error row instead of silence.
        csvs: If given, the folder's ``*.csv`` files are appended to it from the same
            listing (labels CSVs sit among the images; no second pass over the folder).

    Raises:
        DataError: The folder cannot be listed.
    """
    images, dirs = [], []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files, and half-written temp files of atomic writers
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            dirs.append(Path(entry.path))
        elif is_image_name(entry.name, unsupported=unsupported):  # broken files stay: decode reports them
            images.append(Path(entry.path))
        elif csvs is not None and entry.name.endswith(".csv"):
            csvs.append(Path(entry.path))
    return images, dirs


def list_images(
    root: str | os.PathLike[str], recursive: bool = False, *, unsupported: bool = False,
    csvs: dict[Path, list[Path]] | None = None,
) -> list[Path]:
    """Image files in a folder, in natural order (``2.bmp`` before ``10.bmp``).

    Args:
        root: Folder to list.
        recursive: Descend into sub-folders, each real folder once; a link to the root or
            above it (``/``, a parent) is not followed.
        unsupported: Also list files named like images of formats edgeleuk does not read
            (:data:`edgeleuk.io.imageio.UNSUPPORTED_EXTENSIONS`); their decode gives an error row.
        csvs: If given, filled with every listed folder -> the ``*.csv`` files in it, from
            the same listing (see :func:`edgeleuk.io.data.records_for`).

    Raises:
        DataError: ``root`` is missing, not a folder, or cannot be listed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder" if root.exists() else f"folder not found: {root}")
    root_real = root.resolve()
    found, todo, seen = [], deque([root]), {root_real}
    while todo:
        folder = todo.popleft()
        here: list[Path] | None = None if csvs is None else csvs.setdefault(folder, [])
        images, dirs = image_entries(folder, unsupported=unsupported, csvs=here)
        found.extend(images)
        todo.extend(d for d in sorted(dirs) if recursive and enters(d, root_real, seen))
    return sorted(found, key=lambda p: natural_key(p.relative_to(root)))


def enters(folder: Path, root_real: Path, seen: set[Path], within: bool = False) -> bool:
    """Whether a recursive walk of ``root_real`` goes into ``folder`` (and marks it seen).

    Each real folder once, and never the root or a folder above it: a link to ``/`` or
    back up to a parent would otherwise walk the whole file system, or loop. A link to a
    folder elsewhere (a data set linked in) is followed unless ``within`` keeps the walk
    inside the tree, as ``watch`` does.
    """
    try:
        real = folder.resolve(strict=True)
    except (OSError, RuntimeError):  # gone, or a link loop
        return False
    inside = root_real in real.parents
    if real in seen or not (inside or (not within and real not in root_real.parents)):
        return False
    seen.add(real)
    return True


def read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file, header names stripped of spaces.

    UTF-8 with or without a byte-order mark (spreadsheet programs add one). The
    caller checks the columns, so each file kind can say what it expected.

    Raises:
        DataError: The file cannot be read or is not CSV text.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return header, rows


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (model files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def synthetic_root(path: str | os.PathLike[str], levels: int | None = 3) -> Path | None:
    """The folder holding :data:`SYNTHETIC_MARKER` at or above ``path``, else None.

    Args:
        path: A file or folder; a file's own folder is where the search starts.
        levels: How many folders above the start to check (None: up to the file system root).
            Three reaches a data root from ``training_data/fold_0/all/``.
    """
    start = Path(path).resolve()
    if not start.is_dir():
        start = start.parent
    folders = (start, *start.parents)
    for folder in folders if levels is None else folders[: levels + 1]:
        if (folder / SYNTHETIC_MARKER).is_file():
            return folder
    return None
