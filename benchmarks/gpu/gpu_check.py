"""The one-shot GPU check behind ``check.sh``: export, gate, place, compare and time on CUDA.

Run through ``benchmarks/gpu/check.sh`` (which installs onnxruntime-gpu and sets PYTHONPATH).
Everything runs on SYNTHETIC cells (``edgeleuk synth``) and the paper's network with a random
trunk and a head fitted on synthetic cells (``benchmarks/fitted_head.py``): the speed and parity
figures are real, the accuracy ones say nothing about leukaemia. It writes one Markdown file:

* the machine: GPU, driver, onnxruntime build and providers, torch;
* the fp32 and fp16 exports and their parity gates (the ``cuda`` engine beside ``cpu``);
* the providers a ``cuda`` session really uses and every node ONNX Runtime placed elsewhere
  (from its profiler, which names each node's provider);
* parity of the CUDA runs with ONNX Runtime CPU, TF32 off (the backend's setting) and on;
* whether TensorRT starts (``--tensorrt``);
* cells/s and per-call p50/p99 at batches 1, 8 and 64 with IO binding, and ``edgeleuk bench --backend cuda``.

``--cpu-only`` runs the same steps on ONNX Runtime's CPU provider with the tiny network, to check
the script on a machine without a GPU; its file says so in its first lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # fitted_head.py, beside this folder

from fitted_head import fit_head  # noqa: E402 - a sibling script, importable once its folder is on sys.path

from edgeleuk.core.contract import INPUT_NAME, LOGIT, OUTPUT_NAMES  # noqa: E402
from edgeleuk.core.errors import EdgeleukError  # noqa: E402
from edgeleuk.core.meta import PAPER_ARCH  # noqa: E402
from edgeleuk.runtime.cuda import CUDA, CUDA_OPTIONS  # noqa: E402

CPU = "CPUExecutionProvider"
TIMED_BATCHES = (1, 8, 64)


@dataclass(frozen=True)
class Plan:
    """What this run does: the GPU check, or its CPU-only dry run."""

    cpu_only: bool
    work: Path
    arch: str
    gate_n: int
    batches: tuple[int, ...]
    budget_s: float
    deadline: float  # time.monotonic() by which the last step must be done (the GPU run's limit)

    @property
    def device(self) -> str:
        return "cpu" if self.cpu_only else "cuda"

    def providers(self, tf32: int = 0) -> list[Any]:
        """The ``cuda`` backend's providers (CUDA_OPTIONS, TF32 off), or ``tf32=1`` for the comparison."""
        if self.cpu_only:
            return [CPU]
        return [(CUDA, {**CUDA_OPTIONS, "use_tf32": str(tf32)}), CPU]


def _run(cmd: list[str], timeout: float = 60) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({cmd[0]}: {exc})"
    return (done.stdout + done.stderr).strip()


def machine(plan: Plan) -> list[str]:
    """The GPU, the driver, onnxruntime's build and providers, torch."""
    import onnxruntime as ort

    gpu = "none (CPU-only dry run)" if plan.cpu_only else _run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    lines = [f"- GPU: {gpu}",
             f"- onnxruntime {ort.__version__} from `{Path(ort.__file__).parent}`, built for CUDA "
             f"{getattr(ort, 'cuda_version', None) or 'none'}; available providers: {ort.get_available_providers()}",
             f"- Python {platform.python_version()}, {platform.platform()}"]
    try:
        import torch

        cuda = f"CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() \
            else f"CUDA {torch.version.cuda}, no device visible"
        lines.append(f"- torch {torch.__version__} ({cuda}); the parity gate's reference runs on the CPU")
    except ImportError:
        lines.append("- torch: not installed")
    return lines


def synthetic_data(plan: Plan) -> Path:
    """A small SYNTHETIC data set in the C-NMC layout, drawn once into the work folder."""
    from edgeleuk.synth.dataset import make_synthetic

    root = plan.work / "data"
    if not (root / "SYNTHETIC.txt").is_file():
        make_synthetic(root, subjects=12, cells_per_subject=16, seed=0)
    return root


def checkpoint(plan: Plan, data: Path) -> Path:
    """Random trunk (seed 0), BatchNorm statistics and head fitted on SYNTHETIC cells; made once."""
    import torch

    from edgeleuk.core.meta import ModelMeta
    from edgeleuk.modeling.checkpoint import save_checkpoint
    from edgeleuk.modeling.model import create_model

    path = plan.work / f"{plan.arch}-fitted-head.pt"
    if not path.is_file():
        torch.manual_seed(0)
        net = create_model(plan.arch).eval()
        meta = ModelMeta(arch=plan.arch, recipe="gpu-check")
        record = fit_head(net, meta, data, cells=48 if plan.cpu_only else 96)
        save_checkpoint(path, net.state_dict(), meta.replace(extra={"weights": record}))
    return path


def export(plan: Plan, ckpt: Path, data: Path, profile_name: str, out: Path) -> tuple[Path, str]:
    """Export through the gate on ``cuda`` and ``cpu``; when the gate refuses, say why and gate on cpu only."""
    from edgeleuk.exporting import export_model, load_profile

    engines = ("cpu",) if plan.cpu_only else ("cuda", "cpu")
    profile = load_profile(profile_name).replace(parity_n=plan.gate_n, gate_engines=engines, batch_sizes=(1, 4))
    started = time.perf_counter()
    try:
        result = export_model(ckpt, out, profile, data=data)
        return out, f"{result.gate.describe()}\n(export and gate: {time.perf_counter() - started:.0f} s)"
    except EdgeleukError as exc:  # the gate refused: a finding; export again to measure the file anyway
        refused = f"GATE REFUSED THE FILE:\n{exc}"
        export_model(ckpt, out, profile.replace(gate_engines=("cpu",)), data=data)
        return out, refused + "\n(exported again, gated on cpu only, to measure it)"


def gate_cells(plan: Plan, data: Path, n: int) -> np.ndarray:
    """``n`` SYNTHETIC prelim cells, decoded as predict decodes them."""
    from edgeleuk.io.data import discover, spread
    from edgeleuk.io.imageio import decode_image

    records = spread(discover(data).split("prelim"), n)
    return np.stack([decode_image(r.path).image for r in records])


def _session(plan: Plan, model: Path, providers: list[Any], profile_to: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if profile_to is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_to)
    session = ort.InferenceSession(str(model), so, providers=providers)
    session.disable_fallback()
    return session


def placement(plan: Plan, model: Path, cells: np.ndarray) -> list[str]:
    """Providers in use and, from ONNX Runtime's profiler, every node that ran off the GPU."""
    session = _session(plan, model, plan.providers(), profile_to=plan.work / f"profile-{model.stem}")
    session.run(list(OUTPUT_NAMES), {INPUT_NAME: cells[:2]})
    trace = Path(session.end_profiling())
    nodes: dict[str, tuple[str, str]] = {}
    for event in json.loads(trace.read_text()):
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"].removesuffix("_kernel_time")] = (args.get("op_name", "?"), args["provider"])
    trace.unlink()
    home = CPU if plan.cpu_only else CUDA
    off = sorted(f"{op} `{name}` ({prov})" for name, (op, prov) in nodes.items() if prov != home)
    copies = sorted(name for name, (op, _) in nodes.items() if op.startswith("Memcpy"))
    where = "CPU" if plan.cpu_only else "GPU"
    return [f"- session providers: {session.get_providers()}",
            f"- {len(nodes)} nodes ran; off the {where}: " + (", ".join(off) if off else "**none**"),
            "- host/device copy nodes (Memcpy): " + (", ".join(copies) if copies else "**none**")]


def _logits(session: Any, cells: np.ndarray, chunk: int = 8) -> np.ndarray:
    """Logits of ``cells`` in chunks (32 cells are 256 views: one call would take many GB on the CPU)."""
    runs = [session.run([LOGIT], {INPUT_NAME: cells[i : i + chunk]})[0] for i in range(0, len(cells), chunk)]
    return np.concatenate(runs).astype(np.float64)


def parity(plan: Plan, model: Path, cells: np.ndarray, threshold: float, precision: str) -> list[str]:
    """The file's logits on the GPU (TF32 off and on) against ONNX Runtime CPU, on the same cells."""
    ref = _logits(_session(plan, model, [CPU]), cells)
    gate = "|dlogit| <= 1e-4 and 100 % agreement" if precision == "fp32" else ">= 99.5 % agreement"
    lines = [f"- vs ONNX Runtime CPU on {len(cells)} cells (the {precision} gate: {gate}):"]
    for tf32 in (0,) if plan.cpu_only else (0, 1):
        got = _logits(_session(plan, model, plan.providers(tf32)), cells)
        delta = float(np.abs(got - ref).max())
        agree = float(np.mean((got >= _logit(threshold)) == (ref >= _logit(threshold))))
        what = "CPU provider (dry run)" if plan.cpu_only else f"CUDA, use_tf32={tf32}" + (
            " (the backend's setting)" if tf32 == 0 else "")
        lines.append(f"  - {what}: max |dlogit| {delta:.2e}, label agreement {agree:.1%}")
    return lines


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def tensorrt(plan: Plan, model: Path) -> list[str]:
    """Whether ``--tensorrt`` starts here; the machine this check was written for has no TensorRT."""
    if plan.cpu_only:
        return ["- not tried: no GPU (CPU-only dry run)"]
    import importlib.util

    from edgeleuk.runtime import backend_options, open_backend

    found = importlib.util.find_spec("tensorrt") is not None
    lines = [f"- TensorRT Python package installed: {found}"]
    try:
        backend = open_backend(model, "cuda", backend_options(tensorrt=True))
        lines.append(f"- `--tensorrt` started, on {list(backend.info().providers)}")
    except EdgeleukError as exc:
        lines.append(f"- `--tensorrt` refused, as it must be without TensorRT (no quiet CUDA run): {exc}")
    return lines


def timing(plan: Plan, model: Path, cells: np.ndarray, batch: int) -> str:
    """Cells/s and per-call p50/p99 at ``batch``, input and outputs bound on the device (IO binding)."""
    session = _session(plan, model, plan.providers())
    x = np.ascontiguousarray(cells[np.arange(batch) % len(cells)])
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(x, plan.device, 0))
    for name in OUTPUT_NAMES:
        binding.bind_output(name, plan.device)
    for _ in range(3):  # warm-up: cuDNN's algorithm search, the arena
        session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 500 and (len(times) < 10 or time.perf_counter() - start < plan.budget_s):
        t = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return (f"| {model.stem} | {batch} | {batch * len(ms) / (ms.sum() / 1e3):.1f} | {np.percentile(ms, 50):.2f} "
            f"| {np.percentile(ms, 99):.2f} | {len(ms)} |")


def bench_cli(plan: Plan, models: list[Path], seconds: float) -> str:
    """``edgeleuk bench --backend cuda --quick`` on both files, each row in its own torch-free process.

    ``--quick`` (batches 1 and 64, few runs): the timing table above is the measurement; this
    shows that the command runs there, where only ``preload_dlls`` finds CUDA.
    """
    backend, n, batch = ("cpu", 4, 2) if plan.cpu_only else ("cuda", 64, 64)
    cmd = [sys.executable, "-c", "from edgeleuk.cli import main; main()", "bench", "-m", str(models[0]),
           *(a for m in models[1:] for a in ("--extra-model", str(m))), "--backend", backend, "--n", str(n),
           "--batch", str(batch), "--quick", "--json", str(plan.work / "bench.json")]
    return _run(cmd, timeout=seconds)


def check(plan: Plan) -> list[str]:
    """Every step, as Markdown lines; a step that fails says so and the rest still run."""
    data = synthetic_data(plan)
    ckpt = checkpoint(plan, data)
    out = ["## Machine\n", *machine(plan), ""]
    models = []
    for precision, profile in (("fp32", "cpu-fp32"), ("fp16", "cuda-fp16")):
        path, gate = export(plan, ckpt, data, profile, plan.work / f"{plan.arch}-{precision}.onnx")
        models.append((precision, path))
        out += [f"## {precision}: export and parity gate ({profile}, {plan.gate_n} SYNTHETIC cells)\n",
                "```text", gate, "```", ""]
    cells = gate_cells(plan, data, 32 if not plan.cpu_only else 4)
    from edgeleuk.io.modelfile import read_model_meta

    for precision, path in models:
        threshold = read_model_meta(path)[0].threshold
        out += [f"## {precision}: where it ran, parity with ONNX Runtime CPU\n",
                *_step(placement, plan, path, cells), *_step(parity, plan, path, cells, threshold, precision), ""]
    out += ["## TensorRT\n", *_step(tensorrt, plan, models[0][1]), ""]
    out += ["## Speed with IO binding (input and outputs on the device)\n",
            "| file | batch | cells/s | p50 ms per call | p99 ms per call | calls |", "|---|---|---|---|---|---|"]
    for _, path in models:
        out += [_step(timing, plan, path, cells, b)[0] for b in plan.batches]
    out += ["", "## `edgeleuk bench`\n",
            "Without `--checkpoint` (the PyTorch row on the CPU would take minutes): its parity columns are n/a; "
            "the gates and the comparison with ONNX Runtime CPU above are the parity figures.\n",
            "```text", _bench_in_time(plan, [p for _, p in models]), "```"]
    return out


def _bench_in_time(plan: Plan, models: list[Path]) -> str:
    left = plan.deadline - time.monotonic()
    if left < 60:
        return f"skipped: {left:.0f} s left of the check's time limit"
    return bench_cli(plan, models, left)


def _step(fn: Any, *args: Any) -> list[str]:
    try:
        got = fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed step must not hide the others' results
        return [f"- **{fn.__name__} failed**: {type(exc).__name__}: {exc}"]
    return got if isinstance(got, list) else [got]


def main() -> int:
    """Parse the arguments, run :func:`check`, write the file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for data, checkpoint and exports")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    parser.add_argument("--cpu-only", action="store_true", help="dry run on the CPU provider, tiny network")
    parser.add_argument("--arch", help="network (default: the paper's; seresnext_tiny with --cpu-only)")
    parser.add_argument("--minutes", type=float, default=9.5, help="time limit; the bench step is cut to fit it")
    args = parser.parse_args()
    cpu_only = args.cpu_only
    plan = Plan(cpu_only=cpu_only, work=args.work, arch=args.arch or ("seresnext_tiny" if cpu_only else PAPER_ARCH),
                gate_n=4 if cpu_only else 32, batches=(1, 2) if cpu_only else TIMED_BATCHES,
                budget_s=0.5 if cpu_only else 3.0, deadline=time.monotonic() + args.minutes * 60)
    plan.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    body = check(plan)
    head = ["# GPU check: the cuda backend on a GPU" if not cpu_only else
            "# GPU check, CPU-only dry run: NO GPU was used", "",
            ("" if not cpu_only else
             "**NO GPU**: every step ran on ONNX Runtime's CPU provider (`CHECK_CPU_ONLY=1 benchmarks/gpu/check.sh`, "
             "`--cpu-only`), to check the script; no figure here is a GPU figure. ") +
            f"Written by `benchmarks/gpu/check.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"in {time.perf_counter() - started:.0f} s. "
            f"Network: `{plan.arch}` with a random trunk and a head fitted on **SYNTHETIC** cells "
            "(`edgeleuk synth`): speed and parity are real figures, accuracy says nothing about real cells.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
