"""The training cells' scale and stain reference reach the exported model file (and `info`)."""

from __future__ import annotations

import pytest

from edgeleuk.core.optics import StainReference

pytestmark = pytest.mark.slow  # torch export of the tiny network and its parity gate


def test_export_writes_scale_and_stain_into_the_model_file(synth_root, tmp_path):
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.exporting import export_model, load_profile
    from edgeleuk.info import describe_model_file
    from edgeleuk.io.modelfile import read_model_meta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    ref = StainReference(lab_mean=(60.0, 20.0, -20.0), lab_std=(10.0, 5.0, 6.0), cells=12)
    torch.manual_seed(0)
    ckpt = tmp_path / "scaled.pt"
    save_checkpoint(ckpt, create_model("seresnext_tiny").state_dict(),
                    ModelMeta(arch="seresnext_tiny", recipe="test", um_per_px=0.055, stain_reference=ref))
    profile = load_profile("cpu-fp32").replace(parity_n=6, source_date_epoch=1_700_000_000)
    result = export_model(ckpt, tmp_path / "scaled.onnx", profile, data=synth_root)
    meta, _ = read_model_meta(result.path)
    assert meta.um_per_px == 0.055 and meta.stain_reference == ref
    text = describe_model_file(result.path)
    assert "0.055 um per pixel" in text and "from 12 training cells" in text
