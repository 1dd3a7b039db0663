"""``edgeleuk predict --fields``: smear fields in, one row per white cell out.

The same run as :func:`edgeleuk.workflow.predict.predict` (inputs listed once, one atomic output
with its provenance sidecar, a summary and an exit code), except that each input file is a field:
:class:`edgeleuk.workflow.fieldrows.FieldRunner` cuts it into cells and classifies them, and the
output gets ``<out>.fields.json`` beside it (:class:`edgeleuk.workflow.fieldrows.FieldLedger`: per
field, the objects not classified, the scale and its source). A field that cannot be read, cannot
be segmented or holds no white cell is one error row. An engine fault stops the run (exit 1) and the
rows of the fields finished before it go to ``<out>.partial.csv``, as in ``predict``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgeleuk.core.errors import EngineFault, UsageError
from edgeleuk.io.files import synthetic_root
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.workflow.fieldrows import FieldLedger, FieldOptions, FieldRow, FieldRunner
from edgeleuk.workflow.flags import check_qc_mode
from edgeleuk.workflow.inputs import Inputs, index_inputs
from edgeleuk.workflow.outputs import DEFAULT_OUT
from edgeleuk.workflow.predict import (
    PredictOptions,
    PredictSummary,
    check_writable,
    keep_partial,
    load_classifier,
    output_path,
    write_output,
)
from edgeleuk.workflow.provenance import Provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldsSummary(PredictSummary):
    """A :class:`PredictSummary` whose rows are cells of fields, with the per-field record.

    Attributes:
        ledger: What each field held (also in ``<out>.fields.json``).
    """

    ledger: FieldLedger | None = None

    def _head(self) -> list[str]:
        lines = super()._head()
        n_fields = len(self.ledger.fields) if self.ledger else 0
        at = next(i for i, line in enumerate(lines) if line.startswith("classified "))
        lines[at] = lines[at].replace(f"classified {self.total} file(s)",
                                      f"made {self.total} row(s) from {n_fields} field(s)", 1)
        return lines + (self.ledger.describe() if self.ledger else [])


def _stop(out: Path, fault: EngineFault, rows: Sequence[FieldRow], ledger: FieldLedger, total: int,
          run: Provenance, positive: str) -> None:
    """Keep the rows of the fields finished before an engine fault, then stop with exit 1."""
    head = f"{fault}; stopped after {len(ledger.fields)} of {total} field(s)"
    if not rows:
        raise EngineFault(f"{head}; nothing was written. Check the engine (memory, device, model file) and run again")
    partial = keep_partial(out, rows, positive, run, head, fault)
    FieldLedger(partial, ledger.fields, ledger.rows).write()
    raise EngineFault(f"{head}: the {len(rows)} row(s) of those are in {partial} ({out} was not written). "
                      "Check the engine (memory, device, model file) and run predict again") from fault


def _run_fields(found: Inputs, runner: FieldRunner, out: Path, show: bool) -> tuple[
        list[FieldRow], FieldLedger, EngineFault | None]:
    """Every field's rows in input order, and the record for ``out``; on an engine fault, those before it."""
    ledger = FieldLedger(out)
    rows: list[FieldRow] = []
    columns = (TextColumn("fields"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
        task = bar.add_task("fields", total=len(found.records))
        for rec in found.records:
            rel = found.row_path(rec.path)
            truth = None if rec.label is None else runner.classifier.meta.label_name(bool(rec.label))
            try:
                outcome = runner.run(rec.path, rel, rec.subject, truth)
            except EngineFault as fault:
                return rows, ledger, fault
            ledger.add(rel, outcome)
            rows.extend(outcome.rows)
            bar.advance(task)
    return rows, ledger, None


def predict_fields(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Inputs,
    model: Path, out: Path = DEFAULT_OUT, options: PredictOptions | None = None,
    fields: FieldOptions | None = None, *, classifier: Classifier | None = None,
) -> FieldsSummary:
    """Find the white cells of every field the inputs name, classify them, and write one row per cell.

    Args:
        inputs: Field images (BMP, PNG, JPEG, TIFF of any size), folders and patterns, as for ``predict``.
        model: Exported ``.onnx`` or OpenVINO ``.xml``.
        out: Output file (csv or jsonl); ``<out>.provenance.json`` and ``<out>.fields.json`` go beside it.
        options: Backend, batch, threshold, format and the rest, as for ``predict``.
        fields: Scales, crop and overlay folders.
        classifier: Classifies instead of opening ``model`` here.

    Returns:
        The summary; ``exit_code(strict)`` as for ``predict`` (0 when any cell was classified).

    Raises:
        UsageError: As ``predict``; also ``--format cnmc``, no model scale, unwritable crop or overlay folder.
        EngineFault: The engine failed (exit 1); the finished fields' rows are in ``<out>.partial.csv``.
        OutputError: ``out``, a crop, an overlay or ``<out>.fields.json`` could not be written (exit 1).
    """
    options = options or PredictOptions()
    fields = fields or FieldOptions()
    check_qc_mode(options.qc)
    if options.fmt not in ("csv", "jsonl"):
        raise UsageError(f"--fields writes rows per cell as csv or jsonl, not {options.fmt!r} (the C-NMC "
                         "submission is one line per numbered cell image)")
    found = inputs if isinstance(inputs, Inputs) else index_inputs(inputs, options.recursive)
    out = output_path(out, options.fmt)
    check_writable(out)
    fields.check_folders()
    clf = classifier or load_classifier(model, options)
    run = Provenance.of(clf, model, options.tta)
    runner = FieldRunner(clf, fields, run.stamp, options.qc)
    log.info("finding white cells in %d field(s) from %s on %s", len(found.records), found.shown, clf.info.name)
    started = time.perf_counter()
    rows, ledger, fault = _run_fields(found, runner, out, options.progress)
    seconds = time.perf_counter() - started
    positive = clf.meta.label_name(True)
    if fault is not None:
        _stop(out, fault, rows, ledger, len(found.records), run, positive)
    _, record = write_output(out, options.fmt, rows, positive, run)
    ledger.write()
    return FieldsSummary(
        folder=found.shown, out=out, fmt=options.fmt, rows=tuple(rows), backend=clf.info, threshold=clf.threshold,
        threshold_source=clf.threshold_source, seconds=seconds, positive=positive,
        synthetic=synthetic_root(found.base) is not None, tta_note=clf.tta_note, provenance=run, record=record,
        qc=options.qc, trust_note=str(getattr(clf, "trust_note", "") or ""), ledger=ledger,
    )
