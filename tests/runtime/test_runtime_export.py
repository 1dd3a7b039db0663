"""A real export of the tiny checkpoint runs on cpu and openvino like the PyTorch reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgeleuk.io.data import list_images
from edgeleuk.io.imageio import decode_image
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.classifier import Classifier

FP32_LOGIT_TOLERANCE = 1e-4  # the cpu-fp32 profile's parity gate


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeleuk.exporting import export_model, load_profile

    # The shipped profile, with a smaller gate: this test does its own comparison below.
    profile = dataclasses.replace(load_profile("cpu-fp32"), parity_n=4, batch_sizes=(1, 2))
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return export_model(tiny_checkpoint, out=out, profile=profile, calib=synth_root).path


@pytest.mark.slow
def test_exported_model_matches_the_reference_on_both_backends(
    exported: Path, tiny_checkpoint: Path, synth_root: Path
) -> None:
    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

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
