"""How the files beside this script were made: run with the edgeleuk tree of commit de47e90 (before the layer layout).

    git worktree add /tmp/old de47e90
    PYTHONPATH=/tmp/old python tests/data/pre-layout/make_files.py /tmp/out && gzip -9 /tmp/out/*

The old module paths (edgeleuk.checkpoint, edgeleuk.meta, edgeleuk.model...) exist only in that
tree, so this script does not run against the current one; tests/io/test_pre_layout_files.py
checks that the current code still reads what it wrote.
"""

import sys
from pathlib import Path

import torch
from edgeleuk.checkpoint import save_checkpoint  # type: ignore[import-not-found]
from edgeleuk.meta import ModelMeta  # type: ignore[import-not-found]
from edgeleuk.model import create_model  # type: ignore[import-not-found]

from edgeleuk.exporting import export_model
from edgeleuk.exporting.profile import load_profile
from edgeleuk.synth import make_synthetic

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
ckpt = out / "tiny.pt"
save_checkpoint(ckpt, create_model("seresnext_tiny").state_dict(),
                ModelMeta(arch="seresnext_tiny", recipe="pre-layout", threshold=0.42))
data = Path("/tmp/oldsynth")
if not data.exists():
    make_synthetic(data, subjects=6, cells_per_subject=4, seed=0)
fp32 = load_profile("cpu-fp32").replace(parity_n=5, source_date_epoch=0)
export_model(ckpt, out / "tiny.onnx", fp32, calib=data)
export_model(ckpt, out / "tiny.xml", fp32.replace(format="openvino", gate_engines=("openvino",)), calib=data)
