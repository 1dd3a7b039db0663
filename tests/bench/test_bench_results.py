"""benchmarks/results.py: the targets table and RESULTS.md text from a (made-up) bench report."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from edgeleuk.bench.cases import Case, ModelFile
from edgeleuk.bench.machine import MachineInfo
from edgeleuk.bench.report import OK, PARITY_FAILED, BenchReport, Row
from edgeleuk.bench.worker import Measurement
from edgeleuk.evaluation.parity import Parity, recorded_thresholds

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
results = pytest.importorskip("results")


def _row(backend: str, precision: str, speedup: float, status: str = OK, wrong: int = 0) -> Row:
    m = Measurement(status=OK, latency={"p50_ms": 10.0, "p90_ms": 11.0, "p99_ms": 12.0, "runs": 10, "mean_ms": 10.0},
                    throughput={1: 100.0}, peak_rss=300_000_000, isolated=True, load_s=1.0, warmup_s=0.5)
    parity = Parity(n=16, agreement=(16 - wrong) / 16, disagreements=wrong, max_abs_logit_delta=0.0,
                    mean_abs_logit_delta=0.0, max_abs_prob_delta=0.0)
    profile = {"fp32": "cpu-fp32", "int8": "openvino-int8"}.get(precision, "cpu-fp32")
    return Row(Case(backend, Path("m.onnx"), precision), status, measurement=m, parity=parity,
               thresholds=recorded_thresholds({"profile": profile}, "bf16" if precision == "bf16" else None),
               speedup_latency=speedup, speedup_throughput=speedup,
               failures=["agreement"] if status == PARITY_FAILED else [])


def _report(rows: list[Row], bf16: bool = True) -> BenchReport:
    machine = MachineInfo(cpu="Test CPU", logical_cores=2, usable_cores=2, bf16=bf16, int8_dot=True, gpus=(),
                          libraries={}, threads=2)
    return BenchReport(machine=machine, options={}, cells={"source": "x", "synthetic": True},
                       models=[ModelFile(Path("m.onnx"), "onnx", "fp32", 1, None, 0.5)], rows=rows)


MEMORY = {"cells": 8,
          "runs": [{"config": "fp32 onnx, cpu", "cells": 8, "peak_rss": 300_000_000, "wall_s": 3.0, "command": "x"},
                   {"config": "int8 IR, openvino", "cells": 8, "peak_rss": 400_000_000, "wall_s": 3.0,
                    "command": "y"}]}


def test_targets_table_verdicts():
    report = _report([
        _row("cpu", "fp32", 2.5),
        _row("openvino", "bf16", 4.0),
        _row("openvino", "int8", 9.0, status=PARITY_FAILED, wrong=2),
    ])
    lines = results.targets_table(report, MEMORY, {})
    cpu, bf16, int8, int8_bf16, exact, staged, mem = lines[2:]
    assert cpu.endswith("| yes |") and "2.50x cells/s" in cpu
    assert bf16.endswith("| no (speed) |")
    assert "no (gate failed)" in int8 and "gate FAILED" in int8
    assert "not measured (row missing)" in int8_bf16 and "not measured (row missing)" in staged
    assert "largest 400 MB (int8 IR, openvino, 8 cells)" in mem and mem.endswith("| yes |")


def test_staged_target_needs_its_agreement_and_reports_the_stage2_share():
    row = _row("openvino", "int8", 20.0, wrong=1)  # 15/16 agree: passes an INT8 gate of its own? not 99.5%
    row = dataclasses.replace(row, case=dataclasses.replace(row.case, tag="int8+bf16", tta="staged"))
    row.measurement.staged = {"cells": 16, "stage2": 4, "share": 0.25, "views": [0, 4], "margin": 1.0}
    (line,) = [x for x in results.targets_table(_report([row]), MEMORY, {}) if x.startswith("| Staged TTA")]
    assert "25.0% of cells went on to stage 2" in line and "no (gate failed)" in line
    row.parity = dataclasses.replace(row.parity, agreement=1.0, disagreements=0)
    (line,) = [x for x in results.targets_table(_report([row]), MEMORY, {}) if x.startswith("| Staged TTA")]
    assert line.endswith("| yes |")


AGREEMENT = {"cells": 150, "threshold": 0.5, "rows": [
    {"config": "torch eager fp32, full TTA (reference)", "seconds": 200.0, "f1": 0.93},
    {"config": results.STAGED_BF16, "seconds": 6.0, "f1": 0.93, "agreement": 0.98,
     "stage2": 9, "stage2_share": 0.06}]}


def test_staged_target_also_needs_the_agreement_on_all_labelled_cells():
    row = _row("openvino", "int8", 20.0)  # 16/16 on the bench's cells
    row = dataclasses.replace(row, case=dataclasses.replace(row.case, tag="int8+bf16", tta="staged"))
    row.measurement.staged = {"cells": 16, "stage2": 1, "share": 1 / 16, "views": [5], "margin": 0.3}
    ctx = {"agreement": AGREEMENT}
    (line,) = [x for x in results.targets_table(_report([row]), MEMORY, ctx) if x.startswith("| Staged TTA")]
    assert "98.00% on all 150 labelled cells" in line and "no (gate failed)" in line
    good = {"agreement": {**AGREEMENT, "rows": [{**r, "agreement": 1.0} for r in AGREEMENT["rows"]]}}
    (line,) = [x for x in results.targets_table(_report([row]), MEMORY, good) if x.startswith("| Staged TTA")]
    assert "100.00% on all 150 labelled cells" in line and line.endswith("| yes |")
    table = "\n".join(results.agreement_table(AGREEMENT))
    assert "| reference |" in table and "| 9 (6.0%) |" in table and "98.00%" in table


def test_memory_over_limit_names_the_precision():
    runs = [{**MEMORY["runs"][0], "peak_rss": 1_200_000_000}, MEMORY["runs"][1]]
    lines = results.targets_table(_report([_row("cpu", "fp32", 2.5)], bf16=False), {**MEMORY, "runs": runs}, {})
    assert lines[-1].endswith("| no (fp32 onnx, cpu) |")


def test_render_results_mentions_synthetic_random_weights_and_command():
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        work: Path = Path("/cache")
        arch: str = "legacy_seresnext50_32x4d"
        threads: int = 2
        gate_n: int = 32
        n: int = 16
        batch: int = 4
        budget_s: float = 5.0
        min_runs: int = 10

    ctx = {"agreement": AGREEMENT, "export_s": {}, "load_before": 1.0, "load_after": 2.0, "total_s": 600.0,
           "config": Cfg()}
    text = results.render_results(_report([_row("cpu", "fp32", 2.5)]), MEMORY, ctx)
    assert "SYNTHETIC" in text and "RANDOM" in text and "logistic probe" in text
    assert "python benchmarks/standard.py" in text
    assert "## Decision agreement on all 150 labelled prelim cells" in text
    assert "## Targets" in text and "#### Speed" in text and "legacy_seresnext50_32x4d" in text
