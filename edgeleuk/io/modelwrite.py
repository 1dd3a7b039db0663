"""Write exported model files, torch-free: the ``edgeleuk.*`` metadata and all-or-nothing replacement.

``export`` (a new graph) and ``calibrate`` (a copy with a new threshold) both
end here, so a model file is written one way only.

Metadata: each format in :mod:`edgeleuk.io.formats` declares how its two JSON strings are
written (ONNX ``metadata_props``, an OpenVINO IR's ``rt_info``); :mod:`edgeleuk.io.modelfile`
reads them back.

Replacement (:func:`replace_atomically`): files are built in a private folder beside the
destination, then moved in. An ONNX file is one ``os.replace``; a folder format is moved in
like a main file with no companions. An OpenVINO IR is two files, and
readers open the ``.xml``, which names its weights only by the shared stem: an
old ``.xml`` beside a new ``.bin`` of the same architecture would load silently
with the old metadata (threshold, gate report). So the ``.xml`` is the commit point:

1. the old ``.xml`` and then the old ``.bin`` are moved into the staging folder,
2. the new ``.bin`` is moved in, then the new ``.xml``.

Whenever ``model.xml`` exists, the ``model.bin`` beside it is its own. An error
on the way moves the old pair back. If the process dies between steps 1 and 2,
``model.xml`` is missing (readers fail loudly; rerun the command) and both pairs
stay in the hidden staging folder ``.model.xml.*/`` (the old one under
``previous/``). What remains: a reader that read the old ``.xml`` just before
the swap and opens the ``.bin`` just after it sees the new weights; OpenVINO
reads both in one call, so that window is the few milliseconds of the swap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeleuk.core.contract import META_KEY
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.atomic import check_target, fsync_dir, fsync_file, mode_for
from edgeleuk.io.formats import format_for_suffix, format_of
from edgeleuk.io.modelfile import read_model_meta


def output_files(dest: Path) -> tuple[Path, ...]:
    """The paths a model written to ``dest`` consists of: its format's companions (an IR's ``.bin``), then it."""
    return format_for_suffix(Path(dest).suffix).files(Path(dest))


def swap_in(stage: Path, dest: Path) -> None:
    """Move ``stage``'s paths named like ``dest``'s over them, the main path last (see module docstring).

    The old main path and then its companions go into ``stage/previous`` first, so no reader can
    pair an old main file with new companions; an error on the way moves the old ones back.
    """
    *companions, main = output_files(dest)
    previous = stage / "previous"
    previous.mkdir()
    hidden: list[Path] = []
    placed: list[Path] = []
    try:
        for final in (main, *companions):  # the main path first: from now on no reader can pair anything
            if final.exists():
                os.replace(final, previous / final.name)
                hidden.append(final)
        for final in companions:
            os.replace(stage / final.name, final)
            placed.append(final)
        os.replace(stage / main.name, main)  # the commit point
    except BaseException:
        for final in placed:
            final.unlink(missing_ok=True)
        for final in reversed(hidden):  # companions back before the main path
            os.replace(previous / final.name, final)
        raise


def _fsync_written(path: Path) -> None:
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_file():
                fsync_file(item)
        fsync_dir(path)
    else:
        fsync_file(path)


def _keep_modes(stage: Path, paths: tuple[Path, ...], new: int | None) -> None:
    """Give each written file the mode of the file it replaces (a 0600 model stays 0600), else ``new``."""
    for final in paths:
        written = stage / final.name
        if written.is_file():
            os.chmod(written, mode_for(final, new))


@contextlib.contextmanager
def replace_atomically(dest: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder on ``dest``'s file system; files named like ``dest`` in it replace it on success.

    Each file keeps the permissions of the one it replaces; a new one gets ``mode`` (None: what
    ``open()`` gives). On an exception nothing at ``dest`` changes and the folder is removed.

    Raises:
        UsageError: A path of ``dest`` is a link, a device or a FIFO (:func:`check_target`).
    """
    dest = Path(dest)
    folder_ok = format_for_suffix(dest.suffix).layout == "folder"
    for final in output_files(dest):
        check_target(final, folder_ok=folder_ok)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield stage
        paths = output_files(dest)
        _keep_modes(stage, paths, mode)
        for final in paths:
            _fsync_written(stage / final.name)
        if len(paths) == 1 and not (stage / dest.name).is_dir():
            os.replace(stage / dest.name, dest)  # one file: one atomic rename
        else:  # companions or a folder: the main path commits, last
            swap_in(stage, dest)
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_model_with_meta(src: Path, out: Path, meta: ModelMeta) -> Path:
    """Write a copy of the exported model ``src`` to ``out`` carrying ``meta``.

    The graph and weights are copied unchanged; only the ``edgeleuk.meta`` string
    differs. The format's own ``write_metadata`` writes the copy (see
    :mod:`edgeleuk.io.formats`), into :func:`replace_atomically`'s folder.

    Args:
        src: Exported ``.onnx`` or OpenVINO ``.xml`` model.
        out: Destination with the same suffix as ``src`` (may equal ``src``).
        meta: Metadata to store under ``edgeleuk.meta``.

    Returns:
        ``out``.

    Raises:
        UsageError: Suffixes differ, a needed package is missing, or the copy does not read back.
    """
    src, out = Path(src), Path(out)
    fmt = format_of(src)
    if out.suffix.lower() != src.suffix.lower():
        raise UsageError(
            f"--out {out} must have the same suffix as the model ({src.suffix}): a copy is written"
        )
    # A copy of a private model is private too: a new file takes the source's mode.
    with replace_atomically(out, mode=stat.S_IMODE(src.stat().st_mode)) as stage:
        fmt.write_metadata(src, stage / out.name, {META_KEY: meta.to_json()})
    written, _ = read_model_meta(out)
    if written != meta:
        raise UsageError(f"{out}: metadata did not read back as written; the file was not updated correctly")
    return out
