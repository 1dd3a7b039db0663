"""A real export of the tiny checkpoint runs on cpu and openvino like the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeleuk.io.data import list_images
from edgeleuk.io.imageio import decode_image
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.classifier import Classifier

FP32_LOGIT_TOLERANCE = 1e-4  # the cpu-fp32 profile's parity gate


def test_exported_model_matches_the_reference_on_both_backends(
    tiny_onnx: Path, tiny_checkpoint: Path, synth_root: Path
) -> None:
    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

    exported = tiny_onnx  # the session's shared cpu-fp32 export (conftest.py)
    ckpt = load_checkpoint(tiny_checkpoint)
    paths = list_images(synth_root / "prelim")[:3]
    images = np.stack([decode_image(p).image for p in paths])
    ref_logits, _ = TorchReference(ckpt).predict_arrays(images)

    results = {}
    for backend in ("cpu", "openvino"):
        clf = Classifier.load(exported, backend=backend)
        assert clf.meta == ckpt.meta and clf.info.name == backend
        by_array = np.array([p.logit for p in clf.predict_arrays(images)])
        by_path = np.array([p.logit for p in clf.predict_paths(paths)])
        np.testing.assert_array_equal(by_array, by_path)
        np.testing.assert_allclose(by_array, ref_logits, atol=FP32_LOGIT_TOLERANCE)
        results[backend] = by_array
    np.testing.assert_allclose(results["cpu"], results["openvino"], atol=FP32_LOGIT_TOLERANCE)

    meta, export = read_model_meta(exported)
    assert meta == ckpt.meta and export["precision"] == "fp32"
