"""Read a predictions CSV (from ``predict`` or ``watch``) into what the report shows.

Per-subject figures follow the paper's Figure 3: cells per subject, the share
called ALL, the mean probability and, when true labels are known, the
per-subject accuracy (in C-NMC every subject's cells share one class).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.io.csvcells import name_to_text, plain_row, text_to_name
from edgeleuk.io.files import SYNTHETIC_MARKER, natural_key, read_csv, synthetic_root
from edgeleuk.workflow.outputs import TRUTH_COLUMN

REQUIRED_COLUMNS = ("path", "status", "prob_all", "label")
UNKNOWN_SUBJECT = "(unknown)"
_TRUE_NAMES = {"all": 1, "1": 1, "hem": 0, "0": 0}
OUTSIDE = (
    "refused: the path leaves the images folder (absolute, or with '..'); the report shows only "
    "images below the classified folder"
)


@dataclass(frozen=True)
class Row:
    """One line of the predictions file.

    Attributes:
        path: Image path as predict/watch listed it, exact (read back with
            :func:`edgeleuk.io.csvcells.text_to_name`; may hold surrogate escapes).
        ok: The image was classified.
        error: Why not, when it was not.
        prob: Probability of ALL.
        called_all: The model's call at its threshold.
        subject: Subject id, None when unknown.
        adjustment: What decoding changed, as written.
        truth: True class (1 = ALL, 0 = HEM) when known.
    """

    path: str
    ok: bool
    error: str | None
    prob: float | None
    called_all: bool | None
    subject: str | None
    adjustment: str
    truth: int | None

    @property
    def shown(self) -> str:
        """The path as text for people (valid UTF-8, as in the CSV)."""
        return name_to_text(self.path)


def is_inside(path: str) -> bool:
    """Whether a CSV's path stays below the folder it is relative to (not absolute, no ``..``).

    ``predict`` and ``watch`` only write such paths; another one means the CSV was
    edited or made elsewhere, and the report must not read (and inline) a file
    outside the images folder because a CSV names it.
    """
    p = Path(path)
    return bool(path) and not p.is_absolute() and not p.anchor and ".." not in p.parts


@dataclass(frozen=True)
class SubjectSummary:
    """One subject's line in the report table (like the paper's Figure 3)."""

    subject: str
    cells: int
    errors: int
    called_all: int
    mean_prob: float
    truth: int | None
    correct: int | None

    @property
    def share_all(self) -> float:
        return self.called_all / self.cells if self.cells else math.nan

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None or not self.cells else self.correct / self.cells


def _parse_float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _parse_truth(text: str | None) -> int | None:
    return _TRUE_NAMES.get((text or "").strip().lower())


def _row(raw: dict[str, str], truth_col: str | None) -> Row:
    path = text_to_name(raw.get("path") or "")
    prob = _parse_float(raw.get("prob_all"))
    inside = is_inside(path)
    ok = inside and (raw.get("status") or "").strip().lower() == "ok" and prob is not None
    label = (raw.get("label") or "").strip().lower()
    return Row(
        path=path,
        ok=ok,
        error=None if ok else ((raw.get("error") or "not classified") if inside else OUTSIDE),
        prob=prob if ok else None,
        called_all=(label == "all") if ok else None,
        subject=(raw.get("subject") or "").strip() or None,
        adjustment=raw.get("adjustment") or "",
        truth=_parse_truth(raw.get(truth_col)) if truth_col else None,
    )


def load_rows(path: Path) -> list[Row]:
    """Parse a predictions CSV.

    Raises:
        UsageError: The file is missing or lacks the prediction columns.
        DataError: The file cannot be read or holds no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"predictions file not found: {path} (write one with `edgeleuk predict` or `watch`)")
    columns, raw = read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UsageError(
            f"{path} is not a predictions CSV: missing column(s) {missing} (has {columns}); "
            "use the CSV written by `edgeleuk predict --format csv` or `edgeleuk watch`"
        )
    truth_col = TRUTH_COLUMN if TRUTH_COLUMN in columns else None
    rows = [_row(plain_row(r), truth_col) for r in raw]
    if not rows:
        raise DataError(f"{path} holds no predictions yet")
    return rows


def _subject_key(name: str) -> tuple:
    """ALL patients (numeric ids) first, then healthy ``H<n>``, numbers by value, unknown last."""
    return name == UNKNOWN_SUBJECT, natural_key(name)


def summarise_subjects(rows: list[Row]) -> list[SubjectSummary]:
    """Per-subject summaries, sorted by subject id."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.subject or UNKNOWN_SUBJECT].append(r)
    out = []
    for name in sorted(groups, key=_subject_key):
        good = [r for r in groups[name] if r.ok]
        truths = {r.truth for r in good}
        truth = truths.pop() if len(truths) == 1 else None
        known = [r for r in good if r.truth is not None]
        correct = (
            sum(r.called_all == bool(r.truth) for r in known) if len(known) == len(good) and good else None
        )
        out.append(
            SubjectSummary(
                subject=name,
                cells=len(good),
                errors=len(groups[name]) - len(good),
                called_all=sum(bool(r.called_all) for r in good),
                mean_prob=sum(r.prob for r in good) / len(good) if good else math.nan,
                truth=truth,
                correct=correct,
            )
        )
    return out


@dataclass(frozen=True)
class ThresholdEstimate:
    """The decision threshold behind the calls, as far as the file tells: ``low < t <= high``.

    Attributes:
        low: Highest probability called HEM (the threshold lies above it).
        high: Lowest probability called ALL (the threshold lies at or below it).
        given: True when the caller stated the threshold (then ``low == high``).
    """

    low: float | None
    high: float | None
    given: bool = False

    @property
    def centre(self) -> float | None:
        """A single value to sort cells by distance from, when one is known."""
        if self.low is None or self.high is None:
            return self.high if self.low is None else self.low
        return (self.low + self.high) / 2

    def describe(self) -> str:
        """The threshold as the report states it, with how it was known."""
        if self.given:
            return f"{self.high:.4f}"
        if self.low is None and self.high is None:
            return "unknown (no classified cells)"
        if self.low is None:
            return f"at most {self.high:.3f} (every cell was called ALL)"
        if self.high is None:
            return f"above {self.low:.3f} (every cell was called HEM)"
        return f"between {self.low:.3f} and {self.high:.3f} (read from the calls)"


def estimate_threshold(rows: list[Row], given: float | None = None) -> ThresholdEstimate:
    """The threshold behind the calls: ``given`` if set, else bracketed by the calls themselves.

    Every cell with ``prob >= threshold`` was called ALL, so the threshold lies
    above the highest HEM call and at or below the lowest ALL call. (The CSV does
    not store the threshold itself.)
    """
    if given is not None:
        return ThresholdEstimate(given, given, given=True)
    called_all = [r.prob for r in rows if r.ok and r.called_all]
    called_hem = [r.prob for r in rows if r.ok and not r.called_all]
    return ThresholdEstimate(max(called_hem, default=None), min(called_all, default=None))


def find_synthetic_root(
    paths: list[Path], near: Path | None = None
) -> Path | None:
    """Where ``edgeleuk synth``'s marker file sits, if the data look synthetic.

    Args:
        paths: Image files; every folder above them is checked.
        near: Also check this folder, the folders above it and those up to two
            levels below it (the CSV's folder, for when the images were not found).
    """
    # Cells share a few folders: check each once, not once per image.
    starts = {Path(p).resolve().parent for p in paths}
    if near is not None:
        starts.add(Path(near).resolve())
    for start in sorted(starts):
        found = synthetic_root(start, levels=None)
        if found is not None:
            return found
    if near is not None:
        for pattern in (f"*/{SYNTHETIC_MARKER}", f"*/*/{SYNTHETIC_MARKER}"):
            hit = next(iter(sorted(Path(near).glob(pattern))), None)
            if hit is not None:
                return hit.parent
    return None
