"""``edgeleuk demo``: the whole pipeline on SYNTHETIC data, one visible stage at a time.

synth -> train (recipe `demo`) -> export fp32 ONNX and OpenVINO INT8 IR through the
parity gate, and the fp32 model's card -> predict the synthetic final-test folder ->
bench on the preliminary test folder -> HTML report. Every figure it prints comes from
synthetic cells and says nothing about leukaemia diagnosis; with ``--fast`` the model is
a smoke model (the ``smoke`` recipe), and the output and the card say so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeleuk.core.errors import EdgeleukError, GateFailed, UsageError
from edgeleuk.exporting import export_model
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.io.data import discover
from edgeleuk.synth.dataset import make_synthetic
from edgeleuk.training.loop import train
from edgeleuk.workflow.card import write_card
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.report import write_report

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: these cells were drawn by `edgeleuk synth`; every figure below only shows "
    "that the pipeline works and says nothing about leukaemia diagnosis."
)


@dataclass(frozen=True)
class DemoScale:
    """How big the demo runs.

    Attributes:
        subjects: Synthetic subjects.
        cells_per_subject: Cells per subject.
        recipe: Packaged training recipe name (``edgeleuk recipes``).
        bench_n: Cells used by the benchmark.
        bench_budget_s: Seconds per benchmark timing loop (the demo shows the harness; use
            ``edgeleuk bench`` or ``benchmarks/standard.py`` for careful numbers).
        int8_profile: Export profile for the INT8 IR (the shipped one calibrates on >= 300 cells).
    """

    subjects: int
    cells_per_subject: int
    recipe: str
    bench_n: int
    int8_profile: str = "openvino-int8"
    bench_budget_s: float = 1.5


FULL = DemoScale(subjects=24, cells_per_subject=40, recipe="demo", bench_n=64)
FAST = DemoScale(subjects=10, cells_per_subject=8, recipe="smoke", bench_n=8,
                 int8_profile="openvino-int8-smoke")
MARKER = ".edgeleuk-demo"


@dataclass
class DemoResult:
    """Where the demo put things and how long each stage took."""

    out: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _stage(console: Console, result: DemoResult, name: str, fn: Callable[[], Any]) -> Any:
    console.rule(f"[bold]{name}")
    t0 = time.perf_counter()
    value = fn()
    result.seconds[name] = time.perf_counter() - t0
    console.print(f"[green]done[/green] {name} in {result.seconds[name]:.1f} s")
    return value


def run_demo(out: str | Path = "demo-run", fast: bool = False, console: Console | None = None) -> DemoResult:
    """Run every stage of the pipeline on synthetic data.

    Args:
        out: Folder for every artefact (created; existing content is overwritten).
        fast: Tiny scale (smoke recipe, few cells) for tests and a quick look.
        console: Where to print; stdout by default.

    Returns:
        The artefact paths and stage timings.
    """
    console = console or Console(soft_wrap=True)
    scale = FAST if fast else FULL
    out = Path(out)
    _prepare_out(out)
    res = DemoResult(out=out)
    data = out / "data"
    console.print(f"[bold yellow]{SYNTHETIC_NOTE}")

    summary = _stage(console, res, "1/6 synthesise C-NMC-layout data", lambda: make_synthetic(
        data, subjects=scale.subjects, cells_per_subject=scale.cells_per_subject, seed=0))
    console.print(summary.describe(), markup=False, highlight=False)
    run = _stage(console, res, "2/6 train", lambda: train(
        data, recipe=scale.recipe, out=out / "run", seed=0, pretrained=None, resume=False))
    console.print(run.describe(), markup=False, highlight=False)
    ckpt = out / "run" / "best.pt"
    onnx_path, int8_path = out / "model.onnx", out / "model-int8.xml"
    exp = _stage(console, res, "3/6 export fp32 ONNX (parity gate vs PyTorch)", lambda: export_model(
        ckpt, out=onnx_path, profile="cpu-fp32", data=data))
    console.print(exp.describe(), markup=False, highlight=False)
    card_path, card = write_card(onnx_path, out / "model.card.md")
    write_card(onnx_path, out / "model.card.html", fmt="html")
    res.notes["model_warnings"] = card.voiding
    _print_model_warnings(console, card_path, card.voiding)
    exp8 = _stage(console, res, "4/6 export OpenVINO INT8 IR (NNCF, parity gate)", lambda: export_model(
        ckpt, out=int8_path, profile=scale.int8_profile, data=data))
    console.print(exp8.describe(), markup=False, highlight=False)
    preds = out / "predictions.csv"
    pred = _stage(console, res, "5/6 predict the final-test folder", lambda: predict(
        _split_folder(data, "final"), model=onnx_path, out=preds, options=PredictOptions()))
    console.print(pred.describe(), markup=False, highlight=False)
    report = _stage(console, res, "6/6 bench every backend on the preliminary test",
                    lambda: _bench(out, ckpt, data, onnx_path, int8_path, scale, fast))
    console.print(report.to_markdown(), markup=False, highlight=False)
    html = _report(out, data, onnx_path)
    res.artefacts.update(data=data, checkpoint=ckpt, onnx=onnx_path, int8=int8_path, card=card_path,
                         predictions=preds, bench=out / "bench.md", report=html)
    _print_epilogue(console, res)
    if report.exit_code() != 0:
        raise GateFailed("the benchmark's parity gate failed; see bench.md")
    return res


def _bench(out: Path, ckpt: Path, data: Path, onnx_path: Path, int8_path: Path, scale: DemoScale,
           fast: bool) -> BenchRun:
    """Run ``edgeleuk bench`` as a user would, in its own process; writes ``bench.json`` and ``bench.md``.

    A separate process also keeps the measurement clean of everything the demo loaded before
    (training's thread pools, NNCF, OpenVINO's plugins), which disturbed timings.
    """
    argv = [sys.executable, "-m", "edgeleuk", "bench", "--model", str(onnx_path), "--checkpoint", str(ckpt),
            "--data", str(data), "--n", str(scale.bench_n), "--batch", "8", "--extra-model", str(int8_path),
            "--json", str(out / "bench.json"), "--budget", str(scale.bench_budget_s)]
    if fast:
        argv.append("--quick")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise EdgeleukError(f"edgeleuk bench failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    atomic_write_text(out / "bench.md", f"> {SYNTHETIC_NOTE}\n\n{proc.stdout}\n")
    return BenchRun(markdown=proc.stdout, code=proc.returncode)


@dataclass(frozen=True)
class BenchRun:
    """What the benchmark process printed and how it exited (1: a parity gate failed)."""

    markdown: str
    code: int

    def to_markdown(self) -> str:
        """The benchmark's Markdown report."""
        return self.markdown

    def exit_code(self) -> int:
        """The benchmark's exit code."""
        return self.code


def _report(out: Path, data: Path, onnx_path: Path) -> Path:
    """The HTML report, on the preliminary test: it reads best on labelled cells."""
    prelim_dir = _split_folder(data, "prelim")
    prelim_preds = out / "predictions-prelim.csv"
    predict(prelim_dir, model=onnx_path, out=prelim_preds, options=PredictOptions())
    return Path(write_report(prelim_preds, out=out / "report.html", images=prelim_dir, model=onnx_path))


def _prepare_out(out: Path) -> None:
    """Start from an empty folder; only ever delete a previous demo's own folder."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(f"{out} exists and is not a previous demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `edgeleuk demo`; the next demo run replaces this folder\n")


def _split_folder(data: Path, split: str) -> Path:
    records = discover(data).split(split)
    return records[0].path.parent if records else data


def _print_model_warnings(console: Console, card: Path, warnings: tuple[str, ...]) -> None:
    """What voids the model's calls (SYNTHETIC training, a smoke model), as its card states it."""
    for line in warnings:
        console.print(line, style="bold yellow", markup=False, highlight=False)
    console.print(f"model card: {card}", markup=False, highlight=False)


def _print_epilogue(console: Console, res: DemoResult) -> None:
    console.rule("[bold]demo finished")
    console.print(f"[bold yellow]{SYNTHETIC_NOTE}")
    for line in res.notes.get("model_warnings", ()):
        console.print(line, style="bold yellow", markup=False, highlight=False)
    for name, path in res.artefacts.items():
        console.print(f"  {name:<12} {path}", markup=False, highlight=False)
    total = sum(res.seconds.values())
    stages = ", ".join(f"{k.split(' ', 1)[0]} {v:.0f}s" for k, v in res.seconds.items())
    console.print(f"  total {total:.0f} s: {stages}")
    console.print(
        "\nOn real C-NMC data, run each stage by hand:\n"
        "  edgeleuk train C-NMC/ --recipe paper --out runs/paper --pretrained seresnext50.pth\n"
        "  edgeleuk export --checkpoint runs/paper/best.pt --out model.onnx --data C-NMC/\n"
        "  edgeleuk export --checkpoint runs/paper/best.pt --out model-int8.xml --profile openvino-int8 "
        "--data C-NMC/\n"
        "  edgeleuk predict C-NMC/final/ --model model.onnx --out predictions.csv\n"
        "  edgeleuk bench --model model.onnx --checkpoint runs/paper/best.pt --data C-NMC/ "
        "--extra-model model-int8.xml\n"
        "  edgeleuk report predictions.csv --out report.html"
    )
