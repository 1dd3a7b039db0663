"""Where the time goes: per-operator profiles of the standard benchmark's models, as Markdown.

    python benchmarks/profile_full.py      # after benchmarks/standard.py has exported the models

ONNX Runtime's profiler (per op type), OpenVINO's per-layer performance counters
(per layer type and the kernel that ran it, e.g. ``brgconv_avx512_amx`` vs ``jit_avx512``)
and the torch profiler (per aten op) on the same cells, with the same thread count.
Writes benchmarks/profiles/PROFILE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOP = 10


def _table(title: str, totals: dict[str, float], unit_ms: float, runs: int,
           flops: dict[str, float] | None = None) -> list[str]:
    """Top ops by time; with ``flops`` (per key, all runs) also the achieved GFLOP/s."""
    whole = sum(totals.values()) or 1.0
    conv = f"; convolutions: {sum(flops.values()) / runs / 1e9:.0f} GFLOP per cell" if flops else ""
    lines = [f"### {title}", "", f"{whole / runs * unit_ms:.1f} ms per cell in profiled ops ({runs} cells){conv}",
             "", "| op / kernel | ms per cell | share | GFLOP/s |", "|---|---|---|---|"]
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1])[:TOP]:
        rate = (flops or {}).get(name)
        gflops = "-" if not rate else f"{rate / (t * unit_ms / 1e3) / 1e9:.0f}"
        lines.append(f"| {name} | {t / runs * unit_ms:.1f} | {t / whole:.1%} | {gflops} |")
    return lines + [""]


def _ms_per_call(fn, inputs: list) -> float:
    fn(inputs[0])  # warm-up
    t0 = time.perf_counter()
    for x in inputs:
        fn(x)
    return (time.perf_counter() - t0) / len(inputs) * 1e3


def _ort_op_key(args: dict) -> str:
    """Op type, with convolutions split by kernel size and grouped vs dense (the 32x4d blocks' 3x3s are grouped)."""
    op = args.get("op_name", "?")
    shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
    if "Conv" not in op or len(shapes) < 2 or len(shapes[1]) != 4 or len(shapes[0]) not in (4, 5):
        return op
    x, w = shapes[0], shapes[1]
    channels = x[1] * x[4] if len(x) == 5 else x[1]  # NCHWc blocks: [N, C/b, H, W, b]
    grouped = "grouped" if w[1] < channels else "dense"
    return f"{op} {w[2]}x{w[3]} {grouped}"


def _ort_conv_flops(args: dict) -> float:
    """2 x multiply-adds of a convolution event (output elements x Cin/groups x kh x kw); 0 for other ops."""
    shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
    out = [next(iter(d.values())) for d in args.get("output_type_shape", [])]
    if "Conv" not in args.get("op_name", "") or len(shapes) < 2 or len(shapes[1]) != 4 or not out:
        return 0.0
    w = shapes[1]
    return 2.0 * float(np.prod(out[0])) * w[1] * w[2] * w[3]


def profile_ort(model: Path, cells: np.ndarray, threads: int, opt_level: str = "ORT_ENABLE_ALL") -> list[str]:
    """ONNX Runtime's own profiler: time per operator type."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opt_level)
    session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    session.run(None, {"image": cells[:1]})  # warm-up outside the profile
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="edgeleuk-ort-profile-")) / "ort")
    session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    for cell in cells:
        session.run(None, {"image": cell[None]})
    wall = (time.perf_counter() - t0) / len(cells)
    dump = Path(session.end_profiling())
    events = json.loads(dump.read_text())
    shutil.rmtree(dump.parent, ignore_errors=True)
    totals: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            totals[_ort_op_key(ev["args"])] += ev["dur"]  # microseconds
            flops[_ort_op_key(ev["args"])] += _ort_conv_flops(ev["args"])
    title = f"ONNX Runtime CPU fp32, {opt_level} (wall {wall * 1e3:.0f} ms per cell, first run excluded)"
    return _table(title, totals, 1e-3, len(cells), flops)


def ort_settings(model: Path, cells: np.ndarray, threads: int) -> list[str]:
    """Wall time per cell for ONNX Runtime settings that could matter on 2 cores."""
    import onnxruntime as ort

    rows = []
    for level in ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC"):
        for spin in ("1", "0"):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
            ms = _ms_per_call(lambda c, s=session: s.run(None, {"image": c[None]}), list(cells))
            rows.append(f"| {level} | {'on' if spin == '1' else 'off'} | {ms:.0f} |")
    return [f"### ONNX Runtime CPU settings ({threads} intra-op threads, batch 1)", "",
            "| graph optimization | thread spinning | ms per cell |", "|---|---|---|", *rows, ""]


def profile_openvino(model: Path, cells: np.ndarray, threads: int, precision: str) -> list[str]:
    """OpenVINO performance counters: time per (layer type, kernel)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(model), "CPU", {
        "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    request.infer({0: cells[:1]})
    totals: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    for cell in cells:
        request.infer({0: cell[None]})
        for info in request.profiling_info:
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                totals[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds()
    wall = (time.perf_counter() - t0) / len(cells)
    title = f"OpenVINO {model.suffix[1:]} at {precision} (wall {wall * 1e3:.0f} ms per cell)"
    return _table(title, totals, 1e3, len(cells))


def profile_torch(ckpt: Path, cells: np.ndarray, threads: int) -> list[str]:
    """The torch profiler on the paper's eager path (TorchReference)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

    torch.set_num_threads(threads)
    ref = TorchReference(load_checkpoint(ckpt))
    ref.predict_arrays(cells[:1])
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for cell in cells:
            ref.predict_arrays(cell[None])
    wall = (time.perf_counter() - t0) / len(cells)
    totals = {e.key: e.self_cpu_time_total for e in prof.key_averages()}  # microseconds
    return _table(f"torch eager fp32, the paper's path (wall {wall * 1e3:.0f} ms per cell, profiler on)",
                  totals, 1e-3, len(cells))


def torch_variants(ckpt: Path, cells: np.ndarray, threads: int) -> list[str]:
    """What the paper's eager path spends on preprocessing, and what other torch modes would give."""
    import torch

    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

    torch.set_num_threads(threads)
    ref = TorchReference(load_checkpoint(ckpt))
    rows = [("the reference path: PIL crop + 8 rotations + ToTensor, network, mean (per cell)",
             _ms_per_call(lambda c: ref.predict_arrays(c[None]), list(cells))),
             ("  of which PIL crop + 8 rotations + ToTensor", _ms_per_call(ref.views, list(cells)))]
    views = [ref.views(c) for c in cells]
    with torch.inference_mode():
        rows.append(("network alone, NCHW, eager (8 views)", _ms_per_call(ref.net, views)))
        net_cl = ref.net.to(memory_format=torch.channels_last)
        views_cl = [v.contiguous(memory_format=torch.channels_last) for v in views]
        rows.append(("network alone, channels_last, eager", _ms_per_call(net_cl, views_cl)))
    ref.net.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(ref.net, views[0]).eval()))
        rows.append(("network alone, TorchScript trace + freeze + optimize_for_inference (BN folded)",
                     _ms_per_call(frozen, views)))
    lines = [f"### torch variants ({threads} threads, torch.inference_mode, {len(cells)} cells)", "",
             "| variant | ms per cell |", "|---|---|"]
    return lines + [f"| {name} | {ms:.0f} |" for name, ms in rows] + [""]


def interleaved(work: Path, arch: str, cells: np.ndarray, threads: int, rounds: int = 3) -> list[str]:
    """Batch-1 latency of every engine, alternating engines in one process so load drift hits all alike.

    Sequential rows (as in ``edgeleuk bench``) see whatever else runs on the machine at
    their moment; alternating short slices gives ratios that drift cannot bias.
    """
    import onnxruntime as ort
    import openvino as ov
    import torch

    from edgeleuk.modeling.checkpoint import load_checkpoint
    from edgeleuk.modeling.reference import TorchReference

    torch.set_num_threads(threads)
    ref = TorchReference(load_checkpoint(work / f"{arch}-random.pt"))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(work / f"{arch}-fp32.onnx"), so, providers=["CPUExecutionProvider"])
    core = ov.Core()

    def ov_run(name: str, precision: str):
        compiled = core.compile_model(str(work / name), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        return lambda x: compiled(x)

    engines = {
        "torch eager fp32 (reference path)": ref.predict_arrays,
        "ONNX Runtime CPU fp32": lambda x: session.run(None, {"image": x}),
        "OpenVINO f32": ov_run(f"{arch}-fp32.onnx", "f32"),
        "OpenVINO bf16": ov_run(f"{arch}-fp32.onnx", "bf16"),
        "OpenVINO int8": ov_run(f"{arch}-int8.xml", "f32"),
        "OpenVINO int8+bf16": ov_run(f"{arch}-int8.xml", "bf16"),
    }
    times: dict[str, list[float]] = {k: [] for k in engines}
    for fn in engines.values():
        fn(cells[:1])
    for r in range(rounds):
        for name in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            time.sleep(0.3)  # let the previous engine's spinning threads go idle
            for cell in cells:
                t0 = time.perf_counter()
                engines[name](cell[None])
                times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["torch eager fp32 (reference path)"]))
    title = (f"### Interleaved batch-1 latency ({rounds} rounds x {len(cells)} cells per engine, alternating "
             "order, one process)")
    lines = [title, "", "| engine | median ms | min ms | x torch (median) |", "|---|---|---|---|"]
    for name, t in times.items():
        med = float(np.median(t))
        lines.append(f"| {name} | {med * 1e3:.0f} | {min(t) * 1e3:.0f} | {base / med:.2f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeleuk" / "bench-standard"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=cache)
    ap.add_argument("--arch", default="legacy_seresnext50_32x4d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "profiles" / "PROFILE.md")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args(argv)
    from edgeleuk.bench.cells import load_cells
    from edgeleuk.io.atomic import atomic_write_text

    cells = load_cells(args.work / "data", args.cells).images
    onnx_model, int8 = args.work / f"{args.arch}-fp32.onnx", args.work / f"{args.arch}-int8.xml"
    title = (f"# Per-operator profiles ({args.arch}, {args.threads} threads, {len(cells)} SYNTHETIC cells, "
             "8-rotation TTA per cell)")
    lines = [title, "", f"Load average before: {os.getloadavg()[0]:.2f}", ""]
    lines += interleaved(args.work, args.arch, cells, args.threads)
    lines += profile_ort(onnx_model, cells, args.threads)
    lines += profile_ort(onnx_model, cells, args.threads, "ORT_ENABLE_EXTENDED")
    lines += ort_settings(onnx_model, cells, args.threads)
    for model, precision in ((onnx_model, "f32"), (onnx_model, "bf16"), (int8, "f32"), (int8, "bf16")):
        lines += profile_openvino(model, cells, args.threads, precision)
    if not args.skip_torch:
        ckpt = args.work / f"{args.arch}-random.pt"
        lines += profile_torch(ckpt, cells, args.threads) + torch_variants(ckpt, cells, args.threads)
    lines += [f"Load average after: {os.getloadavg()[0]:.2f}", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
