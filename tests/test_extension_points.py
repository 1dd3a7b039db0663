"""A new model format and a new backend, declared in a module of their own, reach every place derived from them.

The child process imports a temporary plugin module that registers a folder format (like a
CoreML ``.mlpackage`` or a TensorRT engine folder) and a GPU backend that reads it, and then
imports edgeleuk's CLI: nothing in edgeleuk lists formats or backends again, so both must show
up in the CLI choices, bench rows, export-profile gate engines, ``serving-repo``, ``--cluster``
GPU placement, ``info``, ``predict`` and the all-or-nothing metadata rewrite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent('''
    """A fake folder format and a fake GPU backend, registered from outside edgeleuk."""
    import json
    import shutil
    from pathlib import Path

    import numpy as np

    from edgeleuk.io.formats import ModelFormat, register_format
    from edgeleuk.runtime.base import Backend, BackendInfo
    from edgeleuk.runtime.registry import register


    def read_meta(path):
        return json.loads((Path(path) / "strings.json").read_text())


    def write_meta(src, dest, strings):
        shutil.copytree(src, dest)
        (Path(dest) / "strings.json").write_text(json.dumps({**read_meta(src), **strings}))


    FAKE = register_format(ModelFormat(
        "fakefmt", ".fakepkg", "Fake package", read_metadata=read_meta, write_metadata=write_meta,
        layout="folder", devices=("gpu",), repository="ovms",
    ))


    class FakeBackend(Backend):
        name = "fakebk"
        reads = ("fakefmt",)
        device = "gpu"
        auto_rank = None

        @classmethod
        def availability(cls):
            return None

        def __init__(self, model_path, options):
            self.model_path = Path(model_path)
            self.model_format(self.model_path)

        def run(self, batch):
            logits = np.full(len(batch), 2.0, np.float32)
            return logits, 1.0 / (1.0 + np.exp(-logits))

        def info(self):
            return BackendInfo(self.name, "fake engine 1.0", ("FakeGPU",), "fp32")

        def metadata(self):
            return read_meta(self.model_path)


    register(FakeBackend)
''')

CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    work = Path(sys.argv[1])
    sys.path.insert(0, str(work))
    import fakeplugin  # registers before anything derives from the tables

    from typer.testing import CliRunner

    from edgeleuk.bench.cases import read_model_file, rows_for_file
    from edgeleuk.cli import app
    from edgeleuk.cluster.placement import Node
    from edgeleuk.cluster.predict import plan
    from edgeleuk.core.errors import ConfigError
    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.exporting.profile import ExportProfile
    from edgeleuk.info import describe_model_file
    from edgeleuk.io.modelfile import read_model_meta
    from edgeleuk.io.modelwrite import write_model_with_meta

    model = work / "model.fakepkg"
    model.mkdir()
    meta = ModelMeta(arch="seresnext_tiny", recipe="plugin-test")
    (model / "strings.json").write_text(json.dumps(
        {"edgeleuk.meta": meta.to_json(), "edgeleuk.export": json.dumps({"precision": "fp32"})}))
    (model / "weights.bin").write_bytes(b"0" * 1000)
    cli = CliRunner()
    seen = {}

    seen["predict_help"] = cli.invoke(app, ["predict", "--help"]).output
    seen["bench_help"] = cli.invoke(app, ["bench", "--help"]).output
    seen["bench_rows"] = [case.backend for case in rows_for_file(read_model_file(model), {})]
    ExportProfile(name="fake", format="fakefmt", gate_engines=("fakebk",))
    try:
        ExportProfile(name="fake", format="fakefmt", gate_engines=("cpu",))
        seen["gate_on_cpu"] = "accepted"
    except ConfigError as exc:
        seen["gate_on_cpu"] = str(exc)
    shape = plan([Node("n", 8, 2)], "fakebk", None, None)
    seen["cluster"] = [shape.workers, shape.gpus]
    seen["info"] = describe_model_file(model)

    cells = work / "cells"
    cells.mkdir()
    import cv2, numpy as np
    cv2.imwrite(str(cells / "a.bmp"), np.full((450, 450, 3), 100, np.uint8))
    out = work / "pred.csv"
    done = cli.invoke(app, ["predict", str(cells), "--model", str(model), "--backend", "fakebk", "--out", str(out)])
    seen["predict_exit"] = done.exit_code
    seen["predict_csv"] = out.read_text() if out.exists() else done.output

    repo = work / "repo"
    done = cli.invoke(app, ["serving-repo", str(repo), "-m", str(model)])
    seen["repo_exit"] = done.exit_code
    seen["repo_files"] = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())

    write_model_with_meta(model, model, meta.replace(threshold=0.25))
    seen["rewritten_threshold"] = read_model_meta(model)[0].threshold
    seen["weights_kept"] = (model / "weights.bin").read_bytes() == b"0" * 1000
    seen["leftovers"] = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    print("RESULT " + json.dumps(seen))
''')


def test_a_plugin_format_and_backend_reach_every_derived_place(tmp_path: Path) -> None:
    (tmp_path / "fakeplugin.py").write_text(PLUGIN)
    env = {**os.environ, "COLUMNS": "250"}  # help tables wide enough to show every choice
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert "fakebk" in seen["predict_help"] and "fakebk" in seen["bench_help"]  # CLI choices
    assert seen["bench_rows"] == ["fakebk"]  # only the backend that reads the format gives a row
    assert "cpu cannot read an Fake package" in seen["gate_on_cpu"]  # gate engines checked against reads
    assert seen["cluster"] == [2, 1]  # a gpu backend: one worker per GPU, each with one GPU
    assert seen["info"].startswith(f"{tmp_path / 'model.fakepkg'}: Fake package model")  # a folder model
    assert seen["predict_exit"] == 0, seen["predict_csv"]
    assert "a.bmp" in seen["predict_csv"] and "0.88" in seen["predict_csv"]  # sigmoid(2) from the fake engine
    assert seen["repo_exit"] == 0
    assert "ovms/edgeleuk/1/model.fakepkg/weights.bin" in seen["repo_files"]  # the format's repository
    assert seen["rewritten_threshold"] == 0.25 and seen["weights_kept"]
    assert seen["leftovers"] == []  # the staging folder is gone
