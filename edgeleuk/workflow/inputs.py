"""What ``predict`` classifies: files, folders and patterns in any mix, listed once into records.

Torch-free. :func:`index_inputs` turns the names a user gives into :class:`Inputs`: one
:class:`~edgeleuk.io.data.Record` per file, in input order, each file once, and the folder the
output rows' paths are relative to.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.io.data import Record, list_images, records_for
from edgeleuk.io.files import natural_key
from edgeleuk.io.imageio import SUPPORTED_EXTENSIONS, is_image_name

#: Characters that make an input a pattern edgeleuk expands (unless a file has that very name).
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Inputs:
    """What one ``predict`` run classifies, listed once.

    Attributes:
        records: One per file, in input order, each file once; subject and true label
            where the layout states them.
        base: The folder the output rows' paths are relative to: the folder as given when
            the input is one folder, else the deepest folder holding every input (absolute).
        shown: How the summary names where the files came from (``base``, relative to the
            working folder when inside it).
    """

    records: tuple[Record, ...]
    base: Path
    shown: Path

    def row_path(self, path: Path) -> str:
        """The path an output row shows for ``path``: relative to :attr:`base`, with ``/``."""
        if not self.base.is_absolute():
            return path.relative_to(self.base).as_posix()
        absolute = Path(os.path.abspath(path))
        try:
            return absolute.relative_to(self.base).as_posix()
        except ValueError:  # inputs on different drives (Windows): no common folder
            return absolute.as_posix()


def _no_images(folder: Path, recursive: bool) -> DataError:
    hint = "" if recursive or not any(p.is_dir() for p in folder.iterdir()) else "; add --recursive for sub-folders"
    return DataError(f"no images in {folder} (looked for {', '.join(SUPPORTED_EXTENSIONS)}){hint}")


def _expand(name: str, recursive: bool, csvs: dict[Path, list[Path]]) -> tuple[list[Path], list[Path]]:
    """``(files, folders)`` one input names; ``csvs`` gets the listed folders' CSV files.

    Raises:
        DataError: Nothing of that name exists, a pattern matches no image, a named folder
            holds no images or cannot be listed.
    """
    path = Path(name)
    if not path.exists() and GLOB_CHARS.intersection(name):
        matches = sorted(glob.glob(name, recursive=True), key=natural_key)
        files = [Path(m) for m in matches if os.path.isfile(m) and is_image_name(m, unsupported=True)]
        folders = [Path(m) for m in matches if os.path.isdir(m)]
        for folder in folders:
            files += _listed(folder, recursive, csvs)
        if not matches:
            raise DataError(f"{name!r} matches no file or folder")
        if not files:
            raise DataError(f"{name!r} matches no image (looked for {', '.join(SUPPORTED_EXTENSIONS)})")
        return files, folders
    if path.is_dir():
        files = _listed(path, recursive, csvs)
        if not files:
            raise _no_images(path, recursive)
        return files, [path]
    if path.exists():
        return [path], []  # taken as given: a file not named like an image gets an error row
    raise DataError(f"file or folder not found: {name}")


def _listed(folder: Path, recursive: bool, csvs: dict[Path, list[Path]]) -> list[Path]:
    """A folder's images in natural order (``unsupported`` formats too: they get an error row).

    Without ``recursive`` a sub-folder named like an image (``dir.bmp``) is listed too, so its
    decode gives an error row ("is a directory") instead of being passed over in silence;
    with ``recursive`` it is a folder like any other and is walked.
    """
    own: dict[Path, list[Path]] = {}
    files = list_images(folder, recursive=recursive, unsupported=True, csvs=own)
    for place, found in own.items():
        csvs.setdefault(place, found)
    if recursive:
        return files
    odd = _folders_named_like_images(folder)
    return sorted(files + odd, key=lambda p: natural_key(p.relative_to(folder))) if odd else files


def _folders_named_like_images(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries
                    if not e.name.startswith(".") and is_image_name(e.name, unsupported=True) and e.is_dir()]
    except OSError:  # list_images just listed it; a folder gone since then has nothing to add
        return []


def _base(files: Sequence[Path], folders: Sequence[Path]) -> Path:
    """The deepest folder holding every file's folder and every listed folder (absolute)."""
    places = {os.path.abspath(f) for f in folders} | {os.path.dirname(os.path.abspath(f)) for f in files}
    try:
        return Path(os.path.commonpath(sorted(places)))
    except ValueError:  # different drives (Windows): rows show absolute paths (Inputs.row_path)
        return Path(Path.cwd().anchor)


def _shown(base: Path) -> Path:
    try:
        return base.relative_to(Path.cwd())
    except ValueError:
        return base


def index_inputs(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], recursive: bool = False) -> Inputs:
    """The files ``predict`` classifies, from files, folders and patterns in any mix.

    * A folder is listed (natural order, ``2.bmp`` before ``10.bmp``; hidden files skipped;
      sub-folders with ``recursive``): files named like images, including formats edgeleuk
      cannot read (``.gif``...), which get an error row. It must hold at least one.
    * A file is taken as given, whatever its name: one that is no image gets an error row.
    * A pattern (``*``, ``?``, ``[...]``; ``**`` spans folders), when no file has that very
      name, is expanded here (for quoted patterns the shell did not expand): matches in
      natural order, files named like images kept, matching folders listed as above. It must
      match at least one image.

    Inputs keep their order; a file named twice (by two inputs, or two names of one file)
    appears once, where first named. Output rows show paths relative to :attr:`Inputs.base`:
    one folder given, that folder (as before mixed inputs existed); otherwise the deepest
    folder holding every input, so that ``predict a.bmp DIR/`` writes ``a.bmp`` and
    ``DIR/1.bmp`` and no two rows share a path. True labels and subjects come from the names
    and the labels CSVs around the files (:func:`edgeleuk.io.data.records_for`).

    Raises:
        UsageError: No inputs.
        DataError: A name that matches nothing (naming it), a named folder that cannot be
            listed or holds no images (exit 2, a usage error).
    """
    names = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not names:
        raise UsageError("give at least one image file, folder or pattern to classify")
    csvs: dict[Path, list[Path]] = {}
    files: list[Path] = []
    folders: list[Path] = []
    for name in names:
        found, listed = _expand(os.fspath(name), recursive, csvs)
        files += found
        folders += listed
    if len(names) == 1 and Path(os.fspath(names[0])).is_dir():
        base = Path(os.fspath(names[0]))  # one folder: rows relative to it, exactly as given
        return Inputs(tuple(records_for(files, csvs)), base, base)
    seen: set[str] = set()
    unique = []
    for path in files:
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    base = _base(unique, folders)
    return Inputs(tuple(records_for(unique, csvs)), base, _shown(base))
