"""benchmarks/results.py: the targets table and RESULTS.md text from a (made-up) bench report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeleuk.bench.cases import Case, ModelFile
from edgeleuk.bench.machine import MachineInfo
from edgeleuk.bench.report import OK, PARITY_FAILED, BenchReport, Row
from edgeleuk.bench.worker import Measurement
from edgeleuk.parity import Parity, recorded_thresholds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
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


MEMORY = {"command": "edgeleuk predict x", "cells": 8, "default_batch": 8,
          "runs": [{"batch": 1, "peak_rss": 300_000_000, "wall_s": 3.0},
                   {"batch": 8, "peak_rss": 400_000_000, "wall_s": 3.0}]}


def test_targets_table_verdicts():
    report = _report([
        _row("cpu", "fp32", 2.5),
        _row("openvino", "bf16", 4.0),
        _row("openvino", "int8", 9.0, status=PARITY_FAILED, wrong=2),
    ])
    lines = results.targets_table(report, MEMORY)
    cpu, bf16, int8, int8_bf16, mem = lines[2:]
    assert cpu.endswith("| yes |") and "2.50x cells/s" in cpu
    assert bf16.endswith("| no (speed) |")
    assert "no (gate failed)" in int8 and "gate FAILED" in int8
    assert "not measured (row missing)" in int8_bf16
    assert "400 MB at --batch 8" in mem and mem.endswith("| yes |")


def test_memory_over_limit_at_default_batch_says_which_batches_fit():
    runs = [{"batch": 1, "peak_rss": 400_000_000, "wall_s": 1.0},
            {"batch": 8, "peak_rss": 1_200_000_000, "wall_s": 1.0}]
    lines = results.targets_table(_report([_row("cpu", "fp32", 2.5)], bf16=False), {**MEMORY, "runs": runs})
    assert lines[-1].endswith("| no at the default --batch 8; yes at --batch 1 |")


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

    ctx = {"export_s": {}, "load_before": 1.0, "load_after": 2.0, "total_s": 600.0, "config": Cfg()}
    text = results.render_results(_report([_row("cpu", "fp32", 2.5)]), MEMORY, ctx)
    assert "SYNTHETIC" in text and "RANDOM" in text
    assert "python benchmarks/standard.py" in text
    assert "## Targets" in text and "#### Speed" in text and "legacy_seresnext50_32x4d" in text
