"""All-or-nothing output: build in a private folder beside the destination, then move in.

An ONNX file is one ``os.replace``. An OpenVINO IR is two files, and readers
open the ``.xml``, which names its weights only by the shared stem: an old
``.xml`` beside a new ``.bin`` of the same architecture would load silently with
the old metadata (threshold, gate report). So the ``.xml`` is the commit point:

1. the old ``.xml`` and then the old ``.bin`` are moved into the staging folder,
2. the new ``.bin`` is moved in, then the new ``.xml``.

Whenever ``model.xml`` exists, the ``model.bin`` beside it is its own. An error
on the way moves the old pair back. If the process dies between steps 1 and 2,
``model.xml`` is missing (readers fail loudly; rerun the export) and both pairs
stay in the hidden staging folder ``.model.xml.*/`` (the old one under
``previous/``). What remains: a reader that read the old ``.xml`` just before
the swap and opens the ``.bin`` just after it sees the new weights; OpenVINO
reads both in one call, so that window is the few milliseconds of the swap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeleuk.runtime.registry import kind_for_suffix


def output_files(dest: Path) -> tuple[Path, ...]:
    """The files an export to ``dest`` writes: its kind's companions (an IR's ``.bin``), then ``dest``."""
    return kind_for_suffix(dest.suffix).files(dest)


def _fsync(path: Path) -> None:
    # Durable data before the renames that publish it; directories only where POSIX allows it.
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_pair(stage: Path, xml: Path) -> None:
    """Move ``stage/<xml name>`` and its ``.bin`` over ``xml`` and its ``.bin`` (see module docstring)."""
    weights, _ = output_files(xml)
    previous = stage / "previous"
    previous.mkdir()
    hidden: list[Path] = []
    placed_weights = False
    try:
        for final in (xml, weights):  # .xml first: from now on no reader can pair anything
            if final.exists():
                os.replace(final, previous / final.name)
                hidden.append(final)
        os.replace(stage / weights.name, weights)
        placed_weights = True
        os.replace(stage / xml.name, xml)  # the commit point
    except BaseException:
        if placed_weights:
            weights.unlink(missing_ok=True)
        for final in reversed(hidden):  # .bin back before .xml
            os.replace(previous / final.name, final)
        raise


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder on ``dest``'s file system; files named like ``dest`` in it replace it on success.

    On an exception nothing at ``dest`` changes and the folder is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield stage
        for final in output_files(dest):
            _fsync(stage / final.name)
        if len(output_files(dest)) == 2:  # a main file and its weights: the main file commits
            swap_pair(stage, dest)
        else:
            os.replace(stage / dest.name, dest)
        _fsync(dest.parent)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
