"""The benchmark's result: one row per backend x precision x model file, as Markdown and JSON."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk import __version__
from edgeleuk.bench.cases import Case, ModelFile
from edgeleuk.bench.machine import MachineInfo
from edgeleuk.bench.worker import Measurement
from edgeleuk.evaluation.parity import Parity, Thresholds
from edgeleuk.io.atomic import atomic_write_text

OK, PARITY_FAILED, UNAVAILABLE, ERROR = "ok", "parity failed", "unavailable", "error"
SYNTHETIC_LINE = (
    "**SYNTHETIC DATA**: the cells were drawn by edgeleuk's synthesiser; accuracy figures only show that "
    "the pipeline runs and say nothing about leukaemia diagnosis."
)


def best_throughput(m: Measurement | None) -> tuple[float, str] | None:
    """Best cells/s of a measurement over its plain batch sizes and throughput mode, and how."""
    if m is None or not m.throughput:
        return None
    b, best = max(m.throughput.items(), key=lambda kv: kv[1])
    how = f"batch {b}"
    if m.mode and m.mode["cells_per_s"] > best:
        best, how = m.mode["cells_per_s"], "throughput mode"
    return best, how


@dataclass
class Row:
    """One measured (or skipped) row.

    Attributes:
        case: What ran.
        status: ``ok``, ``parity failed``, ``unavailable`` or ``error``.
        reason: Why a row is unavailable or failed.
        size_bytes: Model file size (None for torch).
        measurement: What the worker measured (None if it never ran).
        parity: Comparison with PyTorch (None without a reference); the export gate's format.
        metrics: Weighted F1, sensitivity, specificity (None without labels).
        thresholds: The thresholds applied, from the file's export profile.
        failures: Thresholds breached.
        speedup_latency: PyTorch's p50 latency over this row's.
        speedup_throughput: This row's best cells/s over PyTorch's.
    """

    case: Case
    status: str
    reason: str | None = None
    size_bytes: int | None = None
    measurement: Measurement | None = None
    parity: Parity | None = None
    metrics: dict[str, float | None] | None = None
    thresholds: Thresholds | None = None
    failures: list[str] = field(default_factory=list)
    speedup_latency: float | None = None
    speedup_throughput: float | None = None

    @property
    def best_throughput(self) -> tuple[float, str] | None:
        """Best cells/s over the plain batch sizes and the engine's throughput mode, and how."""
        return best_throughput(self.measurement)

    def to_dict(self) -> dict[str, Any]:
        m = None
        if self.measurement is not None:
            m = {k: v for k, v in asdict(self.measurement).items() if k not in ("logits", "probs")}
        best = self.best_throughput
        return {
            "row": self.case.label, "case": self.case.to_dict(), "status": self.status, "reason": self.reason,
            "size_bytes": self.size_bytes, "measurement": m,
            "best_throughput": None if best is None else {"cells_per_s": best[0], "how": best[1]},
            "parity": None if self.parity is None else self.parity.to_dict(), "metrics": self.metrics,
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "failures": self.failures,
            "speedup_latency": self.speedup_latency, "speedup_throughput": self.speedup_throughput,
        }


def _f(value: float | None, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _mb(n: int | None) -> str:
    return _f(None if n is None else n / 1e6, ".1f")


def _speed_cells(row: Row) -> list[str]:
    m = row.measurement
    if m is None or m.status != OK:
        return ["-"] * 9
    lat = m.latency or {}
    best = row.best_throughput
    mode = "-" if not m.mode else f"{m.mode['cells_per_s']:.2f}"
    none = "1 (reference)" if row.case.backend == "torch" else "n/a"
    return [
        _f(m.load_s, ".2f"), _f(m.warmup_s, ".2f"),
        f"{lat['p50_ms']:.1f} / {lat['p90_ms']:.1f} / {lat['p99_ms']:.1f} ({lat['runs']})",
        "-" if best is None else f"{best[0]:.2f} ({best[1]})", mode,
        _mb(m.peak_rss) + ("" if m.isolated else "*"),
        "-" if not m.load_avg else f"{m.load_avg[0]:.1f} -> {m.load_avg[1]:.1f}",
        _f(row.speedup_latency, ".2f", none), _f(row.speedup_throughput, ".2f", none),
    ]


def _parity_cells(row: Row) -> list[str]:
    met = row.metrics or {}
    p = row.parity
    gate = "-" if row.thresholds is None else row.thresholds.describe()
    if p is None:
        agree = dprob = dlogit = "n/a"
    else:
        agree = f"{p.agreement:.2%} ({p.n - p.disagreements}/{p.n})"
        dprob, dlogit = f"{p.max_abs_prob_delta:.2e}", f"{p.max_abs_logit_delta:.2e}"
    # With labels, a missing value is undefined (one class only): n/a; without labels, "-".
    undefined = "n/a" if met else "-"
    figures = [_f(met.get(k), ".4f", undefined) for k in ("f1", "sensitivity", "specificity")]
    if row.case.backend == "torch" and row.status == OK:
        return ["reference", "-", "-", "-", *figures, "reference"]
    verdict = {OK: "pass" if p is not None else "not checked", PARITY_FAILED: "**FAIL**: " + "; ".join(row.failures)}
    return [gate, agree, dprob, dlogit, *figures, verdict.get(row.status, "-")]


def _engine_line(engine: dict[str, Any]) -> str:
    parts = [str(engine.get("engine", "?"))]
    if engine.get("providers"):
        parts.append("on " + ", ".join(engine["providers"]))
    if engine.get("precision"):
        parts.append(f"precision {engine['precision']}")
    details = {**engine.get("details", {}), **{k: v for k, v in engine.items() if k in ("path", "threads", "tta")}}
    parts += [f"{k} {v}" for k, v in details.items() if k != "wheels"]
    return ", ".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # "max|dlogit|" must not split a cell

    return [line(head), "|" + "|".join("---" for _ in head) + "|", *(line(r) for r in rows)]


@dataclass
class BenchReport:
    """Everything one ``edgeleuk bench`` run found.

    Attributes:
        machine: Header facts.
        options: The options used (JSON-able).
        cells: Where the cells came from (JSON-able, see ``Cells.to_dict``).
        models: The model files benchmarked.
        rows: The rows, torch first.
        notes: Caveats printed under the tables.
        explicit_backend: The backend asked for by name (None for ``all``).
        created: Unix time of the run.
    """

    machine: MachineInfo
    options: dict[str, Any]
    cells: dict[str, Any]
    models: list[ModelFile]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    explicit_backend: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def parity_checked(self) -> bool:
        return any(r.parity is not None for r in self.rows)

    def exit_code(self) -> int:
        """2: an explicitly requested backend could not run; 1: a gate breached or a row errored; else 0."""
        if any(r.status == UNAVAILABLE and r.case.backend == self.explicit_backend and not r.case.skip
               for r in self.rows):
            return 2
        if any(r.status in (PARITY_FAILED, ERROR) for r in self.rows):
            return 1
        return 0

    def problems(self) -> list[str]:
        """One line per unavailable, errored or failed row."""
        out = []
        for r in self.rows:
            if r.status in (UNAVAILABLE, ERROR):
                out.append(f"- {r.case.label} ({r.case.model.name if r.case.model else 'checkpoint'}): "
                           f"{r.status}: {r.reason}")
            elif r.status == PARITY_FAILED:
                out.append(f"- {r.case.label}: PARITY FAILED ({r.thresholds.describe()}): {'; '.join(r.failures)}")
        return out

    def to_markdown(self) -> str:
        lines = ["## edgeleuk bench", ""]
        if self.cells.get("synthetic"):
            lines += [SYNTHETIC_LINE, ""]
        lines += [f"Data: {self.cells['source']}", ""]
        lines += ["Machine:", *self.machine.header_lines(), ""]
        lines += ["Model files:", *[f"- {m.path} ({m.kind}, {m.precision}, {m.size_bytes / 1e6:.1f} MB)"
                                    for m in self.models], ""]
        names = [f"{r.case.label} ({r.case.model.name if r.case.model else 'checkpoint'})" for r in self.rows]
        status = [r.status if r.status != UNAVAILABLE else "unavailable (see below)" for r in self.rows]
        lines += ["### Speed (per cell; the rotation TTA runs inside every cell's inference)", ""]
        lines += _table(
            ["row", "status", "size MB", "load s", "warm-up s", "latency ms b=1 p50 / p90 / p99 (runs)",
             "best cells/s (how)", "thr-mode cells/s", "peak RSS MB", "load avg", "x torch latency",
             "x torch cells/s"],
            [[n, s, _mb(r.size_bytes), *_speed_cells(r)] for n, s, r in zip(names, status, self.rows, strict=True)])
        lines += ["", "### Parity with the PyTorch original and accuracy", ""]
        if not self.parity_checked:
            lines += [("**PARITY NOT CHECKED**: no PyTorch reference ran (see below), so agreement, "
                       "max|dprob| and the gates are n/a."), ""]
        lines += _table(
            ["row", "gate", "agreement with torch", "max abs dprob", "max abs dlogit", "F1 (weighted)",
             "sensitivity", "specificity", "verdict"],
            [[n, *_parity_cells(r)] for n, r in zip(names, self.rows, strict=True)])
        engines = [f"- {n}: {_engine_line(r.measurement.engine)}" for n, r in zip(names, self.rows, strict=True)
                   if r.measurement is not None and r.measurement.engine]
        if engines:
            lines += ["", "Engines (as read back after loading):", *engines]
        problems = self.problems()
        if problems:
            lines += ["", "Unavailable, failed or errored rows:", *problems]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        lines += ["", f"Result: exit code {self.exit_code()}"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "edgeleuk bench", "edgeleuk_version": __version__, "created": self.created,
            "synthetic": bool(self.cells.get("synthetic")), "machine": self.machine.to_dict(),
            "options": self.options, "cells": self.cells,
            "models": [{**{k: v for k, v in asdict(m).items() if k != "export"}, "path": str(m.path)}
                       for m in self.models],
            "rows": [r.to_dict() for r in self.rows], "parity_checked": self.parity_checked,
            "notes": self.notes, "exit_code": self.exit_code(),
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return Path(path)
