"""When not to trust a call: QC + OOD cost per cell and flag rates per SYNTHETIC shift kind.

    python benchmarks/trust.py                         # QC on synthetic cells, OOD cost on a stand-in model
    python benchmarks/trust.py --model model.onnx      # + OOD flag rates when the graph has an embedding output
    python benchmarks/trust.py --model calibrated.onnx --calibrated   # end to end: the model's own flags

Steps:

1. ranges fitted (``quality.fit_ranges``) on ``--fit`` cells drawn like ``edgeleuk synth``'s training cells;
2. QC on ``--held-out`` fresh cells of the same distribution and on ``--shifts`` cells of each shift kind
   (``edgeleuk.synth.shifts``): share flagged, and by which reasons;
3. cost per cell, one thread of Python, after a warm-up: ``quality.assess`` (measure + ranges) and
   ``quality.ood_scores`` for one cell against a 2048-wide, 32-component OOD model (the paper's pooled
   features; the cost does not depend on the values), p50/p90/p99, set against the INT8 exact rows of
   ``RESULTS.json`` (their best cells/s);
4. with ``--model`` whose ONNX graph has an ``embedding`` output: embeddings of every cell through ONNX
   Runtime, ``fit_ood`` on the fit cells, and the OOD and QC-or-OOD flag rates per kind.

With ``--calibrated`` nothing is fitted here: the quality ranges and the OOD model are the ones
``edgeleuk calibrate`` stored in ``--model``'s metadata (fitted on its calibration cells), and every
cell goes through the deployed runtime (``Classifier.predict_arrays`` on ONNX Runtime, QC and OOD
exactly as ``edgeleuk predict`` computes them); a flag is ``Prediction.qc`` or ``Prediction.ood_flag``.

Writes TRUST.md and TRUST.json beside this script (``--out`` to change). Every figure is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeleuk.bench.machine import collect_machine
from edgeleuk.bench.timing import percentiles
from edgeleuk.core.trust import OodModel
from edgeleuk.quality import (
    REASONS,
    QualityMeasures,
    fit_ood,
    fit_ranges,
    measure,
    ood_flags,
    ood_scores,
    reasons_for,
)
from edgeleuk.synth.shifts import SHIFT_KINDS, normal_cells, shifted_cells

HERE = Path(__file__).resolve().parent
HELD_OUT = "held-out (training distribution)"
#: The rows of RESULTS.json that are the INT8 exact (full 8-rotation TTA) rows.
INT8_EXACT_ROWS = ("openvino int8", "openvino int8+bf16")
EMBEDDING = "embedding"  # the graph's opt-in output of pooled features (edgeleuk.core.contract)


def _time_per_call(fn: Callable[[int], Any], n: int, warmup: int) -> dict[str, Any]:
    """Wall-clock and thread-CPU milliseconds per call.

    On shared cores the wall clock's tail is the process waiting for a core; the thread's CPU time
    leaves that out.
    """
    for i in range(warmup):
        fn(i)
    wall, cpu = [], []
    for i in range(n):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(i)
        cpu.append(1000 * (time.thread_time() - start_cpu))
        wall.append(1000 * (time.perf_counter() - start))
    return {**percentiles(wall), "mean": float(np.mean(wall)), "n": n, "warmup": warmup,
            "cpu": {**percentiles(cpu), "mean": float(np.mean(cpu))}}


def _reference_ms(results: Path) -> dict[str, float]:
    """Milliseconds per cell of the INT8 exact rows (1000 / their best cells per second)."""
    if not results.is_file():
        return {}
    rows = json.loads(results.read_text(encoding="utf-8")).get("rows", [])
    return {r["row"]: 1000.0 / r["best_throughput"]["cells_per_s"] for r in rows
            if r.get("row") in INT8_EXACT_ROWS and (r.get("best_throughput") or {}).get("cells_per_s")}


class _Embedder:
    """Embeddings through ONNX Runtime when the model's graph has an ``embedding`` output."""

    def __init__(self, model: Path | None) -> None:
        self.session, self.note = None, "no --model given"
        if model is None:
            return
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        if EMBEDDING not in outputs:
            self.note = f"{model.name} has no '{EMBEDDING}' output (outputs: {', '.join(outputs)})"
            return
        self.session, self.note, self.input = session, "", session.get_inputs()[0].name

    def __call__(self, cells: list[np.ndarray]) -> np.ndarray:
        return self.session.run([EMBEDDING], {self.input: np.stack(cells)})[0].astype(np.float32)


def _collect(cells: Iterable[np.ndarray], embed: _Embedder,
             batch: int = 8) -> tuple[list[QualityMeasures], np.ndarray | None]:
    """Measures of every cell and, when the model has one, their embeddings (cells are not kept)."""
    measures, parts, pending = [], [], []
    for cell in cells:
        measures.append(measure(cell))
        if embed.session is not None:
            pending.append(cell)
            if len(pending) == batch:
                parts.append(embed(pending))
                pending = []
    if pending:
        parts.append(embed(pending))
    return measures, (np.concatenate(parts) if parts else None)


def _runtime_flags(model: Path, draws: dict[str, Callable[[], Iterable[np.ndarray]]],
                   batch: int = 8) -> tuple[Any, dict[str, list[tuple[str, ...]]], dict[str, np.ndarray]]:
    """QC reasons and OOD flags of every drawn cell from the deployed runtime, with the model's own metadata."""
    from edgeleuk.runtime.classifier import Classifier

    clf = Classifier.load(model, "cpu", batch_size=batch, qc=True)
    if clf.meta.quality is None or clf.trust.ood is None:
        raise SystemExit(f"--calibrated: {model} lacks calibrated quality ranges or an OOD model "
                         f"({clf.trust_note}); run `edgeleuk calibrate` on it first")
    qc, ood = {}, {}
    for key, draw in draws.items():
        preds, pending = [], []
        for cell in draw():
            pending.append(cell)
            if len(pending) == batch:
                preds += clf.predict_arrays(np.stack(pending))
                pending = []
        if pending:
            preds += clf.predict_arrays(np.stack(pending))
        qc[key] = [p.qc for p in preds]
        ood[key] = np.array([p.ood_flag for p in preds])
    return clf.meta, qc, ood


def _rates(flags: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    counts = collections.Counter(r for f in flags for r in f)
    return {"n": len(flags), "flagged": sum(bool(f) for f in flags) / len(flags),
            "reasons": {r: counts[r] / len(flags) for r in REASONS if counts[r]}}


def _stand_in_ood() -> tuple[OodModel, np.ndarray]:
    """An OOD model of the paper's width (2048, 32 components): its cost does not depend on the values."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((200, 2048)).astype(np.float32) * np.linspace(3, 0.1, 2048, dtype=np.float32)
    return fit_ood(rows), rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the record (see the module docstring)."""
    start = time.perf_counter()
    cv2.setNumThreads(1)  # one thread, as the figures say: the runtime decodes (and checks) cells on threads
    draws = {HELD_OUT: lambda: normal_cells(args.held_out, args.seed + 1)}
    draws.update({k: (lambda k=k: shifted_cells(k, args.shifts, args.seed + 2)) for k in SHIFT_KINDS})
    embed = _Embedder(None if args.calibrated else args.model)
    oflags: dict[str, np.ndarray] = {}
    if args.calibrated:
        meta, qc, oflags = _runtime_flags(args.model, draws)
        ranges, ood, fit_emb = meta.quality, meta.ood, None
    else:
        _, fit_emb = _collect(normal_cells(args.fit, args.seed), embed)
        ranges = fit_ranges(normal_cells(args.fit, args.seed), how="bench-fit")
        qc, emb = {}, {}
        for key, draw in draws.items():
            measures, emb[key] = _collect(draw(), embed)
            qc[key] = [reasons_for(m, ranges) for m in measures]
    record: dict[str, Any] = {
        "synthetic": True, "settings": {**vars(args), "model": str(args.model) if args.model else None,
                                        "results": str(args.results), "out": str(args.out)},
        "machine": dataclasses.asdict(collect_machine(1)), "opencv_threads": cv2.getNumThreads(),
        "ranges": ranges.to_dict(), "qc": {key: _rates(f) for key, f in qc.items()},
    }
    timed_cells = list(normal_cells(min(args.held_out, 50), args.seed + 1))
    record["cost_ms"] = {"qc": _time_per_call(
        lambda i: reasons_for(measure(timed_cells[i % len(timed_cells)]), ranges), args.repeats, warmup=10)}
    if args.calibrated:
        rows = np.random.default_rng(0).standard_normal((50, ood.dim)).astype(np.float32)  # cost only
    elif fit_emb is None:
        record["ood_note"] = embed.note
        ood, rows = _stand_in_ood()
    else:
        ood, rows = fit_ood(fit_emb), emb[HELD_OUT]
        oflags = {key: ood_flags(ood, ood_scores(ood, emb[key])) for key in qc}
    if oflags:
        record["ood"] = {}
        for key, flags in qc.items():
            both = np.array([bool(f) for f in flags]) | oflags[key]
            record["ood"][key] = {"ood_flagged": float(oflags[key].mean()), "qc_or_ood_flagged": float(both.mean())}
    record["ood_model"] = {"dim": ood.dim, "k": ood.k, "threshold": ood.threshold, "percentile": ood.percentile,
                           "json_chars": len(json.dumps(ood.to_dict()))}
    record["cost_ms"]["ood"] = _time_per_call(lambda i: ood_scores(ood, rows[i % len(rows)][None]),
                                              args.repeats, warmup=10)
    ref = _reference_ms(args.results)
    total = record["cost_ms"]["qc"]["p50"] + record["cost_ms"]["ood"]["p50"]
    source = args.results.resolve()
    source = source.relative_to(HERE.parent) if source.is_relative_to(HERE.parent) else source
    record["reference"] = {"source": str(source), "int8_exact_ms_per_cell": ref,
                           "qc_plus_ood_p50_ms": total, "share": {row: total / ms for row, ms in ref.items()}}
    record["seconds"] = time.perf_counter() - start
    return record


def to_markdown(record: dict[str, Any]) -> str:
    """The record as a Markdown page."""
    s = record["settings"]
    fit_arg = "" if s.get("calibrated") else f"--fit {s['fit']} "  # nothing is fitted here with --calibrated
    lines = [
        "# When not to trust a call: QC + OOD (SYNTHETIC)",
        "",
        "SYNTHETIC cells drawn by `edgeleuk synth`'s code: figures show that the checks work on the kinds of",
        "shift drawn here, nothing about real slides. Command: `python benchmarks/trust.py "
        f"{fit_arg}--held-out {s['held_out']} --shifts {s['shifts']} --seed {s['seed']}"
        f"{' --model ' + s['model'] if s['model'] else ''}{' --calibrated' if s.get('calibrated') else ''}`.",
        "",
        (f"Quality ranges ({record['ranges']['source']}) and OOD model from `{Path(s['model']).name}`'s own "
         "metadata, as `edgeleuk calibrate` fitted them; every cell through the deployed runtime "
         "(`Classifier.predict_arrays`, ONNX Runtime): the flags `edgeleuk predict` would give."
         if s.get("calibrated") else
         f"Ranges fitted on {s['fit']} training-distribution cells ({record['ranges']['source']})."),
        "",
        "## Flag rates",
        "",
        "| cells | n | QC flagged | reasons (share of cells) | OOD flagged | QC or OOD |",
        "|---|---|---|---|---|---|",
    ]
    for key in (HELD_OUT, *SHIFT_KINDS):  # in this order whatever the JSON's key order
        q, o = record["qc"][key], (record.get("ood") or {}).get(key)
        reasons = ", ".join(f"{r} {v:.1%}" for r, v in q["reasons"].items()) or "-"
        ood_rate = f"{o['ood_flagged']:.1%}" if o else "-"
        both = f"{o['qc_or_ood_flagged']:.1%}" if o else "-"
        lines.append(f"| {key} | {q['n']} | {q['flagged']:.1%} | {reasons} | {ood_rate} | {both} |")
    if record.get("ood_note"):
        lines += ["", f"OOD flag rates not measured: {record['ood_note']}."]
    cost, ref = record["cost_ms"], record["reference"]
    lines += [
        "", "## Cost per cell (one thread, after a warm-up)", "",
        "| step | clock | p50 ms | p90 ms | p99 ms | mean ms | calls |", "|---|---|---|---|---|---|---|",
    ]
    for step, label in (("qc", "QC: quality.measure + ranges"), ("ood", "OOD: ood_scores, one cell")):
        c = cost[step]
        for clock, f in (("wall", c), ("thread CPU", c["cpu"])):
            lines.append(f"| {label} | {clock} | {f['p50']:.3f} | {f['p90']:.3f} | {f['p99']:.3f} | {f['mean']:.3f} | "
                         f"{c['n']} (+{c['warmup']} warm-up) |")
    lines += ["", f"Load average before the run: {record['machine'].get('load_avg')} on "
                  f"{record['machine'].get('usable_cores')} cores (shared with other processes: the wall clock's "
                  "tail is waiting for a core; the thread CPU time is the work itself)."]
    m = record["ood_model"]
    stand_in = f" (a stand-in of the paper's width: {record['ood_note']})" if record.get("ood_note") else ""
    lines += ["", f"OOD model: {m['k']} components of {m['dim']} dims, {m['json_chars']} characters in the "
                  f"metadata, flagged above {m['threshold']:.4g} (percentile {m['percentile']:g}){stand_in}.", ""]
    for row, ms in ref["int8_exact_ms_per_cell"].items():
        lines.append(f"- QC + OOD (p50, {ref['qc_plus_ood_p50_ms']:.2f} ms) next to `{row}` "
                     f"({ms:.0f} ms per cell, best throughput in {ref['source']}): {ref['share'][row]:.2%}")
    if not ref["int8_exact_ms_per_cell"]:
        lines.append(f"- no INT8 exact rows found in {ref['source']}")
    lines += ["", "## Machine", ""]
    machine = record.get("machine") or {}
    lines += [f"- {k}: {v}" for k, v in machine.items() if k in ("cpu", "usable_cores", "logical_cores",
                                                                  "load_avg", "platform", "libraries")]
    lines += [f"- wall time of the whole run: {record['seconds']:.0f} s", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the Markdown, write TRUST.md and TRUST.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=400, help="training-distribution cells the ranges are fitted on")
    parser.add_argument("--held-out", type=int, default=1000, help="fresh training-distribution cells")
    parser.add_argument("--shifts", type=int, default=200, help="cells of each shift kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=500, help="timed calls per cost figure")
    parser.add_argument("--model", type=Path, default=None, help="an .onnx with an 'embedding' output (OOD rates)")
    parser.add_argument("--calibrated", action="store_true",
                        help="use --model's own calibrated ranges and OOD model, flags from the runtime")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.json", help="the INT8 rows to compare with")
    parser.add_argument("--out", type=Path, default=HERE / "TRUST.md")
    args = parser.parse_args(argv)
    if args.calibrated and args.model is None:
        parser.error("--calibrated needs --model (a calibrated model file)")
    record = run(args)
    args.out.write_text(to_markdown(record), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                             encoding="utf-8")
    print(to_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
