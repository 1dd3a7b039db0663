"""The standard comparison: the paper's full network on every CPU engine, written to RESULTS.md.

    python benchmarks/standard.py            # or: make bench

Steps (exports are cached in --work and reused while the checkpoint is the same):

1. SYNTHETIC data in the C-NMC layout (``edgeleuk synth``), enough training cells
   to calibrate INT8 (the profile asks for 300).
2. The paper's network, ``legacy_seresnext50_32x4d``: RANDOM trunk (seed 0), no
   pretrained or trained weights being reachable offline, and a head fitted as a
   logistic probe on the trunk's pooled features of SYNTHETIC training cells
   (``fitted_head.py``), so the logits spread like a trained model's. Speed does not
   depend on the weights; accuracy figures on synthetic cells say nothing about real ones.
3. Export: fp32 ONNX (profile cpu-fp32) and INT8 OpenVINO IR
   (profile openvino-int8, NNCF calibrated on synthetic training cells).
4. ``edgeleuk bench``: torch eager (the paper's path) vs ONNX Runtime CPU fp32,
   OpenVINO f32 and bf16, OpenVINO INT8, 450x450 -> 300 crop, 8 rotations per cell; and
   staged TTA on a copy of the INT8 IR whose stage choice ``edgeleuk calibrate
   --keep-threshold`` made on a second SYNTHETIC set (seed 1), not on the benchmarked cells.
5. Peak memory of the whole ``edgeleuk predict`` path at its default batch, per
   precision and engine (each in its own process).
6. Decision agreement with torch fp32 full TTA on every labelled prelim cell (150),
   for the INT8 IR with full and with staged TTA.
7. RESULTS.md (+ RESULTS.json) beside this script.
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

from fitted_head import fit_head  # noqa: E402 - a sibling script, importable once HERE is on sys.path
from results import STAGED_BF16, render_results  # noqa: E402

log = logging.getLogger("standard")
REPO = HERE.parent


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
        head_cells: SYNTHETIC training cells the linear head is fitted on.
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
    head_cells: int = 160


def synthetic_data(cfg: StandardConfig) -> Path:
    """The SYNTHETIC data set, drawn once into the work folder."""
    from edgeleuk.synth.dataset import make_synthetic

    root = cfg.work / "data"
    if not (root / "SYNTHETIC.txt").is_file():
        log.info("drawing SYNTHETIC data into %s", root)
        make_synthetic(root, subjects=cfg.subjects, cells_per_subject=cfg.cells_per_subject, seed=0)
    return root


def benchmark_checkpoint(cfg: StandardConfig, data: Path) -> Path:
    """The paper's architecture: random trunk (seed 0), head fitted on SYNTHETIC cells; saved once."""
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    path = cfg.work / f"{cfg.arch}-fitted-head.pt"
    if not path.is_file():
        torch.manual_seed(0)
        net = create_model(cfg.arch).eval()
        meta = ModelMeta(arch=cfg.arch, recipe="benchmark")
        record = fit_head(net, meta, data, cells=cfg.head_cells)
        meta = meta.replace(extra={"weights": record})
        log.info("fitted head: %s", record)
        save_checkpoint(path, net.state_dict(), meta)
    return path


def _exported_from(model: Path, ckpt_sha: str) -> bool:
    """Whether a cached export came from this checkpoint under the current graph contract."""
    from edgeleuk.core.contract import contract_record
    from edgeleuk.io.modelfile import read_model_meta

    try:
        meta, export = read_model_meta(model) if model.is_file() else (None, {})
    except Exception:  # noqa: BLE001  (unreadable or half-written cache: export again)
        return False
    if meta is None or export.get("source_sha256") != ckpt_sha:
        return False
    contract = contract_record(meta.preprocess.input_size)
    return all(export.get(key) == value for key, value in contract.items())  # e.g. no views entry: stale


def export_models(cfg: StandardConfig, ckpt: Path, data: Path) -> tuple[Path, Path, dict[str, float]]:
    """fp32 ONNX and INT8 IR of ``ckpt`` (reused when already exported from it), and export seconds."""
    from edgeleuk.exporting import export_model, load_profile
    from edgeleuk.modeling.checkpoint import sha256_file

    sha, seconds = sha256_file(ckpt), {}
    jobs = {"fp32": ("cpu-fp32", cfg.work / f"{cfg.arch}-fp32.onnx"),
            "int8": ("openvino-int8", cfg.work / f"{cfg.arch}-int8.xml")}
    for name, (profile_path, out) in jobs.items():
        if _exported_from(out, sha):
            log.info("reusing %s", out)
            continue
        profile = load_profile(profile_path)
        profile = profile.replace(parity_n=min(profile.parity_n, cfg.gate_n))
        log.info("exporting %s with %s (gate on %d cells)", out.name, profile_path, profile.parity_n)
        result = export_model(ckpt, out=out, profile=profile, data=data)
        seconds[name] = result.seconds
        print(result.describe(), file=sys.stderr)
    return jobs["fp32"][1], jobs["int8"][1], seconds


#: predict-memory rows: (name, model key, backend, --precision); each at predict's default batch.
PREDICT_CONFIGS = (("fp32 onnx, cpu", "fp32", "cpu", "f32"), ("fp32 onnx, openvino f32", "fp32", "openvino", "f32"),
                   ("fp32 onnx, openvino bf16", "fp32", "openvino", "bf16"),
                   ("int8 IR, openvino (float layers f32)", "int8", "openvino", "f32"),
                   ("int8 IR, openvino (float layers bf16)", "int8", "openvino", "bf16"))


def _predict_input(cfg: StandardConfig, data: Path, n: int) -> Path:
    from edgeleuk.io.data import discover

    folder = discover(data).split("prelim")[0].path.parent
    subset = cfg.work / f"predict-in-{n}"
    subset.mkdir(exist_ok=True)
    for old in subset.glob("*.bmp"):
        old.unlink()
    for cell in sorted(folder.glob("*.bmp"))[:n]:
        (subset / cell.name).symlink_to(cell.resolve())
    return subset


def predict_memory(cfg: StandardConfig, models: dict[str, Path], data: Path) -> dict:
    """Peak RSS of ``edgeleuk predict`` at its default batch, per precision, each in its own process.

    Activations grow with the views per engine call (each cell is 8 rotated 300x300
    views), so predict picks its default batch from the precision; the fp32 ORT row also
    runs on half the cells to show the peak does not grow with the number of files.
    """
    from edgeleuk.bench.memory import run_measured

    runs = []
    for cells in (cfg.predict_cells, cfg.predict_cells // 2):
        folder = _predict_input(cfg, data, cells)
        for name, key, backend, precision in PREDICT_CONFIGS if cells == cfg.predict_cells else PREDICT_CONFIGS[:1]:
            argv = [sys.executable, "-m", "edgeleuk", "predict", str(folder), "--model", str(models[key]),
                    "--backend", backend, "--precision", precision, "--threads", str(cfg.threads),
                    "--out", str(cfg.work / "predict-out.csv")]
            done = run_measured(argv, timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(f"predict failed ({done.returncode}): {done.stderr[-2000:]}")
            runs.append({"config": name, "cells": cells, "peak_rss": done.peak_rss, "wall_s": done.wall_s,
                         "command": "edgeleuk " + " ".join(argv[3:])})
    return {"runs": runs, "cells": cfg.predict_cells}


def stage_data(cfg: StandardConfig) -> Path:
    """A second SYNTHETIC set (seed 1): the stage choice is made on cells the bench does not measure.

    Twice the subjects of the benchmark set, so its labelled prelim split (what ``calibrate``
    reads) holds 300 cells: the margin's floor, a 99.5 % quantile, then lies below the largest
    shift seen instead of at it.
    """
    from edgeleuk.synth.dataset import make_synthetic

    subjects = 2 * cfg.subjects
    root = cfg.work / f"stage-data-{subjects}x{cfg.cells_per_subject}"
    if not (root / "SYNTHETIC.txt").is_file():
        make_synthetic(root, subjects=subjects, cells_per_subject=cfg.cells_per_subject, seed=1)
    return root


def staged_model(cfg: StandardConfig, model: Path) -> tuple[Path, dict]:
    """A copy of ``model`` carrying a staged-TTA stage choice made at its own threshold on :func:`stage_data`."""
    from edgeleuk.workflow.calibrate import calibrate_model

    out = cfg.work / f"{model.stem}-staged{model.suffix}"
    result = calibrate_model(model, data=stage_data(cfg), sensitivity=None, out=out, backend="openvino",
                             allow_small=True)
    print(result.stage_note, file=sys.stderr)
    if result.stage is None:
        raise RuntimeError(f"no stage choice for {model.name}: {result.stage_note}")
    return out, result.stage.to_dict()


#: all-cells agreement rows: (name, model key, --precision, --tta), each against torch fp32 full TTA.
AGREEMENT_CONFIGS = (("int8 IR, float layers bf16, full TTA", "int8", "bf16", "full"),
                     (STAGED_BF16, "staged", "bf16", "staged"),
                     ("int8 IR, float layers f32, staged TTA", "staged", "f32", "staged"))


def all_cells_agreement(cfg: StandardConfig, ckpt: Path, models: dict[str, Path], data: Path) -> dict:
    """Decisions on every labelled prelim cell: torch fp32 full TTA against the INT8 rows, full and staged.

    The bench table compares on its ``n`` cells only (eager torch costs seconds per cell);
    here every labelled prelim cell is classified once by each, so one disagreement moves
    the figure by well under 1 %.
    """
    import numpy as np
    import torch

    from edgeleuk.evaluation.metrics import binary_metrics
    from edgeleuk.io.data import discover
    from edgeleuk.io.imageio import decode_image
    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference
    from edgeleuk.runtime.classifier import Classifier

    records = [r for r in discover(data).split("prelim") if r.label is not None]
    labels = np.array([r.label for r in records])
    ckpt_data = load_checkpoint(ckpt)
    threshold = ckpt_data.meta.threshold
    images = np.stack([decode_image(r.path, ckpt_data.meta.preprocess.input_size).image for r in records])
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    _, ref = TorchReference(ckpt_data).predict_arrays(images)
    ref = np.asarray(ref, np.float64)
    rows = [{"config": "torch eager fp32, full TTA (reference)", "seconds": time.perf_counter() - started,
             "f1": binary_metrics(labels, ref, threshold)["f1"]}]
    ref_pos = ref >= threshold
    for name, key, precision, tta in AGREEMENT_CONFIGS:
        clf = Classifier.load(models[key], backend="openvino", precision=precision, threads=cfg.threads, tta=tta)
        started = time.perf_counter()
        probs = np.array([p.prob_all for p in clf.predict_arrays(images)], np.float64)
        row = {"config": name, "seconds": time.perf_counter() - started,
               "agreement": float(((probs >= threshold) == ref_pos).mean()),
               "f1": binary_metrics(labels, probs, threshold)["f1"]}
        if tta == "staged":
            row["stage2"], row["stage2_share"] = clf.staged_counts.stage2, clf.staged_counts.stage2_share
        rows.append(row)
    return {"cells": len(records), "threshold": threshold, "rows": rows}


def run(cfg: StandardConfig, quick: bool = False) -> Path:
    """Every step; returns the RESULTS.md written."""
    from edgeleuk.bench.options import BenchOptions
    from edgeleuk.bench.runner import run_bench

    started = time.time()
    cfg.work.mkdir(parents=True, exist_ok=True)
    data = synthetic_data(cfg)
    ckpt = benchmark_checkpoint(cfg, data)
    onnx_model, int8_model, export_s = export_models(cfg, ckpt, data)
    int8_staged, stage = staged_model(cfg, int8_model)
    opts = BenchOptions(backend="all", n=cfg.n, batch=cfg.batch, threads=cfg.threads, budget_s=cfg.budget_s,
                        min_runs=cfg.min_runs, extra_models=(int8_model, int8_staged), quick=quick, tta="staged")
    load_before = os.getloadavg()[0]
    report = run_bench(onnx_model, checkpoint=ckpt, data=data, options=opts,
                       json_out=cfg.out.with_suffix(".json"))
    load_after = os.getloadavg()[0]
    memory = predict_memory(cfg, {"fp32": onnx_model, "int8": int8_model}, data)
    agreement = all_cells_agreement(cfg, ckpt, {"int8": int8_model, "staged": int8_staged}, data)
    context = {"agreement": agreement, "stage": stage, "export_s": export_s, "load_before": load_before,
               "load_after": load_after, "total_s": time.time() - started, "config": cfg, "quick": quick}
    text = render_results(report, memory, context)
    from edgeleuk.io.atomic import atomic_write_text

    atomic_write_text(cfg.out, text)
    record = json.loads(cfg.out.with_suffix(".json").read_text(encoding="utf-8"))
    record["predict_memory"] = memory
    record["all_cells_agreement"] = agreement
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
