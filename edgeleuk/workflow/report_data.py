"""Read a predictions CSV (from ``predict`` or ``watch``) into what the report shows.

Per-subject figures follow the paper's Figure 3: cells per subject, the share
called ALL, the mean probability and, when true labels are known, the
per-subject accuracy (in C-NMC every subject's cells share one class).

Which model made each call: rows carry ``model`` (12 hex digits of the model file's
SHA-256), ``threshold``, ``tta``, ``engine`` and ``time_utc``, and the sidecar
``<csv>.provenance.json`` maps each model id to its file, calibration and gates
(:func:`read_provenance`). Files written before these existed still read: their
rows belong to an "unknown model".
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.core.meta import Calibration
from edgeleuk.io.csvcells import name_to_text, plain_row, text_to_name
from edgeleuk.io.files import SYNTHETIC_MARKER, natural_key, read_csv, synthetic_root
from edgeleuk.workflow.flags import FLAGGED, QC_OK
from edgeleuk.workflow.outputs import TRUTH_COLUMN

REQUIRED_COLUMNS = ("path", "status", "prob_all", "label")
UNKNOWN_SUBJECT = "(unknown)"
UNKNOWN_MODEL = "unknown model"
PROVENANCE_FORMAT = "edgeleuk.provenance/1"
PROVENANCE_SUFFIX = ".provenance.json"
MAX_PROVENANCE_BYTES = 16 * 1024 * 1024  # a sidecar lists models, not cells: far below this
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
        model: Short model id of the model that made the call; None in files written before rows said.
        threshold: The threshold the call was made at, when the row says.
        tta: ``full`` or ``staged``, when the row says.
        engine: Backend and precision (``cpu-fp32``), when the row says.
        time_utc: When the row was written, when the row says.
        withheld: ``--qc strict`` withheld the call (``status=flagged``): ``prob`` is kept, no label.
        qc: ``ok``, the reasons comma-separated, or "" (not checked, or a file written before rows said).
        ood_score: Distance from the calibration cells in feature space, when the row says.
        field: The smear field the cell was found in (``predict/watch --fields`` rows), else None.
        cell: The cell's index in its field; None on a field's error row and for plain rows.
        bbox: The cell's ``(x0, y0, x1, y1)`` in field pixels, when the row says.
    """

    path: str
    ok: bool
    error: str | None
    prob: float | None
    called_all: bool | None
    subject: str | None
    adjustment: str
    truth: int | None
    model: str | None = None
    threshold: float | None = None
    tta: str = ""
    engine: str = ""
    time_utc: str = ""
    withheld: bool = False
    qc: str = ""
    ood_score: float | None = None

    @property
    def flagged(self) -> bool:
        """A quality or distribution check flagged the cell (its call kept or withheld)."""
        return self.withheld or (self.ok and self.qc not in ("", QC_OK))

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the cell is flagged (empty when it is not)."""
        return tuple(r for r in self.qc.split(",") if r and r != QC_OK)

    @property
    def failed(self) -> bool:
        """The file could not be classified (not a withheld call)."""
        return not (self.ok or self.withheld)
    field: str | None = None
    cell: int | None = None
    bbox: tuple[int, int, int, int] | None = None

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
    flagged: int = 0

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


def _bbox(text: str | None) -> tuple[int, int, int, int] | None:
    """``x0 y0 x1 y1`` as the rows write it; None when absent or not a box."""
    try:
        x0, y0, x1, y1 = (int(v) for v in (text or "").split())
    except ValueError:
        return None
    return (x0, y0, x1, y1) if 0 <= x0 < x1 and 0 <= y0 < y1 else None


def _row(raw: dict[str, str], truth_col: str | None) -> Row:
    path = text_to_name(raw.get("path") or "")
    prob = _parse_float(raw.get("prob_all"))
    inside = is_inside(path)
    status = (raw.get("status") or "").strip().lower()
    ok = inside and status == "ok" and prob is not None
    withheld = inside and status == FLAGGED and prob is not None
    label = (raw.get("label") or "").strip().lower()
    return Row(
        path=path,
        ok=ok,
        error=None if ok or withheld else ((raw.get("error") or "not classified") if inside else OUTSIDE),
        prob=prob if ok or withheld else None,
        called_all=(label == "all") if ok else None,
        subject=(raw.get("subject") or "").strip() or None,
        adjustment=raw.get("adjustment") or "",
        truth=_parse_truth(raw.get(truth_col)) if truth_col else None,
        model=(raw.get("model") or "").strip() or None,
        threshold=_parse_float(raw.get("threshold")),
        tta=(raw.get("tta") or "").strip(),
        engine=(raw.get("engine") or "").strip(),
        time_utc=(raw.get("time_utc") or "").strip(),
        withheld=withheld,
        qc=(raw.get("qc") or "").strip() if ok or withheld else "",
        ood_score=_parse_float(raw.get("ood_score")) if ok or withheld else None,
        field=text_to_name(raw["field"]) if raw.get("field") else None,
        cell=int(raw["cell"]) if (raw.get("cell") or "").strip().isdigit() else None,
        bbox=_bbox(raw.get("bbox")),
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
                errors=sum(r.failed for r in groups[name]),
                called_all=sum(bool(r.called_all) for r in good),
                mean_prob=sum(r.prob for r in good) / len(good) if good else math.nan,
                truth=truth,
                correct=correct,
                flagged=sum(r.flagged for r in groups[name]),
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


# --- which model made the calls ----------------------------------------------------------------


def provenance_path(predictions: Path) -> Path:
    """The sidecar beside a predictions file: ``<file>.provenance.json``."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name + PROVENANCE_SUFFIX)


@dataclass(frozen=True)
class Provenance:
    """What the sidecar says, as far as it could be read.

    Attributes:
        models: Model id -> its entry (file, sha256, calibration, gates, ...).
        changes: Model or threshold changes recorded while the file grew (``--continue-with-new-model``).
        version: edgeleuk version that wrote the sidecar. host: Machine it ran on.
        problem: Why the sidecar could not be used, when it exists but is unreadable.
    """

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: tuple[dict[str, Any], ...] = ()
    version: str = ""
    host: str = ""
    problem: str = ""


def read_provenance(predictions: Path) -> Provenance:
    """The sidecar of ``predictions``; empty when there is none, with ``problem`` set when it is unusable.

    A damaged sidecar must not stop a report of the rows: the page says what was wrong instead.
    """
    path = provenance_path(predictions)
    if not path.is_file():
        return Provenance()
    try:
        if path.stat().st_size > MAX_PROVENANCE_BYTES:
            return Provenance(problem=f"{path.name} is larger than {MAX_PROVENANCE_BYTES} bytes; not read")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return Provenance(problem=f"{path.name} cannot be read: {exc}")
    if not isinstance(doc, dict) or doc.get("format") != PROVENANCE_FORMAT:
        return Provenance(problem=f"{path.name} is not an {PROVENANCE_FORMAT} file")
    models = {str(k): v for k, v in (doc.get("models") or {}).items() if isinstance(v, dict)} \
        if isinstance(doc.get("models"), dict) else {}
    changes = tuple(c for c in doc.get("changes") or () if isinstance(c, dict)) \
        if isinstance(doc.get("changes"), list) else ()
    return Provenance(models=models, changes=changes, version=str(doc.get("edgeleuk_version") or ""),
                      host=str(doc.get("host") or ""))


@dataclass(frozen=True)
class ModelSummary:
    """One model's line in the report header.

    Attributes:
        model_id: Short id, or None for rows that name no model (older files).
        file: Model file name, from the sidecar. sha256: Full SHA-256, from the sidecar.
        thresholds: Distinct thresholds its rows were called at (from the rows, else the sidecar).
        calibration: The calibration as one line (with intervals when recorded).
        profile: Export profile. gates: Parity-gate verdict, as the sidecar gives it.
        engines: Backends and precisions its rows name. tta: TTA modes its rows name.
        cells: Rows made by it. first_utc, last_utc: Time of its first and last row.
    """

    model_id: str | None
    file: str
    sha256: str
    thresholds: tuple[float, ...]
    calibration: str
    profile: str
    gates: str
    engines: tuple[str, ...]
    tta: tuple[str, ...]
    cells: int
    first_utc: str
    last_utc: str

    @property
    def name(self) -> str:
        """How the page names the model."""
        return UNKNOWN_MODEL if self.model_id is None else self.model_id


def _gates_text(gates: Any) -> str:
    if isinstance(gates, dict):
        if "passed" in gates:
            engines = [c.get("engine") for c in gates.get("checks") or [] if isinstance(c, dict)]
            return ("passed" if gates["passed"] else "FAILED") + (f" ({', '.join(map(str, engines))})"
                                                                  if engines else "")
        return ", ".join(f"{k}: {v}" for k, v in gates.items())
    return "not recorded" if gates in (None, "", [], {}) else str(gates)


def _profile_text(profile: Any) -> str:
    if isinstance(profile, dict):
        return str(profile.get("name") or "unnamed profile")
    return str(profile) if profile else "unknown"


def _calibration_text(entry: dict[str, Any]) -> str:
    record = entry.get("calibration")
    if isinstance(record, str):
        return record
    cal = Calibration.from_dict(record)
    return cal.summary() if cal is not None else ("not calibrated" if entry else "unknown")


def summarise_models(rows: list[Row], provenance: Provenance) -> list[ModelSummary]:
    """One summary per model the rows name, in order of first appearance (``unknown model`` for none)."""
    groups: dict[str | None, list[Row]] = {}
    named = [r for r in rows if r.ok or r.model is not None] or rows  # a failed row naming no model adds none
    for r in named:
        groups.setdefault(r.model, []).append(r)
    out = []
    for model_id, mine in groups.items():
        entry = provenance.models.get(model_id or "", {})
        thresholds = sorted({r.threshold for r in mine if r.threshold is not None})
        if not thresholds and isinstance(entry.get("threshold"), (int, float)):
            thresholds = [float(entry["threshold"])]
        times = sorted(r.time_utc for r in mine if r.time_utc)
        out.append(ModelSummary(
            model_id=model_id, file=str(entry.get("file") or "unknown"), sha256=str(entry.get("sha256") or ""),
            thresholds=tuple(thresholds), calibration=_calibration_text(entry),
            profile=_profile_text(entry.get("export_profile")), gates=_gates_text(entry.get("gates")),
            engines=tuple(sorted({r.engine for r in mine if r.engine})),
            tta=tuple(sorted({r.tta for r in mine if r.tta})), cells=len(mine),
            first_utc=times[0] if times else "", last_utc=times[-1] if times else "",
        ))
    return out
