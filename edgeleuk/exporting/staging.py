"""All-or-nothing output: build in a private folder beside the destination, then rename.

An OpenVINO IR is two files; both are staged and moved only after the gate
passed, so a failed export leaves nothing behind and an old file stays intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def output_files(dest: Path) -> tuple[Path, ...]:
    """The files an export to ``dest`` writes (``.xml`` comes with its ``.bin``)."""
    return (dest.with_suffix(".bin"), dest) if dest.suffix == ".xml" else (dest,)


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder on ``dest``'s file system; files named like ``dest`` in it replace it on success.

    The ``.bin`` of an IR is moved before its ``.xml``, so the ``.xml`` (what
    readers open) never points at missing weights.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield stage
        for final in output_files(dest):
            os.replace(stage / final.name, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
