"""Through the server vs in process, cluster predict vs local predict: the figures of docs/scaling.md.

    python benchmarks/serving.py --work /tmp/edgeleuk-serving      # needs the ray extra

Everything runs on THIS machine, SYNTHETIC cells only:

1. ``seresnext_tiny`` with RANDOM weights (seed 0), exported to ONNX (cpu-fp32 profile; 300 crop,
   8 rotations inside the graph), and a folder of synthetic cells plus four bad files.
2. In process: ``Classifier.predict_arrays`` on one cell per call, from 1 thread and from 8 threads.
3. Through ``edgeleuk serve`` (local Ray, 2 CPUs, 1 replica, 1 engine thread, batches up to 8)
   over loopback HTTP: the same calls from 1 client and from 8 concurrent clients.
4. ``predict`` vs ``predict --cluster`` (local Ray) on the same folder; the two CSVs are compared.

Prints one JSON record (and writes it to --json). No timing here is asserted by any test.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _calls(path: Path) -> list[list[str]]:
    """A predictions CSV without the cells that say when and on which engine each call ran."""
    with open(path, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    keep = [i for i, name in enumerate(header) if name not in ("time_utc", "engine")]
    return [[row[i] for i in keep] for row in [header, *rows]]


def _model(work: Path) -> Path:
    """A random-weight tiny network, exported through edgeleuk's own exporter (cached)."""
    out = work / "tiny.onnx"
    if out.is_file():
        return out
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.exporting import export_model
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    torch.manual_seed(0)
    ckpt = work / "tiny.pt"
    save_checkpoint(ckpt, create_model("seresnext_tiny").state_dict(), ModelMeta(arch="seresnext_tiny", recipe="bench"))
    export_model(ckpt, out=out, profile="cpu-fp32", data=None)
    return out


def _folder(work: Path, n: int) -> Path:
    from runtime_support import write_bad_files

    from edgeleuk.synth.dataset import make_synthetic

    folder = work / "cells"
    if not folder.is_dir():
        data = work / "synth"
        make_synthetic(data, subjects=8, cells_per_subject=max(1, n // 8 + 1), seed=0)
        folder.mkdir()
        for i, path in enumerate(sorted(data.rglob("*.bmp"))[:n]):
            shutil.copyfile(path, folder / f"{i:04d}_{path.name}")
        write_bad_files(folder)
    return folder


def _cells(folder: Path, n: int) -> list[np.ndarray]:
    from edgeleuk.io.imageio import decode_image

    decoded = [decode_image(p) for p in sorted(folder.glob("*.bmp"))]
    return [d.image for d in decoded if d.ok][:n]


def _timed(call, requests: int, clients: int) -> dict[str, float]:
    """Run ``call(i)`` ``requests`` times from ``clients`` threads; latency percentiles and rate."""
    def one(i: int) -> float:
        t = time.perf_counter()
        call(i)
        return time.perf_counter() - t

    one(0)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        lat = np.asarray(list(pool.map(one, range(requests)))) * 1000
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": requests, "per_s": requests / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    """Build the model and cells (cached in --work), measure, print and write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeleuk-serving"))
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model, folder = _model(args.work), _folder(args.work, args.cells)
    cells = _cells(folder, args.cells)
    record: dict[str, object] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}

    from edgeleuk.runtime.classifier import Classifier

    clf = Classifier.load(model, "cpu", threads=1)
    record["in_process"] = [
        _timed(lambda i: clf.predict_arrays(cells[i % len(cells)][None]), args.requests, c) for c in (1, 8)
    ]

    import ray

    from edgeleuk.cluster.predict import cluster_predict
    from edgeleuk.runtime.remote import ServerClient
    from edgeleuk.serving.server import ServeOptions, start, stop
    from edgeleuk.workflow.predict import PredictOptions, predict

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    url = start(model, ServeOptions(backend="cpu", threads=1, max_batch=8, port=18765))
    client = ServerClient(url, timeout=300)

    def remote(i: int) -> None:
        answer = client.predict_tensor(cells[i % len(cells)][None])
        assert answer.status == 200, answer.payload

    record["server"] = [_timed(remote, args.requests, c) for c in (1, 8)]
    stop()

    opts = PredictOptions(backend="cpu", progress=False)
    t = time.perf_counter()
    predict(folder, model, args.work / "local.csv", opts)
    local_s = time.perf_counter() - t
    t = time.perf_counter()
    cluster_predict(folder, model, args.work / "cluster.csv", opts)
    cluster_s = time.perf_counter() - t
    same = _calls(args.work / "local.csv") == _calls(args.work / "cluster.csv")
    files = len(list(folder.iterdir()))
    record["predict"] = {"files": files, "local_s": local_s, "cluster_s": cluster_s, "identical_csv": same}
    record["load_after"] = os.getloadavg()
    ray.shutdown()
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
