"""Test helpers for the workflow tests: a hand-built ONNX model and cells of known brightness.

The model follows the export contract (input "image" uint8 [N, 450, 450, 3];
outputs "logit" and "prob" float32 [N]; ``edgeleuk.meta``/``edgeleuk.export``
metadata) but computes ``logit = GAIN * (mean pixel / 255 - 0.5)``, so a test
controls each cell's probability through its grey level. It is
``runtime_support``'s model; it needs only the ``onnx`` package, so these tests
do not wait on the exporter.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
from runtime_support import GAIN, SIZE, build_ir, build_onnx

from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.classifier import Classifier, Prediction


def build_brightness_onnx(
    path: Path, meta: ModelMeta | None = None, gain: float = GAIN, centre: float = 127.5
) -> Path:
    """Write the brightness model to ``path`` (.onnx) with edgeleuk metadata.

    ``logit = gain * (mean pixel - centre) / 255``; :func:`prob_for_grey` assumes the defaults.
    """
    meta = meta or ModelMeta(arch="seresnext_tiny", recipe="workflow-test")
    return build_onnx(path, meta, gain=gain, centre=centre)


def build_brightness_ir(onnx_path: Path, xml_path: Path) -> Path:
    """Convert the brightness ONNX to OpenVINO IR with the metadata in rt_info, like the exporter."""
    return build_ir(onnx_path, xml_path)


def grey_for_prob(prob: float) -> int:
    """The grey level whose uniform image the brightness model scores closest to ``prob``."""
    logit = math.log(prob / (1.0 - prob))
    return int(np.clip(round((logit / GAIN + 0.5) * 255.0), 0, 255))


def prob_for_grey(grey: int) -> float:
    """The probability the brightness model gives a uniform image of one grey level."""
    return 1.0 / (1.0 + math.exp(-GAIN * (grey / 255.0 - 0.5)))


def cell_bytes(grey: int, ext: str = ".bmp") -> bytes:
    """Encoded bytes of a uniform 450x450 cell image of one grey level."""
    img = np.full((SIZE, SIZE, 3), grey, np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def write_cell(path: Path, grey: int) -> Path:
    """Write a uniform cell image; the format follows the file suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cell_bytes(grey, path.suffix))
    return path


class Flagging:
    """A classifier whose files named ``*blur*`` fail a quality check and ``*odd*`` lie out of distribution."""

    def __init__(self, clf: Classifier) -> None:
        self._clf = clf
        self.seen: list[str] = []  # every file name classified, in order

    def __getattr__(self, name: str):
        return getattr(self._clf, name)

    @staticmethod
    def judge(p: Prediction) -> Prediction:
        name = Path(str(p.path)).name
        if not p.ok:
            return p
        qc = ("blur",) if "blur" in name else ()
        odd = "odd" in name
        return dataclasses.replace(p, qc=qc, ood_score=123.456789 if odd else 1.5, ood_flag=odd)

    def iter_predict(self, paths):
        for p in self._clf.iter_predict(paths):
            self.seen.append(Path(str(p.path)).name)
            yield self.judge(p)
