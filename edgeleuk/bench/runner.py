"""``run_bench``: plan the rows, measure each (in its own process), compare with PyTorch, gate."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.bench.cases import Case, ModelFile, plan_cases, read_model_file
from edgeleuk.bench.cells import Cells, load_cells
from edgeleuk.bench.machine import collect_machine
from edgeleuk.bench.memory import run_measured
from edgeleuk.bench.options import ALL, BenchOptions
from edgeleuk.bench.report import ERROR, OK, PARITY_FAILED, UNAVAILABLE, BenchReport, Row, best_throughput
from edgeleuk.bench.worker import Measurement, WorkSpec, measure_safely
from edgeleuk.core.errors import BackendUnavailable, ConfigError, UsageError
from edgeleuk.core.numerics import threshold_logit
from edgeleuk.evaluation.metrics import binary_metrics
from edgeleuk.evaluation.parity import breaches, compare, recorded_thresholds
from edgeleuk.io.files import sha256_file
from edgeleuk.runtime.registry import BACKENDS, option_fields, unavailable_reason

log = logging.getLogger(__name__)
WORKER_TIMEOUT_S = 4 * 3600  # a hung engine must not hang the benchmark forever


def availability(asked: str = ALL) -> dict[str, str | None]:
    """Backend name -> None if it can run here, else why not (install advice only for the ``asked`` one)."""
    found = {name: unavailable_reason(name, asked=name == asked) for name in BACKENDS}
    found["torch"] = None if importlib.util.find_spec("torch") else (
        "torch is not installed: pip install 'edgeleuk[train]' to measure the PyTorch original")
    return found


def _with_flags(case: Case, fields: dict[str, Any]) -> Case:
    """A row with the user's flags of its own backend (``--server`` for remote); a variant's options win."""
    if case.backend not in BACKENDS:
        return case
    own = {f.name for name, f in option_fields() if name == case.backend}
    return replace(case, options={**{k: v for k, v in fields.items() if k in own}, **case.options})


def _check_explicit(backend: str, reasons: dict[str, str | None], checkpoint: Path | None) -> None:
    if backend == "all":
        return
    if backend == "torch" and checkpoint is None:
        raise BackendUnavailable("--backend torch measures the PyTorch original: pass --checkpoint CKPT")
    if reasons.get(backend):
        raise BackendUnavailable(
            f"--backend {backend} is not available here: {reasons[backend]}. "
            "Use --backend all to list every backend with the reason it cannot run.")


def _run_isolated(spec: WorkSpec, images: Path, tmp: Path, index: int) -> Measurement:
    job, out = tmp / f"job-{index}.json", tmp / f"result-{index}.json"
    job.write_text(json.dumps({"spec": spec.to_dict(), "images": str(images), "out": str(out)}), encoding="utf-8")
    done = run_measured([sys.executable, "-m", "edgeleuk.bench.worker", str(job)], timeout=WORKER_TIMEOUT_S)
    if done.returncode != 0 or not out.is_file():
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return Measurement(status=ERROR, reason=f"worker exited with {done.returncode}: {tail}")
    if done.stderr.strip():
        log.debug("worker stderr for %s:\n%s", spec.case.label, done.stderr)
    result = Measurement.from_dict(json.loads(out.read_text(encoding="utf-8")))
    # The worker's own peak at its end (memory.self_peak_rss) is exact; the parent's samples are the fallback.
    result.peak_rss = result.peak_rss or done.peak_rss
    return result


def _measure_all(cases: list[Case], cells: Cells, opts: BenchOptions, checkpoint: Path | None,
                 threads: int) -> list[Measurement | None]:
    results: list[Measurement | None] = []
    with tempfile.TemporaryDirectory(prefix="edgeleuk-bench-") as tmp:
        images = Path(tmp) / "cells.npy"
        np.save(images, cells.images)
        for index, case in enumerate(cases):
            if case.skip:
                results.append(None)
                continue
            spec = WorkSpec(
                case=case, checkpoint=checkpoint, threads=threads, budget_s=opts.budget_s,
                min_runs=opts.min_runs, max_runs=opts.max_runs, warmup_runs=opts.warmup_runs,
                batch_sizes=opts.batch_sizes(len(cells.images)),
                throughput_mode=opts.throughput_mode)
            log.info("bench: measuring %s", case.label)
            results.append(_run_isolated(spec, images, Path(tmp), index) if opts.isolate
                           else measure_safely(spec, cells.images))
    return results


def label_metrics(labels: np.ndarray | None, probs: np.ndarray, threshold: float) -> dict[str, float | None] | None:
    """Weighted F1, sensitivity (ALL recall) and specificity (HEM recall); None without labels.

    Cells of one class leave the other class's recall undefined: that value is None (``n/a``).
    """
    if labels is None:
        return None
    m = binary_metrics(np.asarray(labels), np.asarray(probs), threshold=threshold)
    return {k: None if m[k] is None else float(m[k]) for k in ("f1", "sensitivity", "specificity")}


def _build_rows(cases: list[Case], results: list[Measurement | None], files: dict[Path, ModelFile],
                cells: Cells, threshold: float) -> list[Row]:
    ref = results[0] if results and results[0] is not None and results[0].status == OK else None
    rows = []
    for case, m in zip(cases, results, strict=True):
        mf = files.get(case.model) if case.model else None
        row = Row(case=case, status=OK, size_bytes=None if mf is None else mf.size_bytes, measurement=m)
        if m is None or m.status != OK:
            row.status = UNAVAILABLE if m is None or m.status == UNAVAILABLE else ERROR
            row.reason = case.skip if m is None else m.reason
            rows.append(row)
            continue
        thr = threshold if mf is None else mf.threshold
        row.metrics = label_metrics(cells.labels, np.asarray(m.probs), thr)
        if ref is not None and case.backend != "torch":
            compute = None if case.precision == mf.precision else case.precision
            try:
                row.thresholds = recorded_thresholds(mf.export, compute)
            except ConfigError as exc:  # one row without thresholds must not lose the others' figures
                row.status, row.reason = ERROR, f"no parity thresholds: {exc}"
                rows.append(row)
                continue
            row.parity = compare(ref.logits, ref.probs, m.logits, m.probs, thr, cells.labels)
            row.failures = breaches(row.thresholds, row.parity)
            row.status = PARITY_FAILED if row.failures else OK
            _speedups(row, ref)
        rows.append(row)
    return rows


def _speedups(row: Row, ref: Measurement) -> None:
    row.speedup_latency = ref.latency["p50_ms"] / row.measurement.latency["p50_ms"]
    row.speedup_throughput = row.best_throughput[0] / best_throughput(ref)[0]


def _notes(files: list[ModelFile], checkpoint: Path | None, cells: Cells, opts: BenchOptions) -> list[str]:
    notes = []
    if checkpoint is not None:
        sha = sha256_file(checkpoint)
        for mf in files:
            if mf.source_sha256 and mf.source_sha256 != sha:
                notes.append(f"{mf.path.name} was exported from checkpoint sha256 {mf.source_sha256[:12]}..., "
                             f"not from {checkpoint.name} ({sha[:12]}...): parity compares different weights")
    else:
        notes.append("PARITY NOT CHECKED: no --checkpoint, so no PyTorch reference and no gates were applied")
    if cells.labels is None:
        notes.append("the cells are unlabelled: F1/sensitivity/specificity are n/a and the INT8 F1-drop gate "
                     "was not applied")
    if opts.quick:
        notes.append("--quick: few timed runs; timings are rough (a harness check, not a comparison)")
    notes.append("latency: one cell per call (batch 1), percentiles over the runs in brackets; 'best cells/s' is "
                 "the best of plain batches " + ", ".join(map(str, opts.batch_sizes(len(cells.images))))
                 + " and the engine's throughput mode; speed-ups are against the torch row of this same run")
    notes.append("load avg: the 1-minute load average when the row started and ended; it counts the row's own "
                 "busy threads (about --threads while it runs alone); clearly above that, other processes took CPU "
                 "from the row and its timings are inflated (engines suffer unequally)")
    if opts.isolate:
        notes.append("peak RSS: each row ran in its own process (interpreter, engine, model and cells included)")
    else:
        notes.append("peak RSS marked * was read in one shared process and only ever grows: not per-row figures")
    return notes


def _spread_note(rows: list[Row], threshold: float) -> list[str]:
    """How far the reference's logits lie from the decision threshold: what agreement can show."""
    ref = rows[0].measurement if rows and rows[0].status == OK else None
    if ref is None or not ref.logits:
        return []
    logits = np.asarray(ref.logits, np.float64)
    spread = (f"torch logits over the {logits.size} cells: {logits.min():.4g} .. {logits.max():.4g} "
              f"(std {logits.std():.2g}); ")
    cut = threshold_logit(threshold)
    if not math.isfinite(cut):  # threshold 0 or 1: no logit to be near
        calls = ("every cell ALL" if cut < 0 else
                 "ALL only a probability of 1 (float32 rounds to it from a logit of about 16.6)")
        return [f"{spread}the threshold {threshold:g} calls {calls}, so label agreement says little about "
                "the engines' logits"]
    margin = float(np.min(np.abs(logits - cut)))
    return [(f"{spread}the threshold {threshold:g} is logit {cut:.4g}, nearest cell "
             f"{margin:.2g} away. Label agreement tests an engine only where its max|dlogit| is comparable to "
             "such margins; near-constant logits (e.g. random weights) put every cell at about the same margin, "
             "so agreement there is all or nothing")]


def run_bench(
    model: str | Path, checkpoint: str | Path | None = None, data: str | Path | None = None,
    options: BenchOptions | None = None, json_out: str | Path | None = None,
) -> BenchReport:
    """Benchmark an exported model on every (or one) backend against the PyTorch original.

    Args:
        model: Exported ``.onnx`` or OpenVINO ``.xml``.
        checkpoint: Checkpoint it was exported from; runs the torch reference row.
        data: Cell images (any layout ``edgeleuk.io.data`` discovers); SYNTHETIC cells without it.
        options: What to measure.
        json_out: Where to write the JSON record (atomically).

    Returns:
        The report; ``.exit_code()`` is 0, 1 (gate breached or a row errored) or 2.

    Raises:
        BackendUnavailable: An explicitly requested backend cannot run here (exit code 2).
        UsageError: Missing or unreadable model, checkpoint or data.
    """
    opts = (options or BenchOptions()).effective()
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if checkpoint is not None and not checkpoint.is_file():
        raise UsageError(f"--checkpoint {checkpoint}: no such file")
    files = [read_model_file(Path(p)) for p in (model, *opts.extra_models)]
    reasons = availability(opts.backend)
    _check_explicit(opts.backend, reasons, checkpoint)
    machine = collect_machine(opts.threads)
    cases = plan_cases(files, opts.backend, checkpoint is not None, machine.bf16, reasons, tta=opts.tta)
    cases = [_with_flags(c, opts.engine_fields) for c in cases]
    if opts.backend != "all" and not any(c.backend == opts.backend for c in cases):
        raise UsageError(f"--backend {opts.backend} cannot run any of the given model files "
                         f"({', '.join(m.path.name for m in files)})")
    cells = load_cells(None if data is None else Path(data), opts.n, opts.seed)
    results = _measure_all(cases, cells, opts, checkpoint, machine.threads)
    rows = _build_rows(cases, results, {m.path: m for m in files}, cells, files[0].threshold)
    options_dict = {**asdict(replace(opts, extra_models=())), "extra_models": [str(p) for p in opts.extra_models]}
    report = BenchReport(
        machine=machine, options=options_dict, cells=cells.to_dict(), models=files, rows=rows,
        notes=_spread_note(rows, files[0].threshold) + _notes(files, checkpoint, cells, opts),
        explicit_backend=None if opts.backend == "all" else opts.backend)
    if json_out is not None:
        report.write_json(json_out)
    return report
