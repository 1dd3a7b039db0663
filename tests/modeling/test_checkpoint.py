import os

import pytest
import torch

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.modeling.checkpoint import (
    Checkpoint,
    convert_paper_state_dict,
    import_paper_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from edgeleuk.modeling.model import create_model
from edgeleuk.modeling.weights import safe_torch_load


def _paper_style_state_dict(model: torch.nn.Module) -> dict:
    """The layout of the paper's published model.pt: DataParallel keys and a `cls` head."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("last_linear."):
            key = "cls.2." + key.removeprefix("last_linear.")
        out["module." + key] = value.clone()
    return out


@pytest.mark.slow
def test_import_paper_checkpoint_reproduces_logits(tmp_path):
    torch.manual_seed(1)
    original = create_model("legacy_seresnext50_32x4d").eval()
    src = tmp_path / "model.pt"
    torch.save(_paper_style_state_dict(original), src)
    ckpt = import_paper_checkpoint(src, tmp_path / "imported.pt")
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(ckpt.build_model()(x), original(x))
    assert ckpt.meta.preprocess.mean == (0.0, 0.0, 0.0)  # ToTensor only, as the paper's code
    assert ckpt.meta.extra["imported_from"] == "model.pt"


def test_key_mapping():
    mapped = convert_paper_state_dict({"module.layer0.conv1.weight": 1, "module.cls.2.bias": 2})
    assert mapped == {"layer0.conv1.weight": 1, "last_linear.bias": 2}


def test_import_lists_mismatching_keys(tmp_path):
    src = tmp_path / "model.pt"
    torch.save({"module.layer0.conv1.weight": torch.zeros(1)}, src)
    with pytest.raises(CheckpointError, match="do not fit"):
        import_paper_checkpoint(src, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        safe_torch_load(evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)


def test_round_trip_and_foreign_files(tmp_path):
    model = create_model("seresnext_tiny")
    meta = ModelMeta(arch="seresnext_tiny", seed=3, val_metrics={"f1": 0.5})
    path = save_checkpoint(tmp_path / "c.pt", model.state_dict(), meta)
    ckpt = load_checkpoint(path)
    assert ckpt.meta == meta
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in model.state_dict().items())
    torch.save({"a": torch.zeros(1)}, tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="import-checkpoint"):
        load_checkpoint(tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_architecture_is_reported():
    state = create_model("seresnext_tiny").state_dict()
    with pytest.raises(CheckpointError, match="legacy_seresnext50_32x4d"):
        Checkpoint(meta=ModelMeta(), state_dict=state).build_model()


def test_checkpoint_is_fsynced_with_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1]
    )
    save_checkpoint(
        tmp_path / "c.pt", create_model("seresnext_tiny").state_dict(), ModelMeta(arch="seresnext_tiny")
    )
    assert any(os.path.basename(p).startswith(".c.pt.") for p in synced) and str(tmp_path) in synced


def test_torch_without_the_weights_only_fix_is_refused(tmp_path, monkeypatch):
    path = save_checkpoint(
        tmp_path / "c.pt", create_model("seresnext_tiny").state_dict(), ModelMeta(arch="seresnext_tiny")
    )
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(CheckpointError, match="CVE-2025-32434"):
        safe_torch_load(path)
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    assert safe_torch_load(path)["format"]
