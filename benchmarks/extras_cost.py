"""What the graph's opt-in outputs (``embedding``, ``cam``) cost the default call, per engine.

The same network is exported once with the extras (as ``edgeleuk export`` writes it) and once
cut back to ``logit``/``prob``/``view_logits`` (as files were before, :func:`prune_outputs`);
both are opened the way ``Classifier.load`` opens them for a plain call (ONNX Runtime: the
file as it is; OpenVINO: the extras' results dropped before compiling) and timed alternately,
batch 1, one thread, on the same SYNTHETIC cell. Random weights: speed only.

Run: ``python benchmarks/extras_cost.py [--arch legacy_seresnext50_32x4d] [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeleuk.core.contract import EXTRA_OUTPUTS
from edgeleuk.core.meta import ModelMeta
from edgeleuk.exporting.graph import export_wrapper
from edgeleuk.modeling.model import create_model
from edgeleuk.modeling.tta import TTAClassifier
from edgeleuk.runtime.registry import backend_options, choose_backend
from edgeleuk.runtime.views import prune_outputs
from edgeleuk.synth.cells import render_cell, sample_looks, subject_stain


def _files(arch: str, folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    meta = ModelMeta(arch=arch)
    model = export_wrapper(TTAClassifier(create_model(arch).eval(), meta, extras=True).eval(), meta, 17)
    with_extras = folder / "extras.onnx"
    onnx.save(model, str(with_extras))
    prune_outputs(model, set(EXTRA_OUTPUTS))
    without = folder / "plain.onnx"
    onnx.save(model, str(without))
    return {"with extras (default call)": with_extras, "without extras (before)": without}


def _time(backend, cell: np.ndarray, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.run(cell)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    """Export, open, time alternately, print (and optionally write) the medians and the overhead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="seresnext_tiny")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    stain = subject_stain(rng)
    cell = np.ascontiguousarray(render_cell(rng, sample_looks(rng, True, stain), stain)[None])  # SYNTHETIC
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(args.arch, Path(tmp))
        for engine in ("cpu", "openvino"):
            options = dataclasses.replace(backend_options(threads=1), extras=())
            backends = {name: choose_backend(path, engine, options)[0] for name, path in files.items()}
            for backend in backends.values():
                _time(backend, cell, 3)  # warm-up
            times = {name: [] for name in backends}
            for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
                for name, backend in backends.items():
                    times[name] += _time(backend, cell, 1)
            medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            a, b = medians.values()
            results[engine] = {**{k: round(v, 3) for k, v in medians.items()},
                               "overhead_pct": round(100 * (a / b - 1), 2)}
            print(f"{args.arch} {engine}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in medians.items())
                  + f" -> {100 * (a / b - 1):+.2f} %")
    if args.out:
        args.out.write_text(json.dumps({"arch": args.arch, "repeats": args.repeats, "results": results}, indent=1))


if __name__ == "__main__":
    main()
