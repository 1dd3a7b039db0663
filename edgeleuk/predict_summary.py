"""What ``edgeleuk predict`` tells the user after a run, and its exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeleuk.metrics import binary_metrics
from edgeleuk.outputs import ResultRow
from edgeleuk.runtime.base import BackendInfo

MAX_LISTED_ERRORS = 10


@dataclass(frozen=True)
class PredictSummary:
    """The outcome of one ``predict`` run.

    Attributes:
        folder: Folder that was classified.
        out: File written, or None when the submission was refused (its per-file CSV
            is then written beside it; ``refused`` names it).
        fmt: Output format (csv, jsonl, cnmc).
        rows: One row per input file, in output order.
        backend: What ran, read back from the engine.
        threshold: Decision threshold used.
        threshold_source: Where it came from (model metadata or "override").
        seconds: Wall time of decoding plus inference.
        positive: Class name of ALL (the positive class).
        synthetic: The data came from ``edgeleuk synth`` (figures are SYNTHETIC).
        refused: Why the C-NMC submission was not written (some images failed).
    """

    folder: Path
    out: Path | None
    fmt: str
    rows: tuple[ResultRow, ...]
    backend: BackendInfo
    threshold: float
    threshold_source: str
    seconds: float
    positive: str = "all"
    synthetic: bool = False
    refused: str | None = None

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> int:
        return sum(r.prediction.ok for r in self.rows)

    @property
    def failed(self) -> int:
        return self.total - self.ok

    @property
    def n_all(self) -> int:
        return sum(r.prediction.ok and r.prediction.label == self.positive for r in self.rows)

    def exit_code(self, strict: bool = False) -> int:
        """0 if any file was classified (and, with ``strict``, none failed); else 1.

        Also 1 when the output was refused (a C-NMC submission with failed images).
        """
        if self.refused or self.ok == 0:
            return 1
        return 1 if strict and self.failed else 0

    def subject_shares(self) -> dict[str, tuple[int, int]]:
        """Per subject (sorted): ``(classified cells, cells called ALL)``."""
        cells: Counter[str] = Counter()
        called: Counter[str] = Counter()
        for r in self.rows:
            if r.subject is not None and r.prediction.ok:
                cells[r.subject] += 1
                called[r.subject] += r.prediction.label == self.positive
        return {s: (cells[s], called[s]) for s in sorted(cells)}

    def metrics(self) -> dict[str, Any] | None:
        """Metrics against the true labels of the classified cells that have one; None without labels."""
        scored = [r for r in self.rows if r.prediction.ok and r.true_label is not None]
        if not scored:
            return None
        y_true = [int(r.true_label == self.positive) for r in scored]
        return binary_metrics(y_true, [r.prediction.prob_all for r in scored], threshold=self.threshold)

    def _head(self) -> list[str]:
        b = self.backend
        rate = self.total / self.seconds if self.seconds > 0 else float("inf")
        lines = ["SYNTHETIC data: these numbers only show that the pipeline works."] if self.synthetic else []
        lines += [
            (
                f"classified {self.total} file(s) from {self.folder} in {self.seconds:.1f} s ({rate:.1f}/s) "
                f"on {b.name} [{', '.join(b.providers)}, {b.precision}]"
            ),
            f"  ok {self.ok}, failed {self.failed}",
        ]
        if self.ok:
            n_all = self.n_all
            lines.append(
                f"  ALL {n_all} ({n_all / self.ok:.1%}), HEM {self.ok - n_all} ({1 - n_all / self.ok:.1%}) "
                f"at threshold {self.threshold:.4g} ({self.threshold_source})"
            )
        return lines

    def _errors(self) -> list[str]:
        bad = [r for r in self.rows if not r.prediction.ok]
        if not bad:
            return []
        lines = ["  failed files:"]
        lines += [f"    {r.shown}: {r.prediction.error}" for r in bad[:MAX_LISTED_ERRORS]]
        if len(bad) > MAX_LISTED_ERRORS:
            lines.append(f"    ... and {len(bad) - MAX_LISTED_ERRORS} more (see the error column)")
        return lines

    def _subjects(self) -> list[str]:
        shares = self.subject_shares()
        if not shares:
            return []
        lines = [
            "  per subject (share of cells called ALL):",
            f"    {'subject':<10}{'cells':>6}{'ALL':>6}{'share':>8}",
        ]
        lines += [f"    {s:<10}{n:>6}{k:>6}{k / n:>8.1%}" for s, (n, k) in shares.items()]
        return lines

    def _metrics(self) -> list[str]:
        m = self.metrics()
        if m is None:
            return []

        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        tag = " (SYNTHETIC)" if self.synthetic else ""
        return [
            f"  metrics against the true labels{tag}, {m['n']} cells ({m['n_all']} ALL, {m['n_hem']} HEM):",
            (
                f"    accuracy {f(m['accuracy'])}  sensitivity {f(m['sensitivity'])}  specificity "
                f"{f(m['specificity'])}  F1 (weighted) {f(m['f1'])}  AUC {f(m['auc'])}"
            ),
            f"    confusion [[tn, fp], [fn, tp]] = {m['confusion']}",
        ]

    def describe(self) -> str:
        """A human-readable report: counts, ALL/HEM split, failures, subjects, metrics, output."""
        lines = self._head() + self._errors() + self._subjects() + self._metrics()
        if self.refused:
            lines.append(f"SUBMISSION NOT WRITTEN: {self.refused}")
        else:
            lines.append(f"wrote {self.out} ({self.fmt}, {self.total} rows)")
        return "\n".join(lines)
