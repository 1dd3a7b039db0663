"""Prediction files: CSV, JSON Lines and the C-NMC challenge submission zip.

Every writer writes atomically (complete or absent) and one row per input file.
File names are stored exactly, as valid UTF-8, and CSV cells are safe to open in
a spreadsheet; :mod:`edgeleuk.io.csvcells` says how, and how to read them back.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import EdgeleukError, UsageError
from edgeleuk.io.atomic import atomic_open, atomic_path
from edgeleuk.io.csvcells import name_to_text, sheet_row
from edgeleuk.runtime.classifier import Prediction
from edgeleuk.workflow.flags import DEFAULT_QC, TRUST_COLUMNS, ood_cell, qc_cell, withheld
from edgeleuk.workflow.provenance import PROBABILITY_DECIMALS, PROVENANCE_COLUMNS, RunStamp, row_cells

#: The default output of ``predict`` and ``watch``, declared once (the CLI derives its defaults from it).
DEFAULT_OUT = Path("predictions.csv")

#: The call's own columns: the trust columns (:data:`~edgeleuk.workflow.flags.TRUST_COLUMNS`) follow the label.
CSV_COLUMNS = ("path", "status", "error", "prob_all", "label", *TRUST_COLUMNS, "subject", "adjustment")
TRUTH_COLUMN = "true_label"
_PROBABILITIES = ("prob_all", "threshold")  # written with PROBABILITY_DECIMALS decimals
CNMC_MEMBER = "isbi_valid.predict"  # the file name the C-NMC evaluation server expects in the zip
_NUMBERED = re.compile(r"\d+")


def columns(with_truth: bool) -> tuple[str, ...]:
    """A predictions file's columns: the call, ``true_label`` when known, then the provenance columns."""
    return CSV_COLUMNS + ((TRUTH_COLUMN,) if with_truth else ()) + PROVENANCE_COLUMNS


class SubmissionRefused(EdgeleukError):
    """A C-NMC submission was not written because some images have no prediction (exit code 1)."""


@dataclass(frozen=True)
class ResultRow:
    """One output row: a prediction plus what the data layout says about the file.

    Attributes:
        path: File path relative to the predicted folder (POSIX separators), exactly as
            listed (a name that is not UTF-8 holds surrogate escapes; written with
            :func:`edgeleuk.io.csvcells.name_to_text`).
        prediction: What the classifier returned.
        subject: Subject id (from the file name or a labels CSV), if known.
        true_label: Class name from the data layout (``"all"``/``"hem"``), if known.
        stamp: Which model, threshold, TTA mode and engine made the call
            (:mod:`edgeleuk.workflow.provenance`); None leaves those cells empty.
        time_utc: When the call was made (ISO 8601 UTC, seconds).
        qc_mode: The run's ``--qc`` mode (:mod:`edgeleuk.workflow.flags`): under ``off`` the ``qc``
            cell is empty (not checked).
    """

    path: str
    prediction: Prediction
    subject: str | None = None
    true_label: str | None = None
    stamp: RunStamp | None = None
    time_utc: str | None = None
    qc_mode: str = DEFAULT_QC

    @property
    def shown(self) -> str:
        """The path as written to files and shown to people: valid UTF-8, still exact."""
        return name_to_text(self.path)

    def header(self, with_truth: bool) -> tuple[str, ...]:
        """The columns of a file of such rows (a subclass with more columns, e.g. a field's cell, adds them)."""
        return columns(with_truth)

    def as_dict(self, with_truth: bool) -> dict[str, Any]:
        """Column name -> value, in :func:`columns` order (None for missing values)."""
        p = self.prediction
        row: dict[str, Any] = {
            "path": self.shown,
            "status": p.status,
            "error": p.error,
            "prob_all": None if p.prob_all is None else round(p.prob_all, PROBABILITY_DECIMALS),
            "label": p.label,
            "qc": qc_cell(p, self.qc_mode),
            "ood_score": ood_cell(p),
            "subject": self.subject,
            "adjustment": ";".join(p.adjustments) or None,
        }
        if with_truth:
            row[TRUTH_COLUMN] = self.true_label
        return row | row_cells(self.stamp, self.time_utc)

    def as_csv(self, with_truth: bool) -> dict[str, str]:
        """:meth:`as_dict` as text: empty for missing values, ``prob_all`` and ``threshold`` with 6 decimals.

        ``predict`` and ``watch`` both write through this, so their files read alike;
        each file writer then makes the cells spreadsheet-safe
        (:func:`edgeleuk.io.csvcells.sheet_row`).
        """
        return {
            k: "" if v is None else (f"{v:.{PROBABILITY_DECIMALS}f}" if k in _PROBABILITIES else str(v))
            for k, v in self.as_dict(with_truth).items()
        }


def _has_truth(rows: Sequence[ResultRow]) -> bool:
    return any(r.true_label is not None for r in rows)


def _header(rows: Sequence[ResultRow], truth: bool) -> tuple[str, ...]:
    """The columns the rows' kind declares (every row of one file is of one kind)."""
    return rows[0].header(truth) if rows else columns(truth)


def write_csv(out: Path, rows: Sequence[ResultRow], positive: str) -> None:
    """One CSV row per file; empty cells for missing values; spreadsheet-safe cells."""
    truth = _has_truth(rows)
    with atomic_open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_header(rows, truth))
        writer.writeheader()
        for row in rows:
            writer.writerow(sheet_row(row.as_csv(truth)))


def write_jsonl(out: Path, rows: Sequence[ResultRow], positive: str) -> None:
    """One JSON object per line; ``null`` for missing values."""
    truth = _has_truth(rows)
    with atomic_open(out, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.as_dict(truth)) + "\n")


def check_cnmc_names(paths: Sequence[str]) -> None:
    """Check, before any inference, that ``paths`` can make a C-NMC submission.

    The challenge scores line ``k`` of ``isbi_valid.predict`` against image ``k.bmp``,
    so the files must be exactly ``1.bmp .. N.bmp``: a gap would shift every later line.

    Raises:
        UsageError: A name is not ``<N>.<ext>``, or the numbers are not 1..N.
    """
    names = [Path(p).name for p in paths]
    odd = [n for n in names if not _NUMBERED.fullmatch(Path(n).stem)]
    if odd:
        raise UsageError(f"--format cnmc needs files named <N>.bmp; {len(odd)} are not, e.g. {odd[:3]}")
    numbers = sorted(int(Path(n).stem) for n in names)
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers, default=0) + 1)) - set(numbers))
        dupes = len(numbers) - len(set(numbers))
        raise UsageError(
            f"--format cnmc needs images numbered 1..N without gaps; found {len(numbers)} numbered "
            f"{numbers[0]}..{numbers[-1]}: missing {missing[:5]}, {dupes} duplicate(s)"
        )


def refused_csv_path(out: Path) -> Path:
    """Where a refused C-NMC run writes its per-file CSV: ``out`` with ``.csv`` for its suffix."""
    out = Path(out)
    table = out.with_suffix(".csv")
    return table if table != out else out.with_name(out.name + ".csv")


def write_cnmc(out: Path, rows: Sequence[ResultRow], positive: str) -> None:
    """The challenge submission: a zip holding ``isbi_valid.predict``, one 1 (ALL) or 0 (HEM) per line.

    Lines follow the numeric order of ``N.bmp``. If any image failed, the zip is
    not written: the challenge needs a line per image and a guessed line would be
    scored as if the model had made it. The per-file CSV is written instead
    (:func:`refused_csv_path`, e.g. ``submission.csv`` beside ``submission.zip``), so
    the failing images can be found without running inference again. A call withheld by
    ``--qc strict`` counts as missing too (``predict`` refuses ``--qc strict`` with this format
    before any inference; this is the writer's own guard); under ``--qc flag`` every line holds
    the model's call, flagged or not.

    Raises:
        UsageError: The names are not 1..N (see :func:`check_cnmc_names`).
        SubmissionRefused: Some images could not be classified (exit code 1).
    """
    check_cnmc_names([r.path for r in rows])
    failed = [r.shown for r in rows if not r.prediction.ok]
    if failed:
        table = refused_csv_path(out)
        write_csv(table, rows, positive)
        held = sum(withheld(r.prediction) for r in rows)
        raise SubmissionRefused(
            f"refusing to write the C-NMC submission: {len(failed)} image(s) could not be classified "
            + (f"or had their call withheld by --qc strict ({held}) " if held else "")
            + f"({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}); a submission needs a real "
            f"prediction on every line. Each file's error is in {table}: fix those files and run again."
        )
    ordered = sorted(rows, key=lambda r: int(Path(r.path).stem))
    text = "".join(f"{int(r.prediction.label == positive)}\n" for r in ordered)
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(CNMC_MEMBER, text)


Writer = Callable[[Path, Sequence[ResultRow], str], None]
WRITERS: dict[str, Writer] = {"csv": write_csv, "jsonl": write_jsonl, "cnmc": write_cnmc}
SUFFIXES = {"csv": ".csv", "jsonl": ".jsonl", "cnmc": ".zip"}
