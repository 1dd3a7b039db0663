"""The deployed path never imports torch: import, load, predict in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bmp

SCRIPT = """
import json, sys
from edgeleuk import Classifier
from edgeleuk.workflow.predict import predict, PredictOptions
clf = Classifier.load(sys.argv[1], backend=sys.argv[2])
[result] = clf.predict_paths([sys.argv[3]])
summary = predict(sys.argv[4], model=sys.argv[1], out=sys.argv[5],
                  options=PredictOptions(backend=sys.argv[2], progress=False))
heavy = sorted(m for m in ("torch", "torchvision", "timm", "onnx", "sklearn") if m in sys.modules)
print(json.dumps({"status": result.status, "ok": summary.ok, "heavy": heavy, "backend": clf.info.name}))
"""


@pytest.mark.parametrize("backend", ["cpu", "openvino"])
def test_runtime_path_imports_no_torch(tmp_path: Path, backend: str) -> None:
    model = build_onnx(tmp_path / "tiny.onnx")
    image = write_bmp(tmp_path / "cells" / "1.bmp", gray_cell(200))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(model),
            backend,
            str(image),
            str(image.parent),
            str(tmp_path / "p.csv"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"status": "ok", "ok": 1, "heavy": [], "backend": backend}
