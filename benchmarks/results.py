"""Render benchmarks/RESULTS.md from a bench report: targets, predict memory, the full table, notes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeleuk.bench.report import OK, BenchReport, Row

MEMORY_LIMIT = 1e9  # bytes: "predict stays under 1 GB peak RSS at its default batch, every precision"
#: The all-cells agreement row (standard.AGREEMENT_CONFIGS) the staged target is checked on.
STAGED_BF16 = "int8 IR, float layers bf16, staged TTA"


@dataclass(frozen=True)
class Target:
    """A performance target of the standard benchmark, as a ratio over torch eager fp32 in the same run.

    Attributes:
        name: What is measured.
        row: Bench row label (``cpu fp32``, ``openvino bf16``, ``openvino int8``).
        min_speedup: Required cells/s ratio over torch eager fp32.
        gate: The accuracy condition, in words (the row's parity gate).
        needs_bf16: Only meaningful on CPUs with native bf16.
        min_agreement: Least decision agreement with the torch fp32 full-TTA row, beyond the row's gate.
        all_cells: Row of the all-cells agreement table that must meet ``min_agreement`` too.
    """

    name: str
    row: str
    min_speedup: float
    gate: str
    needs_bf16: bool = False
    min_agreement: float | None = None
    all_cells: str | None = None


TARGETS = (
    Target("ONNX Runtime CPU fp32", "cpu fp32", 2.2, "100% agreement, max abs dlogit <= 1e-4"),
    Target("OpenVINO bf16", "openvino bf16", 5.0, ">= 99.5% agreement", needs_bf16=True),
    Target("OpenVINO INT8 IR (float layers in f32)", "openvino int8", 8.0,
           "INT8 gate (>= 99% agreement, F1 drop <= 0.5 point)"),
    Target("OpenVINO INT8 IR (float layers in bf16)", "openvino int8+bf16", 8.0,
           "INT8 gate (>= 99% agreement, F1 drop <= 0.5 point)", needs_bf16=True),
    Target("Exact 8-rotation TTA, OpenVINO INT8 IR (float layers in bf16)", "openvino int8+bf16", 14.0,
           "INT8 gate", needs_bf16=True),
    Target("Staged TTA, OpenVINO INT8 IR (float layers in bf16)", "openvino int8+bf16 staged", 18.0,
           ">= 99.5% decision agreement with torch fp32 full TTA, INT8 gate", needs_bf16=True,
           min_agreement=0.995, all_cells=STAGED_BF16),
)


def _row(report: BenchReport, label: str) -> Row | None:
    return next((r for r in report.rows if r.case.label == label), None)


def agreement_table(agreement: dict[str, Any]) -> list[str]:
    """Decisions on every labelled prelim cell against torch fp32 full TTA (``standard.all_cells_agreement``)."""
    lines = ["| rows | agreement with torch fp32 full TTA | weighted F1 | went on to stage 2 | seconds |",
             "|---|---|---|---|---|"]
    for r in agreement["rows"]:
        agree = f"{r['agreement']:.2%}" if "agreement" in r else "reference"
        stage2 = f"{r['stage2']} ({r['stage2_share']:.1%})" if "stage2" in r else "-"
        lines.append(f"| {r['config']} | {agree} | {r['f1']:.4f} | {stage2} | {r['seconds']:.1f} |")
    return lines


def _all_cells(ctx: dict[str, Any], config: str) -> dict[str, Any] | None:
    rows = (ctx.get("agreement") or {}).get("rows", [])
    return next((r for r in rows if r["config"] == config), None)


def _target_line(report: BenchReport, t: Target, ctx: dict[str, Any]) -> str:
    row = _row(report, t.row)
    if row is None or row.measurement is None or row.status not in (OK, "parity failed"):
        why = "row missing" if row is None else f"{row.status}: {row.reason}"
        return f"| {t.name} >= {t.min_speedup:g}x, {t.gate} | not measured ({why}) | no |"
    thr, lat = row.speedup_throughput, row.speedup_latency
    agree = "n/a" if row.parity is None else f"{row.parity.agreement:.2%}"
    gate_ok = row.status == OK and row.parity is not None
    every = _all_cells(ctx, t.all_cells) if t.all_cells else None
    if every is not None:
        agree += f" on the bench's cells, {every['agreement']:.2%} on all {ctx['agreement']['cells']} labelled cells"
    if gate_ok and t.min_agreement is not None:
        gate_ok = row.parity.agreement >= t.min_agreement and (every is None or every["agreement"] >= t.min_agreement)
    met = gate_ok and thr is not None and thr >= t.min_speedup
    verdict = "yes" if met else ("no (gate failed)" if not gate_ok else "no (speed)")
    staged = getattr(row.measurement, "staged", None)
    if staged:
        agree += f", {staged['share']:.1%} of cells went on to stage 2"
    if t.needs_bf16 and not report.machine.bf16:
        verdict += " (CPU lacks bf16)"
    return (f"| {t.name} >= {t.min_speedup:g}x, {t.gate} | {thr:.2f}x cells/s ({lat:.2f}x batch-1 latency), "
            f"agreement {agree}, gate {'passed' if gate_ok else 'FAILED'} | {verdict} |")


def targets_table(report: BenchReport, memory: dict[str, Any], ctx: dict[str, Any]) -> list[str]:
    """The benchmark's targets with the measured figures and a verdict each."""
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [_target_line(report, t, ctx) for t in TARGETS]
    worst = max(memory["runs"], key=lambda r: r["peak_rss"])
    verdict = "yes" if worst["peak_rss"] < MEMORY_LIMIT else f"no ({worst['config']})"
    lines.append(f"| predict peak memory < 1 GB at the default batch, every precision | largest "
                 f"{worst['peak_rss'] / 1e6:.0f} MB ({worst['config']}, {worst['cells']} cells) | {verdict} |")
    return lines


def _notes(report: BenchReport, ctx: dict[str, Any]) -> list[str]:
    cfg = ctx["config"]
    exports = ", ".join(f"{k} {v / 60:.1f} min" for k, v in ctx["export_s"].items()) or "reused from the cache"
    return [
        ("Weights: the trunk is RANDOM (seed 0), no pretrained or trained SE-ResNeXt50 weights being reachable "
         "offline; the final linear layer is a logistic probe fitted on the random trunk's pooled features of "
         "SYNTHETIC training cells (benchmarks/fitted_head.py), so the logits spread over several units like a "
         "trained model's and agreement, F1 deltas and the staged stop share are informative. It is not a "
         "trained model: accuracy figures say nothing about real cells. Speed does not depend on the weights."),
        "Cells are SYNTHETIC (`edgeleuk synth`), labelled prelim split; they only exercise the pipeline.",
        (f"Load average (1 min) {ctx['load_before']:.2f} before and {ctx['load_after']:.2f} after the bench "
         f"(the bench's own {cfg.threads} busy threads count about {cfg.threads}). This machine is shared: other "
         "processes can take the cores while a row runs, rows run one after another, and engines suffer unequally "
         "from it, so the ratios move by 10-20% between runs; see the per-row load column."),
        ("Profiles behind these figures (per-op times and kernels of every engine) and an interleaved cross-check "
         "(engines alternating in one process, so load drift hits all alike): benchmarks/profiles/PROFILE.md, "
         "made by `python benchmarks/profile_full.py`."),
        (f"Every engine got {cfg.threads} threads (torch.set_num_threads, ORT intra-op threads, OpenVINO "
         "INFERENCE_NUM_THREADS); each row ran in its own process."),
        (f"The export parity gates ran on {cfg.gate_n} cells (the INT8 profile asks for 200; eager torch on "
         f"the full net costs seconds per cell on 2 cores). Export time this run: {exports}."),
        (f"n = {cfg.n} cells per row, batch sizes up to {cfg.batch}, {cfg.budget_s:g} s per timing loop, "
         f"at least {cfg.min_runs} latency runs (fewer cells than a real evaluation: eager torch is slow)."),
        "GPU rows (cuda fp32/fp16) are listed as unavailable: this machine has no GPU.",
        *_stage_notes(ctx),
    ] + (["--quick: the timing loops were shortened; do not quote these numbers."] if ctx.get("quick") else [])


def _stage_notes(ctx: dict[str, Any]) -> list[str]:
    stage = ctx.get("stage")
    if not stage:
        return []
    return [(f"Staged TTA rows: stage 1 computes rotations {stage['views']} of {stage['rotations']}; a cell stops when "
             f"its stage-1 mean logit is more than {stage['margin']:.3g} from the threshold's logit, else it computes "
             "the other rotations and gets exactly the full 8-rotation logit. The choice was made by `edgeleuk "
             f"calibrate --keep-threshold` on {stage['cells']} labelled cells of a second SYNTHETIC set "
             f"({stage['data']}): there {stage['stop_share']:.1%} stopped, agreeing with full TTA at "
             f"{stage['agreement']:.2%} (bound {stage['target_agreement']:.1%}). The stage-2 share in the table was "
             "measured on the benchmarked cells. Synthetic cells are not real cells: on real C-NMC data the stop "
             "share will differ (more borderline cells, more of them go on to stage 2).")]


def render_results(report: BenchReport, memory: dict[str, Any], ctx: dict[str, Any]) -> str:
    """The whole RESULTS.md text."""
    md = report.to_markdown().replace("## edgeleuk bench", "## Full bench report", 1)
    md = md.replace("\n### ", "\n#### ")
    lines = [
        f"# Standard benchmark: the paper's network ({ctx['config'].arch}) on CPU engines",
        "",
        ("> SYNTHETIC data; RANDOM trunk weights with a linear head fitted on synthetic cells (see Notes): the "
         "speed and parity figures are real, the accuracy figures say nothing about real cells. Generated by "
         "`benchmarks/standard.py`; do not edit by hand."),
        "",
        (f"Regenerate: `python benchmarks/standard.py` (or `make bench`); this run took "
         f"{ctx['total_s'] / 60:.1f} min including exports (cached in `{ctx['config'].work}`)."),
        "",
        ("## Targets (2-core x86 CPU; ratios over torch eager fp32 in the same run; 450 -> 300 crop, "
         "8-rotation TTA inside every cell)"),
        "",
        *targets_table(report, memory, ctx),
        "",
        ("The speed ratio is best cells/s (any batch size or throughput mode) over torch's best cells/s; "
         "the batch-1 latency ratio is shown beside it."),
        "",
        f"## Decision agreement on all {ctx['agreement']['cells']} labelled prelim cells",
        "",
        ("Each configuration classified every labelled cell of the SYNTHETIC prelim split once (the bench "
         "table below uses only its first cells, eager torch being slow); agreement is of the ALL/HEM decision "
         f"at the model's threshold ({ctx['agreement']['threshold']:.4g}) with torch eager fp32 and full TTA:"),
        "",
        *agreement_table(ctx["agreement"]),
        "",
        "## Predict peak memory per precision",
        "",
        ("`edgeleuk predict` at its default batch (chosen from the model's precision), each run in its own "
         "process; peak resident memory of the whole process (its VmHWM high-water mark: interpreter, engine, "
         "model, decoding and activations):"),
        "",
        "| precision and engine | cells | peak RSS MB | wall s (incl. start-up and model compile) | command |",
        "|---|---|---|---|---|",
        *[f"| {r['config']} | {r['cells']} | {r['peak_rss'] / 1e6:.0f} | {r['wall_s']:.1f} | `{r['command']}` |"
          for r in memory["runs"]],
        "",
        ("Each cell is 8 rotated 300x300 views, so a batch of B cells holds 8B feature maps per layer: the "
         "peak grows with the batch, not with the number of files (the fp32 row on half the cells shows it), "
         "and on a 2-core CPU larger batches do not raise throughput (see the bench table)."),
        "",
        md,
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in _notes(report, ctx)],
        "",
    ]
    return "\n".join(lines)
