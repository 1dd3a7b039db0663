"""The standard comparison: the paper's full network on every CPU engine, written to RESULTS.md.

    python benchmarks/standard.py            # or: make bench

Steps (exports are cached in --work and reused while the checkpoint is the same):

1. SYNTHETIC data in the C-NMC layout (``edgeleuk synth``), enough training cells
   to calibrate INT8 (the profile asks for 300).
2. The paper's network, ``legacy_seresnext50_32x4d``, with RANDOM weights (seed 0):
   no pretrained or trained weights are reachable offline. Speed does not depend on
   the weights; accuracy figures on random weights and synthetic cells are meaningless.
3. Export: fp32 ONNX (profile cpu-fp32) and INT8 OpenVINO IR
   (profile openvino-int8, NNCF calibrated on synthetic training cells).
4. ``edgeleuk bench``: torch eager (the paper's path) vs ONNX Runtime CPU fp32,
   OpenVINO f32 and bf16, OpenVINO INT8, 450x450 -> 300 crop, 8 rotations per cell.
5. Peak memory of the whole ``edgeleuk predict`` path with the INT8 IR (own process).
6. RESULTS.md (+ RESULTS.json) beside this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results import render_results  # noqa: E402 - a sibling script, importable once HERE is on sys.path

log = logging.getLogger("standard")
REPO = HERE.parent
PREDICT_BATCHES = (1, 4, 8)  # plus whatever `edgeleuk predict --batch` defaults to


@dataclass(frozen=True)
class StandardConfig:
    """How big the standard run is.

    Attributes:
        work: Cache folder for data, checkpoint and exports.
        out: RESULTS.md to write (RESULTS.json beside it).
        n: Cells benchmarked (eager PyTorch takes seconds per cell on 2 cores).
        batch: Largest batch size tried.
        threads: Threads for every engine (torch included).
        budget_s: Seconds per timing loop.
        min_runs: Fewest batch-1 latency runs per row.
        gate_n: Cells in the export parity gates (the INT8 profile's 200 would add ~10 min of eager torch).
        subjects: Synthetic subjects.
        cells_per_subject: Synthetic cells per subject.
        predict_cells: Cells the predict-memory run classifies.
        arch: Network; ``seresnext_tiny`` only to smoke-test this script.
    """

    work: Path
    out: Path
    n: int = 16
    batch: int = 4
    threads: int = 2
    budget_s: float = 5.0
    min_runs: int = 10
    gate_n: int = 32
    subjects: int = 24
    cells_per_subject: int = 25
    predict_cells: int = 64
    arch: str = "legacy_seresnext50_32x4d"


def synthetic_data(cfg: StandardConfig) -> Path:
    """The SYNTHETIC data set, drawn once into the work folder."""
    from edgeleuk.synth import make_synthetic

    root = cfg.work / "data"
    if not (root / "SYNTHETIC.txt").is_file():
        log.info("drawing SYNTHETIC data into %s", root)
        make_synthetic(root, subjects=cfg.subjects, cells_per_subject=cfg.cells_per_subject, seed=0)
    return root


def random_checkpoint(cfg: StandardConfig) -> Path:
    """The paper's architecture with random weights (seed 0), saved once."""
    import torch

    from edgeleuk.checkpoint import save_checkpoint
    from edgeleuk.meta import ModelMeta
    from edgeleuk.model import create_model

    path = cfg.work / f"{cfg.arch}-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        meta = ModelMeta(arch=cfg.arch, recipe="benchmark",
                         extra={"weights": "random, seed 0 (no pretrained weights offline)"})
        save_checkpoint(path, create_model(cfg.arch).state_dict(), meta)
    return path


def _exported_from(model: Path, ckpt_sha: str) -> bool:
    from edgeleuk.runtime.modelfile import read_model_meta

    try:
        return model.is_file() and read_model_meta(model)[1].get("source_sha256") == ckpt_sha
    except Exception:  # noqa: BLE001  (unreadable or half-written cache: export again)
        return False


def export_models(cfg: StandardConfig, ckpt: Path, data: Path) -> tuple[Path, Path, dict[str, float]]:
    """fp32 ONNX and INT8 IR of ``ckpt`` (reused when already exported from it), and export seconds."""
    from edgeleuk.checkpoint import sha256_file
    from edgeleuk.exporting import export_model, load_profile

    sha, seconds = sha256_file(ckpt), {}
    jobs = {"fp32": ("cpu-fp32", cfg.work / f"{cfg.arch}-fp32.onnx"),
            "int8": ("openvino-int8", cfg.work / f"{cfg.arch}-int8.xml")}
    for name, (profile_path, out) in jobs.items():
        if _exported_from(out, sha):
            log.info("reusing %s", out)
            continue
        profile = load_profile(REPO / profile_path)
        profile = profile.replace(parity_n=min(profile.parity_n, cfg.gate_n))
        log.info("exporting %s with %s (gate on %d cells)", out.name, profile_path, profile.parity_n)
        result = export_model(ckpt, out=out, profile=profile, calib=data)
        seconds[name] = result.seconds
        print(result.describe(), file=sys.stderr)
    return jobs["fp32"][1], jobs["int8"][1], seconds


def predict_memory(cfg: StandardConfig, model: Path, data: Path) -> dict:
    """Peak RSS of ``edgeleuk predict`` with the INT8 IR on OpenVINO, in its own process, per batch size.

    Activations grow with the batch (each cell is 8 rotated 300x300 views), so the
    default batch and a few others are measured.
    """
    from edgeleuk.bench.memory import run_measured
    from edgeleuk.data import discover
    from edgeleuk.predict import PredictOptions

    folder = discover(data).split("prelim")[0].path.parent
    cells = sorted(folder.glob("*.bmp"))[: cfg.predict_cells]
    subset = cfg.work / "predict-in"
    subset.mkdir(exist_ok=True)
    for old in subset.glob("*.bmp"):
        old.unlink()
    for cell in cells:
        (subset / cell.name).symlink_to(cell.resolve())
    out = cfg.work / "predict-out.csv"
    argv = [sys.executable, "-m", "edgeleuk", "predict", str(subset), "--model", str(model), "--backend",
            "openvino", "--threads", str(cfg.threads), "--out", str(out)]
    runs, default_batch = [], PredictOptions().batch
    for batch in sorted({*PREDICT_BATCHES, default_batch}):
        done = run_measured([*argv, "--batch", str(batch)], timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"predict failed ({done.returncode}): {done.stderr[-2000:]}")
        runs.append({"batch": batch, "peak_rss": done.peak_rss, "wall_s": done.wall_s})
    return {"command": "edgeleuk " + " ".join(argv[3:]) + " --batch B", "cells": len(cells), "runs": runs,
            "default_batch": default_batch}


def run(cfg: StandardConfig, quick: bool = False) -> Path:
    """Every step; returns the RESULTS.md written."""
    from edgeleuk.bench import BenchOptions, run_bench

    started = time.time()
    cfg.work.mkdir(parents=True, exist_ok=True)
    data = synthetic_data(cfg)
    ckpt = random_checkpoint(cfg)
    onnx_model, int8_model, export_s = export_models(cfg, ckpt, data)
    opts = BenchOptions(backend="all", n=cfg.n, batch=cfg.batch, threads=cfg.threads, budget_s=cfg.budget_s,
                        min_runs=cfg.min_runs, extra_models=(int8_model,), quick=quick)
    load_before = os.getloadavg()[0]
    report = run_bench(onnx_model, checkpoint=ckpt, data=data, options=opts,
                       json_out=cfg.out.with_suffix(".json"))
    load_after = os.getloadavg()[0]
    memory = predict_memory(cfg, int8_model, data)
    context = {"export_s": export_s, "load_before": load_before, "load_after": load_after,
               "total_s": time.time() - started, "config": cfg, "quick": quick}
    text = render_results(report, memory, context)
    from edgeleuk.atomic import atomic_write_text

    atomic_write_text(cfg.out, text)
    record = json.loads(cfg.out.with_suffix(".json").read_text(encoding="utf-8"))
    record["predict_memory"] = memory
    atomic_write_text(cfg.out.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(text)
    return cfg.out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeleuk" / "bench-standard"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=cache, help="cache folder (data, checkpoint, exports)")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--n", type=int, default=StandardConfig.n)
    ap.add_argument("--batch", type=int, default=StandardConfig.batch)
    ap.add_argument("--threads", type=int, default=StandardConfig.threads)
    ap.add_argument("--budget", type=float, default=StandardConfig.budget_s)
    ap.add_argument("--quick", action="store_true", help="few timed runs (checks the script; rough numbers)")
    ap.add_argument("--arch", default=StandardConfig.arch, help="seresnext_tiny only to smoke-test this script")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = StandardConfig(work=args.work, out=args.out, n=args.n, batch=args.batch, threads=args.threads,
                         budget_s=args.budget, arch=args.arch)
    run(cfg, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
