"""Float32 ONNX export of the tiny checkpoint: contract, gate, metadata, atomicity, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeleuk.core.contract import EXPORT_KEY, META_KEY
from edgeleuk.core.errors import GateFailed
from edgeleuk.core.meta import ModelMeta, Preprocess
from edgeleuk.exporting import export_model, load_profile
from edgeleuk.info import describe_model_file
from edgeleuk.io.files import sha256_file
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.modeling.checkpoint import load_checkpoint
from edgeleuk.modeling.reference import TorchReference

EPOCH = 1_700_000_000


def _profile(**changes):
    return load_profile("cpu-fp32").replace(**{"parity_n": 6, "source_date_epoch": EPOCH, **changes})


@pytest.fixture(scope="module")
def exported(tiny_export):
    """The session's shared tiny export (conftest.py), made with exactly this module's ``_profile()``."""
    assert tiny_export.profile == _profile()
    return tiny_export


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_export_passes_gate_on_ort_and_openvino(exported) -> None:
    assert exported.path.is_file() and exported.files == (exported.path,)
    assert exported.gate.passed and exported.gate.n == 6 and exported.gate.labelled
    checks = {c.engine: c for c in exported.gate.checks}
    assert set(checks) == {"cpu", "openvino"}
    for check in checks.values():
        assert check.status == "passed" and check.parity.agreement == 1.0
        assert check.parity.max_abs_logit_delta <= 1e-4
    text = exported.describe()
    assert "PASSED" in text and "MB" in text and "SYNTHETIC" in text


def test_graph_contract_and_batch_sizes(exported) -> None:
    model = onnx.load(str(exported.path))
    (inp,) = model.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 450, 450, 3]
    assert [o.name for o in model.graph.output] == ["logit", "prob", "view_logits", "embedding", "cam"]
    # All views' pixels come from one gather (along the pixel axis); the others pick the rotations'
    # index rows by the 'views' initializer and read its length, and the engines fold them.
    pixel_gathers = [n for n in model.graph.node if n.op_type == "Gather"
                     and any(a.name == "axis" and a.i == 2 for a in n.attribute)]
    assert len(pixel_gathers) == 1
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(3).integers(0, 256, (5, 450, 450, 3), dtype=np.uint8)
    five_logit, five_prob = session.run(["logit", "prob"], {"image": images})
    ones = np.concatenate([session.run(["logit"], {"image": images[i : i + 1]})[0] for i in range(5)])
    assert five_logit.shape == (5,) and five_logit.dtype == np.float32
    np.testing.assert_allclose(ones, five_logit, atol=1e-5)
    np.testing.assert_allclose(five_prob, 1 / (1 + np.exp(-five_logit.astype(np.float64))), atol=1e-6)


def test_metadata_round_trips(exported, tiny_checkpoint: Path) -> None:
    props = _props(exported.path)
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ModelMeta.from_json(props[META_KEY]) == ckpt.meta
    info = json.loads(props[EXPORT_KEY])
    assert info["source_sha256"] == sha256_file(tiny_checkpoint)
    assert info["precision"] == "fp32" and info["opset"] == 17 and info["rotations"] == 8
    assert info["input"]["dtype"] == "uint8" and info["input"]["shape"] == ["N", 450, 450, 3]
    assert info["gate"]["passed"] is True and len(info["gate"]["checks"]) == 2
    assert info["exported_at"] == "2023-11-14T22:13:20+00:00"
    meta, export = read_model_meta(exported.path)
    assert meta == ckpt.meta and export["profile"]["name"] == "cpu-fp32"
    assert "seresnext_tiny" in describe_model_file(exported.path)


def test_export_is_byte_identical_with_fixed_time(exported, tiny_checkpoint: Path, synth_root: Path,
                                                   tmp_path: Path) -> None:
    again = export_model(tiny_checkpoint, tmp_path / "again.onnx", _profile(), data=synth_root)
    assert again.path.read_bytes() == exported.path.read_bytes()


def test_only_timestamp_differs_without_fixed_time(exported, tiny_checkpoint: Path, synth_root: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH + 60))  # the env var beats the profile
    other = export_model(tiny_checkpoint, tmp_path / "other.onnx", _profile(), data=synth_root)
    assert other.path.read_bytes() != exported.path.read_bytes()
    a, b = json.loads(_props(exported.path)[EXPORT_KEY]), json.loads(_props(other.path)[EXPORT_KEY])
    assert b.pop("exported_at") == "2023-11-14T22:14:20+00:00"
    a.pop("exported_at")
    assert a == b
    strip = [onnx.load(str(p)) for p in (exported.path, other.path)]
    for model in strip:
        del model.metadata_props[:]
    assert strip[0].SerializeToString() == strip[1].SerializeToString()


class _Shifted:
    """A backend whose logits are ``delta`` off: one engine that breaches while the other passes."""

    def __init__(self, backend, delta: float) -> None:
        self._backend, self._delta = backend, delta

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit, _ = self._backend.run(batch)
        logit = (logit + self._delta).astype(np.float32)
        return logit, (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def _breach_on(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate opens ``engine`` with logits 1e-3 off (the profile allows 1e-4); the other engine as usual."""
    from edgeleuk.exporting import gate

    real = gate.open_backend
    monkeypatch.setattr(gate, "open_backend",
                        lambda path, name, **kw: _Shifted(real(path, name, **kw), 1e-3 if name == engine else 0.0))


@pytest.mark.parametrize("engine", ["cpu", "openvino"])
def test_one_breaching_engine_of_two_fails_the_gate_and_leaves_nothing(
    engine: str, tiny_checkpoint: Path, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped profile gates on both engines; either one breaching refuses the file.
    assert _profile().gate_engines == ("cpu", "openvino")
    _breach_on(engine, monkeypatch)
    old = tmp_path / "model.onnx"
    old.write_bytes(b"previous model")
    with pytest.raises(GateFailed, match="max\\|dlogit\\|") as err:
        export_model(tiny_checkpoint, old, _profile(), data=synth_root)
    message = str(err.value)
    assert "parity gate FAILED" in message and "no file was written" in message
    status = {line.split()[0]: line.split()[1] for line in message.splitlines() if line.startswith("  ")
              and line.split()[0] in ("cpu", "openvino")}
    assert status == {engine: "FAILED", ({"cpu", "openvino"} - {engine}).pop(): "PASSED"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files either
    assert old.read_bytes() == b"previous model"


def test_corrupted_parity_fails_and_leaves_nothing(tiny_checkpoint: Path, synth_root: Path,
                                                   tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    wrong = ckpt.meta.replace(preprocess=Preprocess(mean=(0.5, 0.5, 0.5)))
    old = tmp_path / "model.onnx"
    old.write_bytes(b"previous model")
    with pytest.raises(GateFailed, match="max\\|dlogit\\|") as err:
        export_model(ckpt, old, _profile(), data=synth_root, reference=TorchReference(ckpt, meta=wrong))
    assert "no file was written" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files either
    assert old.read_bytes() == b"previous model"


def test_cli_export_and_info(tiny_checkpoint: Path, synth_root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    profile = tmp_path / "quick.toml"
    profile.write_text('name = "quick"\ngate_engines = ["cpu"]\nparity_n = 5\nmax_abs_logit_delta = 1e-4\n')
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), "--profile", str(profile),
                                      "--calib", str(synth_root)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and out.is_file()
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "quick" in info.output
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nprecisoin = "fp32"\n')
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "x.onnx"),
                                      "--profile", str(bad)])
    assert result.exit_code == 2 and "precisoin" in result.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_full_seresnext50_passes_fp32_gate(synth_root: Path, tmp_path: Path) -> None:
    """The paper's network (random weights: none can be downloaded here) at 450 -> 300 with 8 rotations."""
    import torch

    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "full.pt", create_model().state_dict(), ModelMeta())
    prof = _profile(parity_n=2, batch_sizes=(1, 2), gate_engines=("cpu",))
    result = export_model(ckpt, tmp_path / "full.onnx", prof, data=synth_root)
    assert result.gate.passed and result.gate.checks[0].parity.max_abs_logit_delta <= 1e-4
    assert result.size_bytes > 90e6  # ~26M float32 weights plus the rotation index


def test_cli_gate_breach_exits_1_without_file(tiny_checkpoint: Path, synth_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    _breach_on("openvino", monkeypatch)  # cpu passes: one breaching engine of the two is enough
    profile = tmp_path / "quick.toml"
    profile.write_text('name = "quick"\ngate_engines = ["cpu", "openvino"]\nparity_n = 5\n'
                       'max_abs_logit_delta = 1e-4\n')
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(tiny_checkpoint), "--out", str(out), "--profile", str(profile),
                                      "--calib", str(synth_root)])
    assert result.exit_code == 1
    assert "parity gate FAILED" in result.output and "no file was written" in result.output
    assert re.search(r"cpu\s+PASSED", result.output) and re.search(r"openvino\s+FAILED", result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quick.toml"]
