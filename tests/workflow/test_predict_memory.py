"""``edgeleuk predict`` stays under 1 GB peak RSS at its default batch, per precision, flat in the file count.

Each measurement is a separate ``edgeleuk predict`` process (its own VmHWM high-water
mark, edgeleuk.bench.memory). A bound, not a timing. The full-network checks are slow:
the paper's SE-ResNeXt50 with random weights on SYNTHETIC cells.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeleuk.bench.memory import run_measured
from edgeleuk.io.data import list_images

HERE = Path(__file__).resolve().parent
LIMIT = 1e9  # bytes: what a small microscope PC should not exceed
#: (backend, --precision, model) per precision the runtime computes in.
CONFIGS = {"fp32-cpu": ("cpu", "f32", "onnx"), "fp32-openvino": ("openvino", "f32", "onnx"),
           "bf16-openvino": ("openvino", "bf16", "onnx"), "int8-openvino": ("openvino", "f32", "ir")}


def _folder(synth_root: Path, tmp: Path, n: int) -> Path:
    folder = tmp / f"in{n}"
    folder.mkdir()
    for src in list_images(synth_root / "training_data", recursive=True)[:n]:
        (folder / src.name).symlink_to(src.resolve())
    return folder


def _peak(model: Path, folder: Path, backend: str, precision: str, out: Path) -> int:
    argv = [sys.executable, "-m", "edgeleuk", "predict", str(folder), "--model", str(model), "--backend", backend,
            "--precision", precision, "--threads", "2", "--out", str(out)]
    done = run_measured(argv, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.peak_rss


def _export(ckpt_path: Path, dest: Path, synth_root: Path, int8: bool) -> Path:
    """The graph as export writes it, without the parity gate (whose eager reference is slow here)."""
    import onnx

    from edgeleuk.exporting import load_profile
    from edgeleuk.exporting.graph import export_onnx
    from edgeleuk.exporting.pipeline import export_info, metadata_strings
    from edgeleuk.io.formats import set_ir_metadata, set_onnx_metadata
    from edgeleuk.modeling.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = export_onnx(ckpt, 17)
    onnx_path = dest / f"{ckpt.meta.arch}.onnx"
    profile = load_profile("cpu-fp32")
    set_onnx_metadata(model, metadata_strings(ckpt, export_info(ckpt, profile, None, "test")))
    onnx.save(model, str(onnx_path))
    if not int8:
        return onnx_path
    import nncf
    import openvino as ov

    from edgeleuk.exporting.int8 import float_tail, save_ir
    from edgeleuk.io.imageio import decode_image

    cells = [decode_image(p).image[None] for p in list_images(synth_root / "training_data", recursive=True)[:4]]
    quantized = nncf.quantize(ov.Core().read_model(str(onnx_path)), nncf.Dataset(cells), subset_size=len(cells),
                              ignored_scope=float_tail(nncf))
    profile = load_profile("openvino-int8")
    set_ir_metadata(quantized, metadata_strings(ckpt, export_info(ckpt, profile, None, "test")))
    xml = dest / f"{ckpt.meta.arch}-int8.xml"
    save_ir(quantized, xml)
    return xml


def _checkpoint(path: Path) -> Path:
    """The paper's network with random weights (seed 0)."""
    import torch

    from edgeleuk.core.meta import PAPER_ARCH, ModelMeta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    torch.manual_seed(0)
    save_checkpoint(path, create_model(PAPER_ARCH).state_dict(), ModelMeta(recipe="memory-test"))
    return path


def _isolated(*args: str) -> Path:
    """Build a checkpoint or export in a child process.

    Tracing and quantizing the full network leave torch, OpenVINO and NNCF state behind,
    and this process goes on running other tests.
    """
    code = ("import sys; from pathlib import Path; sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]; "
            "from pathlib import Path; import test_predict_memory as t; "
            "a = sys.argv[3:]; print(t._checkpoint(Path(a[0])) if sys.argv[2] == 'ckpt' else "
            "t._export(Path(a[0]), Path(a[1]), Path(a[2]), a[3] == '1'))")
    done = subprocess.run([sys.executable, "-c", code, str(HERE), *args], capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def _export_isolated(ckpt_path: Path, dest: Path, synth_root: Path, int8: bool) -> Path:
    return _isolated("export", str(ckpt_path), str(dest), str(synth_root), "1" if int8 else "0")


@pytest.fixture(scope="module")
def tiny_models(tiny_onnx: Path) -> dict:
    return {"onnx": tiny_onnx}  # the session's shared cpu-fp32 export (conftest.py); predict only reads it


@pytest.mark.parametrize("config", ["fp32-cpu", "fp32-openvino", "bf16-openvino"])
def test_predict_memory_is_flat_in_the_number_of_files(config: str, tiny_models: dict, synth_root: Path,
                                                        tmp_path: Path) -> None:
    backend, precision, kind = CONFIGS[config]
    few = _peak(tiny_models[kind], _folder(synth_root, tmp_path, 6), backend, precision, tmp_path / "a.csv")
    many = _peak(tiny_models[kind], _folder(synth_root, tmp_path, 48), backend, precision, tmp_path / "b.csv")
    # 42 more decoded 450x450 cells held at once would add ~25 MB.
    assert many - few < 15e6, (few, many)
    assert many < LIMIT


@pytest.fixture(scope="module")
def full_models(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> dict:
    # Its own export: the paper's full network, not the shared tiny model.
    dest = tmp_path_factory.mktemp("fullmem")
    path = _isolated("ckpt", str(dest / "full.pt"))
    return {"checkpoint": path, "onnx": _export_isolated(path, dest, synth_root, int8=False)}


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_full_network_predict_stays_under_1_gb_at_the_default_batch(
    config: str, full_models: dict, synth_root: Path, tmp_path: Path
) -> None:
    backend, precision, kind = CONFIGS[config]
    model = full_models["onnx"] if kind == "onnx" else _export_isolated(full_models["checkpoint"], tmp_path,
                                                                            synth_root, int8=True)
    peak = _peak(model, _folder(synth_root, tmp_path, 8), backend, precision, tmp_path / "p.csv")
    assert peak < LIMIT, f"{config}: {peak / 1e6:.0f} MB"
