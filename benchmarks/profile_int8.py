"""Where INT8 time goes: OpenVINO per-layer counters of an IR, and this CPU's peak GEMM rates.

    python benchmarks/profile_int8.py                       # the standard bench's INT8 IR (its cache)
    python benchmarks/profile_int8.py --model m.xml --precision bf16 --batch 1 --static

Run it on a quiet machine (timings). It writes ``benchmarks/profiles/int8-<precision>-b<B>[-static].md``
and ``.json``:

1. Per-layer performance counters of the compiled IR (``PERF_COUNT``): for every executed
   node its type, the kernel OpenVINO chose (``exec_type``, e.g. ``brgconv_avx512_amx_I8``,
   ``jit_avx512_FP32``), the precision read from that kernel name, and its share of the
   time; then totals by (layer type, precision), which say how much of a cell still runs
   in float (grouped 3x3 convolutions, SE blocks, reorders...).
2. The physical limit: the peak rate of one large int8 and bf16 (and f32) GEMM on this CPU
   with the same threads, against the network's multiply-accumulates per cell (counted from
   the model's convolutions and matmuls), i.e. the best cells/s these units could give if the
   network ran at GEMM peak.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "profiles"
DEFAULT_IR = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeleuk" / "bench-standard"
              / "legacy_seresnext50_32x4d-int8.xml")
_PRECISION = re.compile(r"_(I8|U8|BF16|FP32|F32|FP16|F16|I32)$", re.IGNORECASE)


def kernel_precision(exec_type: str) -> str:
    """The precision OpenVINO's CPU plugin names at the end of a kernel (``..._I8`` -> ``i8``)."""
    m = _PRECISION.search(exec_type or "")
    return m.group(1).lower().replace("fp32", "f32").replace("fp16", "f16") if m else "?"


@dataclass(frozen=True)
class Variant:
    """One way of compiling and calling the IR, for the interleaved comparison.

    Attributes:
        label: Row name.
        precision: Inference precision of the float layers (``f32``, ``bf16``).
        static: Reshape every input to the shape used (batch 1, ``len(views)`` views) before compiling.
        views: Rotations computed per call; None runs the file's own full call.
        hint: OpenVINO performance hint.
    """

    label: str
    precision: str
    static: bool = False
    views: tuple[int, ...] | None = None
    hint: str = "LATENCY"


#: The settings compared by ``--variants``: precision, dynamic vs static shapes, one rotation (staged stage 1).
VARIANTS = (
    Variant("int8, float layers f32, dynamic batch", "f32"),
    Variant("int8, float layers bf16, dynamic batch", "bf16"),
    Variant("int8, float layers bf16, static batch 1", "bf16", static=True),
    Variant("int8, float layers bf16, dynamic, views entry open (all 8)", "bf16", views=tuple(range(8))),
    Variant("int8, float layers bf16, dynamic, 1 rotation (staged stage 1)", "bf16", views=(0,)),
    Variant("int8, float layers bf16, static, 1 rotation (staged stage 1)", "bf16", static=True, views=(0,)),
    Variant("int8, float layers bf16, dynamic, 7 rotations (staged stage 2)", "bf16", views=tuple(range(1, 8))),
)


def compile_variant(path: Path, v: Variant, threads: int, batch: int = 1,
                    perf_count: bool = False) -> tuple[Any, Any]:
    """The IR read and compiled as ``v`` says: ``(model, compiled)``.

    ``v.views`` opens the views entry; ``v.static`` fixes every input's shape (``batch``
    cells, ``len(v.views)`` views) instead of the dynamic N, letting the plugin plan ahead.
    """
    import openvino as ov

    from edgeleuk.runtime.views import ov_expose_views

    core = ov.Core()
    model = core.read_model(str(path))
    if v.views is not None:
        ov_expose_views(model)
    if v.static:
        shapes = {model.inputs[0].get_any_name(): ov.PartialShape([batch, *model.inputs[0].get_partial_shape()[1:]])}
        if v.views is not None:
            shapes["views"] = ov.PartialShape([len(v.views)])
        model.reshape(shapes)
    config = {"INFERENCE_PRECISION_HINT": v.precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": v.hint,
              "PERF_COUNT": perf_count}
    return model, core.compile_model(model, "CPU", config)


def interleaved(path: Path, variants: tuple[Variant, ...], threads: int, rounds: int, calls: int,
                size: int) -> list[dict]:
    """Batch-1 ms per call of every variant, alternating variants round by round in one process.

    Alternating (and reversing the order every round) spreads load drift on a shared
    machine over all variants alike, as in ``profile_full.py``.
    """
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    runs = []
    for v in variants:
        request = compile_variant(path, v, threads)[1].create_infer_request()
        feed: dict[Any, np.ndarray] = {0: image}
        if v.views is not None:
            feed = {"image": image, "views": np.asarray(v.views, np.int64)}
        request.infer(feed)  # warm-up
        runs.append((v, request, feed, []))
    for r in range(rounds):
        for _v, request, feed, times in runs if r % 2 == 0 else runs[::-1]:
            for _ in range(calls):
                started = time.perf_counter()
                request.infer(feed)
                times.append((time.perf_counter() - started) * 1e3)
    base = float(np.median(runs[0][3]))
    return [{"variant": v.label, "precision": v.precision, "static": v.static,
             "views": None if v.views is None else len(v.views), "median_ms": float(np.median(t)),
             "p90_ms": float(np.percentile(t, 90)), "min_ms": float(np.min(t)), "calls": len(t),
             "x_first": base / float(np.median(t))} for v, _, _, t in runs]


def render_variants(meta: dict, rows: list[dict]) -> str:
    """The interleaved comparison as Markdown."""
    lines = [f"# INT8 IR: settings compared interleaved ({meta['model']})", "",
             f"Generated by `{meta['command']}`; {meta['when']}; load average {meta['load']:.2f} before the run; "
             f"{meta['threads']} threads; {meta['rounds']} rounds x {meta['calls']} batch-1 calls per variant, "
             "variants alternating (order reversed every round) in one process.", "",
             "| variant | rotations per call | median ms | p90 ms | min ms | x first row (median) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['views'] or 8} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['x_first']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def layer_profile(compiled: Any, batch: int, size: int, runs: int, seed: int = 0) -> tuple[list[dict], float]:
    """Per-node counters summed over ``runs`` inferences after one warm-up; and the mean wall ms per call."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    request = compiled.create_infer_request()
    request.infer({0: images})  # warm-up: compile-time kernels, first-touch memory
    totals: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for _ in range(runs):
        request.infer({0: images})
        for info in request.get_profiling_info():
            if str(info.status).endswith("NOT_RUN"):
                continue
            row = totals.setdefault(info.node_name, {"node": info.node_name, "type": info.node_type,
                                                     "kernel": info.exec_type, "us": 0.0})
            row["us"] += info.real_time.total_seconds() * 1e6
    wall_ms = (time.perf_counter() - started) * 1e3 / runs
    layers = sorted(totals.values(), key=lambda r: -r["us"])
    total = sum(r["us"] for r in layers) or 1.0
    for r in layers:
        r["us"] /= runs
        r["share"] = r["us"] * runs / total
        r["precision"] = kernel_precision(r["kernel"])
    return layers, wall_ms


def by_type_and_precision(layers: list[dict], macs: dict[str, float] | None = None) -> list[dict]:
    """Time (and multiply-accumulates, where ``macs`` names the node) per (layer type, kernel precision)."""
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"us": 0.0, "share": 0.0, "nodes": 0, "macs": 0.0})
    for r in layers:
        g = groups[(r["type"], r["precision"])]
        g["us"] += r["us"]
        g["share"] += r["share"]
        g["nodes"] += 1
        g["macs"] += (macs or {}).get(r["node"], 0.0)
    return sorted(({"type": t, "precision": p, **g} for (t, p), g in groups.items()), key=lambda g: -g["us"])


def macs_by_node(model: Any) -> dict[str, float]:
    """Multiply-accumulates per (Group)Convolution/MatMul node for one cell (all its rotated views).

    Counted on the model reshaped to batch 1: output elements x (input channels per group x kernel area)
    for (Group)Convolution, M x N x K for MatMul.
    """
    import openvino as ov

    m = model.clone()
    m.reshape({m.inputs[0].get_any_name(): ov.PartialShape([1, *m.inputs[0].get_partial_shape()[1:]])})
    macs: dict[str, float] = {}
    for op in m.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = op.get_output_partial_shape(0)
        w = op.get_input_partial_shape(1)
        if out.is_dynamic or w.is_dynamic:
            continue
        out_n = float(np.prod([d.get_length() for d in out]))
        wd = [d.get_length() for d in w]
        if kind == "Convolution":
            macs[op.get_friendly_name()] = out_n * float(np.prod(wd[1:]))
        elif kind == "GroupConvolution":
            macs[op.get_friendly_name()] = out_n * float(np.prod(wd[2:]))
        else:
            macs[op.get_friendly_name()] = out_n * float(op.get_input_partial_shape(0)[-1].get_length())
    return macs


def macs_per_cell(model: Any) -> float:
    """Multiply-accumulates of the convolutions and matmuls for one cell (see :func:`macs_by_node`)."""
    return float(sum(macs_by_node(model).values()))


def gemm_peak(kind: str, threads: int, m: int = 2048, n: int = 2048, k: int = 2048, seconds: float = 3.0) -> float:
    """Multiply-accumulates per second of one large GEMM in ``kind`` (``i8``, ``bf16``, ``f32``) on OpenVINO CPU.

    ``i8``: both operands pass FakeQuantize (256 levels), which the CPU plugin fuses into an
    int8 GEMM (VNNI/AMX); ``bf16``/``f32``: an f32 MatMul compiled with that inference precision.
    """
    import openvino as ov
    from openvino import opset13 as ops

    a = ops.parameter([m, k], ov.Type.f32, name="a")
    weights = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    b: Any = ops.constant(weights)
    x: Any = a
    if kind == "i8":
        lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
        x = ops.fake_quantize(a, lo, hi, lo, hi, 256)
        b = ops.fake_quantize(b, lo, hi, lo, hi, 255)
    model = ov.Model([ops.matmul(x, b, False, False)], [a], f"gemm-{kind}")
    precision = "bf16" if kind == "bf16" else "f32"
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    data = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    request.infer({0: data})
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        request.infer({0: data})
        calls += 1
    return calls * m * n * k / (time.perf_counter() - started)


def render(meta: dict, layers: list[dict], groups: list[dict], top: int = 40) -> str:
    """The profile as Markdown: setup, the GEMM limit, time by type and precision, the top layers."""
    lines = [f"# INT8 IR per-layer profile: {meta['model']}", "",
             f"Generated by `{meta['command']}`; {meta['when']}; load average {meta['load']:.2f} before the run.", "",
             (f"- inference precision for float layers: {meta['precision']}; batch {meta['batch']} "
              f"({'static' if meta['static'] else 'dynamic'} shape); threads {meta['threads']}; "
              f"{meta['runs']} runs; mean {meta['wall_ms']:.1f} ms per call = {meta['cells_per_s']:.2f} cells/s"),
             f"- network: {meta['macs_per_cell'] / 1e9:.1f} GMAC per cell (all rotated views)",
             ""]
    if meta.get("gemm"):
        g = meta["gemm"]
        lines += ["## Physical limit (one large GEMM on this CPU, same threads)", "",
                  "| GEMM | GMAC/s | cells/s if the whole network ran at this rate |", "|---|---|---|"]
        lines += [f"| {k} | {v / 1e9:.0f} | {v / meta['macs_per_cell']:.1f} |" for k, v in g.items()]
        lines.append("")
    lines += ["## Time by layer type and kernel precision", "",
              "GMAC per call and the rate achieved (GMAC/s) for the convolutions and matmuls, against the GEMM "
              "peaks above.", "",
              "| type | precision | nodes | ms per call | share | GMAC per call | GMAC/s |",
              "|---|---|---|---|---|---|---|"]
    batch = meta["batch"]
    lines += [f"| {g['type']} | {g['precision']} | {g['nodes']} | {g['us'] / 1e3:.2f} | {g['share']:.1%} | "
              + (f"{batch * g['macs'] / 1e9:.1f} | {batch * g['macs'] / (g['us'] * 1e3):.0f} |" if g.get("macs")
                 else "- | - |")
              for g in groups]
    lines += ["", f"## Top {top} layers", "", "| node | type | kernel | precision | ms per call | share |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['node']} | {r['type']} | {r['kernel']} | {r['precision']} | {r['us'] / 1e3:.3f} | "
              f"{r['share']:.1%} |" for r in layers[:top]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Profile, probe and write ``benchmarks/profiles/int8-*.md`` and ``.json``; 2 without a model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_IR, help="OpenVINO IR (.xml) to profile")
    ap.add_argument("--precision", choices=("f32", "bf16"), default="bf16", help="precision of the float layers")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--static", action="store_true", help="reshape to a static batch before compiling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-gemm", action="store_true", help="skip the GEMM peak-rate probe")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--variants", action="store_true",
                    help="instead of the layer profile: batch-1 latency of VARIANTS, interleaved")
    ap.add_argument("--rounds", type=int, default=6, help="--variants: rounds (variants alternate)")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"no model at {args.model}: run `make bench` first or pass --model", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    command = "python benchmarks/profile_int8.py " + " ".join(argv or sys.argv[1:])
    if args.variants:
        rows = interleaved(args.model, VARIANTS, args.threads, args.rounds, calls=3, size=450)
        meta = {"model": str(args.model), "command": command, "when": time.strftime("%Y-%m-%d %H:%M"), "load": load,
                "threads": args.threads, "rounds": args.rounds, "calls": 3}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "int8-variants.md").write_text(render_variants(meta, rows), encoding="utf-8")
        (args.out / "int8-variants.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1),
                                                     encoding="utf-8")
        print(render_variants(meta, rows))
        return 0
    variant = Variant(f"int8, float layers {args.precision}", args.precision, static=args.static)
    model, compiled = compile_variant(args.model, variant, args.threads, args.batch, perf_count=True)
    size = model.inputs[0].get_partial_shape()[1].get_length()
    layers, wall_ms = layer_profile(compiled, args.batch, size, args.runs)
    meta = {"model": str(args.model), "command": command,
            "when": time.strftime("%Y-%m-%d %H:%M"), "load": load, "precision": args.precision,
            "batch": args.batch, "static": args.static, "threads": args.threads, "runs": args.runs,
            "wall_ms": wall_ms, "cells_per_s": args.batch * 1e3 / wall_ms}
    node_macs = macs_by_node(model)
    meta["macs_per_cell"] = float(sum(node_macs.values()))
    if not args.no_gemm:
        meta["gemm"] = {kind: gemm_peak(kind, args.threads) for kind in ("i8", "bf16", "f32")}
    groups = by_type_and_precision(layers, node_macs)
    name = f"int8-{args.precision}-b{args.batch}{'-static' if args.static else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(render(meta, layers, groups), encoding="utf-8")
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "groups": groups, "layers": layers}, indent=1),
                                           encoding="utf-8")
    print(render(meta, layers, groups, top=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
