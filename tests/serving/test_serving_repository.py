"""Triton / OpenVINO Model Server repositories: layout, metadata, and Triton's own config schema.

Neither server runs here: the Triton config is parsed with Triton's ``ModelConfig`` protobuf
(from ``tritonclient``), which rejects unknown fields and wrong types.
"""

from __future__ import annotations

import json

import pytest
from runtime_support import build_ir, build_onnx

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.wire import model_sha256
from edgeleuk.serving.repository import RepoOptions, triton_config, write_serving_repos

META = ModelMeta(arch="seresnext_tiny", recipe="repo-test", threshold=0.37, threshold_source="calibrated")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo-models")
    onnx = build_onnx(root / "model.onnx", META)
    return onnx, build_ir(onnx, root / "model-int8.xml")


def parse_triton(text: str):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient (extra serving-test) checks the schema")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_triton_config_follows_the_model_config_schema(models, tmp_path):
    onnx, ir = models
    result = write_serving_repos(tmp_path / "repo", [onnx, ir], options=RepoOptions(max_batch=16))
    folder = result.repos["triton"] / "edgeleuk"
    assert (folder / "1" / "model.onnx").read_bytes() == onnx.read_bytes()
    cfg = parse_triton((folder / "config.pbtxt").read_text())
    from tritonclient.grpc import model_config_pb2 as pb

    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("edgeleuk", "onnxruntime", 16)
    (image,) = cfg.input
    assert (image.name, image.data_type, list(image.dims)) == ("image", pb.TYPE_UINT8, [450, 450, 3])
    assert [o.name for o in cfg.output] == ["logit", "prob"]
    for out in cfg.output:
        # One scalar per image: [1] for clients, [] for the model (whose outputs are [N]).
        assert out.data_type == pb.TYPE_FP32 and list(out.dims) == [1]
        assert out.HasField("reshape") and list(out.reshape.shape) == []
    assert cfg.HasField("dynamic_batching")
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert float(params["edgeleuk.threshold"]) == 0.37
    assert json.loads(params["edgeleuk.class_names"]) == {"0": "hem", "1": "all"}
    assert params["edgeleuk.sha256"] == model_sha256(onnx)
    assert ModelMeta.from_json(params["edgeleuk.meta"]) == META


def test_triton_tensorrt_accelerator_for_fp16(models):
    text = triton_config(META, {"precision": "fp16"}, "0" * 64, RepoOptions(tensorrt=True))
    cfg = parse_triton(text)
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    # An engine cache (no rebuild per start) and one shape profile (no rebuild per batch size):
    # parameters Triton's onnxruntime backend maps to TensorRT provider options.
    assert accel.parameters["trt_engine_cache_enable"] == "1"
    assert accel.parameters["trt_engine_cache_path"] == "/tmp/edgeleuk-tensorrt/edgeleuk"
    assert accel.parameters["trt_profile_min_shapes"] == "image:1x450x450x3"
    assert accel.parameters["trt_profile_opt_shapes"] == "image:8x450x450x3"
    assert accel.parameters["trt_profile_max_shapes"] == "image:8x450x450x3"
    with pytest.raises(UsageError, match="GPU"):
        triton_config(META, {"precision": "fp32"}, "0" * 64, RepoOptions(tensorrt=True, gpu=False))


def test_ovms_repository_layout(models, tmp_path):
    _, ir = models
    result = write_serving_repos(tmp_path / "repo", [ir], options=RepoOptions(name="leuk"))
    assert list(result.repos) == ["ovms"]
    ovms = result.repos["ovms"]
    version = ovms / "leuk" / "1"
    assert (version / "model.xml").read_bytes() == ir.read_bytes()
    assert (version / "model.bin").read_bytes() == ir.with_suffix(".bin").read_bytes()
    config = json.loads((ovms / "config.json").read_text())
    (entry,) = config["model_config_list"]
    # base_path relative to config.json: OVMS resolves it there, so the folder can be mounted anywhere.
    assert entry["config"]["name"] == "leuk" and (ovms / entry["config"]["base_path"] / "1").is_dir()


def test_refuses_two_models_for_one_repository_none_at_all_and_a_used_folder(models, tmp_path):
    onnx, ir = models
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(onnx.read_bytes())
    with pytest.raises(UsageError, match="already goes to the triton repository"):
        write_serving_repos(tmp_path / "a", [onnx, copy])
    with pytest.raises(UsageError, match="give at least one --model"):
        write_serving_repos(tmp_path / "c", [])
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        write_serving_repos(used, [onnx])
    assert sorted(p.name for p in used.iterdir()) == ["keep.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind


@pytest.mark.parametrize("name", [".", "..", "a/b", "a\\b", ".hidden", "x" * 129])
def test_names_that_are_no_plain_folder_name_are_refused(name):
    with pytest.raises(UsageError, match="model name"):
        RepoOptions(name=name)


def test_serving_repo_refuses_a_dot_name_and_a_linked_output_with_exit_2(models, tmp_path):
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    onnx, _ = models
    runner = CliRunner()
    dots = [runner.invoke(app, ["serving-repo", str(tmp_path / f"r{i}"), "-m", str(onnx), "--name", n])
            for i, n in enumerate((".", ".."))]
    assert [r.exit_code for r in dots] == [2, 2] and all("model name" in r.output for r in dots)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    linked = runner.invoke(app, ["serving-repo", str(tmp_path / "link"), "-m", str(onnx)])
    assert linked.exit_code == 2 and "is a link" in linked.output and "Traceback" not in linked.output
    assert list(target.iterdir()) == []


def test_the_umask_is_never_changed_and_every_file_is_synced(models, tmp_path, monkeypatch):
    import os

    import edgeleuk.serving.repository as repository

    masks, synced = [], []
    monkeypatch.setattr(os, "umask", lambda mask: masks.append(mask) or 0o022)
    monkeypatch.setattr(repository, "fsync_file", lambda path: synced.append(path.name), raising=False)
    onnx, ir = models
    result = write_serving_repos(tmp_path / "repo", [onnx, ir])
    assert masks == []
    assert sorted(synced) == ["config.json", "config.pbtxt", "model.bin", "model.onnx", "model.xml"]
    assert (result.out.stat().st_mode & 0o777) == 0o777 & ~repository.current_umask()
