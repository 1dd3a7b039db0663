"""End to end: a model calibrated on 240 drawn cells flags few held-out cells and every shift kind.

The calibration ``edgeleuk calibrate`` makes (``quality.fit_ranges`` on the cells' pixels,
``quality.fit_ood`` on the graph's embeddings of them), stored in a copy of the shared tiny export;
then the deployed runtime (``Classifier.predict_arrays``) with the file's own metadata. SYNTHETIC
cells and a random-weight network: the figures show the pipeline meets its bounds, nothing about real
cells (``benchmarks/trust.py --calibrated`` measures the same on a trained model with 1000 + 7 x 200).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeleuk import Classifier, quality
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.io.modelwrite import write_model_with_meta
from edgeleuk.synth.shifts import SHIFT_KINDS, normal_cells, shifted_cells

#: A C-NMC preliminary set's size: enough cells for the conformal 99.5th percentile not to be the largest.
CALIBRATION_CELLS = 240


def _batches(cells, n: int = 16):
    batch = []
    for cell in cells:
        batch.append(cell)
        if len(batch) == n:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@pytest.fixture(scope="module")
def calibrated(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    clf = Classifier.load(tiny_onnx, "cpu", qc=False)
    meta, _ = read_model_meta(tiny_onnx)
    embeddings = np.concatenate([clf.embed_arrays(b)[1] for b in _batches(normal_cells(CALIBRATION_CELLS, 0))])
    ranges = quality.fit_ranges(normal_cells(CALIBRATION_CELLS, 0), meta.preprocess, how="calibrate")
    out = tmp_path_factory.mktemp("calibrated") / "tiny.onnx"
    write_model_with_meta(tiny_onnx, out, meta.replace(quality=ranges, ood=quality.fit_ood(embeddings)))
    loaded = Classifier.load(out, "cpu")
    assert loaded.trust_note == "" and loaded.trust.ood is not None  # its own ranges and OOD model
    return loaded


def _flagged(clf: Classifier, cells) -> list[bool]:
    return [p.flagged for b in _batches(cells) for p in clf.predict_arrays(b)]


def test_at_most_one_in_a_hundred_held_out_cells_is_flagged(calibrated: Classifier) -> None:
    flags = _flagged(calibrated, normal_cells(100, 1))
    assert sum(flags) <= 1, sum(flags)


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_every_shift_kind_is_flagged_at_95_percent(calibrated: Classifier, kind: str) -> None:
    flags = _flagged(calibrated, shifted_cells(kind, 20, 2))
    assert sum(flags) >= 19, (kind, sum(flags))
