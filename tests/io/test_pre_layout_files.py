"""Model files and checkpoints written before the layer layout keep loading.

``tests/data/pre-layout`` holds a tiny checkpoint (threshold 0.42), its ONNX export and its
OpenVINO IR export, written by the code of commit de47e90 (``make_files.py`` there says how).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_support import gray_cell

from edgeleuk.info import describe_model_file
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.io.modelwrite import write_model_with_meta
from edgeleuk.runtime.classifier import Classifier

OLD = Path(__file__).resolve().parents[1] / "data" / "pre-layout"


@pytest.fixture(scope="module")
def old_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pre-layout")
    for packed in OLD.glob("*.gz"):
        with gzip.open(packed) as src, open(folder / packed.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


def test_old_exports_read_their_metadata_and_agree_on_every_engine(old_files: Path) -> None:
    cells = np.stack([gray_cell(level, seed=level) for level in (40, 128, 220)])
    probs = {}
    for name, backend in (("tiny.onnx", "cpu"), ("tiny.xml", "openvino"), ("tiny.onnx", "openvino")):
        meta, export = read_model_meta(old_files / name)
        assert meta.threshold == 0.42 and meta.arch == "seresnext_tiny" and export["precision"] == "fp32"
        clf = Classifier.load(old_files / name, backend=backend)
        probs[name, backend] = np.array([p.prob_all for p in clf.predict_arrays(cells)])
    first = next(iter(probs.values()))
    for found in probs.values():
        np.testing.assert_allclose(found, first, atol=1e-4)
    assert "OpenVINO IR model" in describe_model_file(old_files / "tiny.xml")


def test_an_old_ir_takes_a_new_threshold(old_files: Path, tmp_path: Path) -> None:
    meta, _ = read_model_meta(old_files / "tiny.xml")
    out = write_model_with_meta(old_files / "tiny.xml", tmp_path / "calibrated.xml", meta.replace(threshold=0.3))
    assert read_model_meta(out)[0].threshold == 0.3 and out.with_suffix(".bin").is_file()


def test_an_old_checkpoint_loads(old_files: Path) -> None:
    pytest.importorskip("torch")
    from edgeleuk.modeling.checkpoint import load_checkpoint

    ckpt = load_checkpoint(old_files / "tiny.pt")  # its on-disk format name predates the modeling/ folder
    assert ckpt.meta.threshold == 0.42 and ckpt.meta.recipe == "pre-layout" and len(ckpt.state_dict) > 10
