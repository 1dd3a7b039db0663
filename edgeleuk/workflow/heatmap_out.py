"""``predict --heatmaps DIR``: heatmap overlays written while the cells are classified, and their index.

The classifier, loaded with ``heatmaps=True``, gives each prediction its class activation map
(``Prediction.cam``). Each prediction goes through :class:`HeatmapSink` as it arrives: the map
and the cell (decoded again from its file, only when the overlay writer asks for it) go to
:func:`edgeleuk.workflow.heatmaps.write_heatmaps`, which chooses the cells worth an overlay (ALL
calls, flagged cells, cells near the threshold) and writes their PNGs; the map is then dropped,
so a long run never holds more than one map. Each overlay is written into a hidden staging folder
and moved into ``DIR`` under a name no earlier overlay of the run holds (two folders may hold
files of one name), and ``DIR/index.csv`` (:data:`INDEX`) maps each row's path (as the
predictions file writes it) to its overlay, which is how ``report --heatmaps DIR`` puts every
overlay next to its thumbnail.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.io.atomic import atomic_open
from edgeleuk.io.csvcells import name_to_text, sheet_row
from edgeleuk.io.imageio import decode_image
from edgeleuk.runtime.classifier import Prediction

#: The index of a heatmap folder: one row per overlay, ``path`` (the row's) and ``heatmap`` (below DIR).
INDEX = "index.csv"
INDEX_COLUMNS = ("path", "heatmap")

#: Where overlays are written before they get their name in the folder.
STAGING = ".staging"

#: ``(folder, predictions, images, threshold) -> what was written`` (paths, or records with a ``path``).
Writer = Callable[[Path, Sequence[Prediction], Sequence[np.ndarray], float], Any]


def default_writer(pre: Preprocess | None = None) -> Writer:
    """The overlay writer of :mod:`edgeleuk.workflow.heatmaps`, for a model preprocessed as ``pre``.

    Raises:
        UsageError: This installation has no overlay writer (exit 2, before any inference).
    """
    try:
        from edgeleuk.workflow.heatmaps import write_heatmaps
    except ImportError as exc:
        raise UsageError(f"--heatmaps is not available in this installation ({exc})") from exc

    def write(folder: Path, predictions: Sequence[Prediction], images: Sequence[np.ndarray], threshold: float) -> Any:
        return write_heatmaps(folder, predictions, images, threshold, pre=pre)

    return write


class _Cells(Sequence[np.ndarray]):
    """The cells of some predictions, decoded from their files only when asked for (most get no overlay)."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        decoded = decode_image(self.paths[i], self.size)
        if not decoded.ok or decoded.image is None:  # changed since it was classified: no overlay
            raise LookupError(f"{self.paths[i]}: {decoded.error}")
        return decoded.image

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


class HeatmapSink:
    """Write the overlays of predictions as they arrive; keep each prediction without its map.

    Args:
        folder: Where the overlays and :data:`INDEX` go (made if missing).
        clf: The classifier (its threshold and input size).
        row_path: A prediction's file -> the path its row names.
        write: The overlay writer; None: :func:`default_writer` for the model's preprocessing.

    Raises:
        UsageError: ``folder`` cannot be made, or no overlay writer is installed (exit 2).
    """

    def __init__(self, folder: Path, clf: Any, row_path: Callable[[Path], str], write: Writer | None = None) -> None:
        self.folder = Path(folder)
        self.staging = self.folder / STAGING
        self._write = write or default_writer(clf.meta.preprocess)
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make --heatmaps {folder}: {exc.strerror or exc}") from exc
        self.threshold = float(clf.threshold)
        self.size = int(clf.input_size)
        self.row_path = row_path
        self.index: list[tuple[str, str]] = []
        self.names: set[str] = set()
        self.without_map = 0
        self.unreadable = 0
        self.failed = ""  # why overlays stopped (a full disk): the classification goes on without them

    def __call__(self, prediction: Prediction) -> Prediction:
        """Write ``prediction``'s overlay if the writer chooses it; returns it without its map."""
        if prediction.cam is None:
            self.without_map += prediction.ok
            return prediction
        if not self.failed:
            self._overlay(prediction)
        return dataclasses.replace(prediction, cam=None)

    def _overlay(self, prediction: Prediction) -> None:
        try:
            written = self._write(self.staging, [prediction], _Cells([str(prediction.path)], self.size),
                                  self.threshold) or ()
            row = self.row_path(Path(str(prediction.path)))
            for item in written:  # paths, or records that name their path (workflow.heatmaps.Heatmap)
                self.index.append((row, self._place(Path(getattr(item, "path", item)))))
        except LookupError:
            self.unreadable += 1
        except OSError as exc:  # overlays are an aid: the calls still matter more than their pictures
            self.failed = f"overlays stopped after {len(self.index)}: {exc.strerror or exc}"

    def _place(self, staged: Path) -> str:
        """Move a staged overlay into the folder under a name no earlier overlay of this run holds."""
        stem, dot, ext = staged.name.partition(".")
        name, k = staged.name, 1
        while name in self.names:
            name, k = f"{stem}-{k}{dot}{ext}", k + 1
        self.names.add(name)
        os.replace(staged, self.folder / name)
        return name

    def close(self) -> str:
        """Write :data:`INDEX` and remove the staging folder; returns what the summary says about the overlays."""
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            with atomic_open(self.folder / INDEX, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
                writer.writeheader()
                for row, png in self.index:
                    writer.writerow(sheet_row({"path": name_to_text(row), "heatmap": name_to_text(png)}))
        except OSError as exc:
            self.failed = self.failed or f"{INDEX} not written: {exc.strerror or exc}"
        text = (f"heatmaps: {len(self.index)} overlay(s) in {self.folder} (ALL calls, flagged cells and cells near "
                f"the threshold); `edgeleuk report --heatmaps {self.folder}` shows them")
        if self.without_map:
            text += f"; {self.without_map} cell(s) came without a map (the model's graph has no cam output?)"
        if self.unreadable:
            text += f"; {self.unreadable} file(s) changed or vanished before their overlay"
        if self.failed:
            text += f"; WARNING: {self.failed}"
        return text
