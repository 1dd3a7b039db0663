"""Provenance of every prediction row, and the record beside each output that explains it.

Every row ``predict`` and ``watch`` write says which model made the call (:func:`model_id`: the
first 12 hex digits of the model file's SHA-256), at which threshold, with which TTA mode, on
which engine (:func:`engine_name`) and when (:func:`utc_now`). The columns are declared once,
here (:data:`PROVENANCE_COLUMNS`); :mod:`edgeleuk.workflow.outputs` appends them to its own.

Beside each output, ``<out>.provenance.json`` (:func:`sidecar_path`, written atomically) maps
every model id seen in the file to its full SHA-256, file name and a summary of its metadata,
and lists every change of model or threshold in the file. :func:`continue_output` is the one
place that decides whether a run may add rows to an existing output: rows of another model or
threshold are refused (exit 2) unless the user asks to go on, and then the change is recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeleuk import __version__
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.runtime.base import BackendInfo
from edgeleuk.runtime.wire import engine_label, model_id, model_sha256

log = logging.getLogger(__name__)

#: The columns every predictions row ends with, in this order.
PROVENANCE_COLUMNS = ("model", "threshold", "tta", "engine", "time_utc")
#: Columns whose values are probabilities: written with 6 decimals in CSV and rounded so in JSON.
PROBABILITY_DECIMALS = 6
SIDECAR_FORMAT = "edgeleuk.provenance/1"
SIDECAR_SUFFIX = ".provenance.json"
CONTINUE_FLAG = "--continue-with-new-model"


def utc_now() -> str:
    """The current time as ISO 8601 UTC to the second, e.g. ``2026-12-02T07:05:07Z``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def threshold_text(threshold: float) -> str:
    """A threshold as rows write it (6 decimals, like ``prob_all``); thresholds that read alike are one."""
    return f"{threshold:.{PROBABILITY_DECIMALS}f}"


def engine_name(info: BackendInfo) -> str:
    """Backend and precision actually used, e.g. ``cpu-fp32`` or ``openvino-bf16``.

    A backend whose engine runs in a server (its info names a ``server``) reports the
    server's engine when the server states it: ``remote:openvino-bf16``, else ``remote``.
    """
    if "server" in info.details:
        server_engine = info.details.get("server_engine")
        return f"{info.name}:{server_engine}" if server_engine else info.name
    return engine_label(info.name, info.precision)


@dataclass(frozen=True)
class RunStamp:
    """What every row of one run carries: model id, threshold, TTA mode and engine.

    Attributes:
        model: Short model id (:func:`model_id`).
        threshold: Decision threshold used.
        tta: ``full`` or ``staged``.
        engine: :func:`engine_name` of the backend that ran.
    """

    model: str
    threshold: float
    tta: str
    engine: str

    def same_call(self, other_model: str, other_threshold: float) -> bool:
        """Whether rows of ``other_model`` at ``other_threshold`` were called as this run calls them."""
        return other_model == self.model and threshold_text(other_threshold) == threshold_text(self.threshold)


def row_cells(stamp: RunStamp | None, time_utc: str | None) -> dict[str, Any]:
    """The provenance columns of one row, in :data:`PROVENANCE_COLUMNS` order (None when unknown)."""
    if stamp is None:
        return dict.fromkeys(PROVENANCE_COLUMNS)
    threshold = round(stamp.threshold, PROBABILITY_DECIMALS)
    return dict(zip(PROVENANCE_COLUMNS, (stamp.model, threshold, stamp.tta, stamp.engine, time_utc), strict=True))


def _summary(meta: ModelMeta, export_info: Mapping[str, Any]) -> dict[str, Any]:
    """What the sidecar says of a model, from its metadata; unknown fields are None."""
    profile = export_info.get("profile")  # the profile record (its name is the summary), or a name
    if not isinstance(profile, (dict, str)):
        profile = None
    gate = export_info.get("gate")
    gates = None
    if isinstance(gate, dict):
        checks = gate.get("checks") if isinstance(gate.get("checks"), list) else []
        gates = {
            "passed": gate.get("passed"), "data": gate.get("data"), "n": gate.get("n"),
            "engines": {c.get("engine"): c.get("status") for c in checks if isinstance(c, dict)},
        }
    return {
        "class_names": [meta.class_names[0], meta.class_names[1]],
        "export_profile": profile.get("name") if isinstance(profile, dict) else profile,
        "gates": gates,
        "calibration": meta.extra.get("calibration"),
    }


@dataclass(frozen=True)
class Provenance:
    """One run's identity: the stamp for its rows and the sidecar entry for its model.

    Attributes:
        stamp: What each row carries.
        sha256: Full SHA-256 of the model (of ``.xml`` and ``.bin`` for an IR).
        file: The model's file name.
        summary: Class names, export profile, gates and calibration from its metadata.
    """

    stamp: RunStamp
    sha256: str
    file: str
    summary: Mapping[str, Any]

    @classmethod
    def of(cls, classifier: Any, model: Path | None, tta: str) -> Provenance:
        """The provenance of a run of ``classifier`` on the model file ``model``.

        ``classifier`` is anything with a loaded model's ``meta``, ``export_info``, ``threshold``
        and ``info``. The file identified is the one it opened (its backend's ``model_path``, a
        cluster driver's ``model``), else ``model``.

        Raises:
            UsageError: No model file is known, or it cannot be read to compute its id (exit 2).
        """
        path = _model_path(classifier, model)
        try:
            sha = model_sha256(path)
        except OSError as exc:
            raise UsageError(
                f"cannot read {path} to record which model makes the calls: {exc.strerror or exc} "
                "(give --model an exported .onnx or .xml that stays in place while it runs)"
            ) from exc
        stamp = RunStamp(model_id(sha), float(classifier.threshold), tta, engine_name(classifier.info))
        return cls(stamp, sha, path.name, _summary(classifier.meta, classifier.export_info))

    def stamp_for(self, prediction: Any) -> RunStamp:
        """The stamp of one call: this run's, with the engine that made it when that was another.

        ``Prediction.engine`` names it: a cluster worker's engine, which ``auto`` picks on each node.
        """
        engine = getattr(prediction, "engine", None)
        return self.stamp if not engine else dataclasses.replace(self.stamp, engine=engine)

    def entry(self, first_seen_utc: str) -> dict[str, Any]:
        """This model's entry in a sidecar's ``models``."""
        return {"sha256": self.sha256, "file": self.file, "threshold": self.stamp.threshold,
                **self.summary, "first_seen_utc": first_seen_utc, "engines": [self.stamp.engine]}


def _model_path(classifier: Any, model: Path | None) -> Path:
    """The file a classifier opened: its backend's ``model_path`` (or a cluster driver's ``model``)."""
    path = getattr(getattr(classifier, "backend", None), "model_path", None) or getattr(classifier, "model", None)
    if path is None and model is None:
        raise UsageError("give --model (an exported .onnx or .xml)")
    return Path(path if path is not None else model)  # type: ignore[arg-type]


def sidecar_path(out: Path) -> Path:
    """Where the provenance record of ``out`` lives: ``<out>.provenance.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + SIDECAR_SUFFIX)


def new_record(out: Path, run: Provenance, now: str, engines: Sequence[str] | None = None) -> dict[str, Any]:
    """The sidecar of an output that only ``run`` wrote (``engines``: those its rows name, if several)."""
    entry = run.entry(now)
    if engines:
        entry["engines"] = list(engines)
    return {"format": SIDECAR_FORMAT, "output": Path(out).name, "edgeleuk_version": __version__,
            "host": socket.gethostname(), "models": {run.stamp.model: entry}, "changes": []}


def write_record(out: Path, record: Mapping[str, Any]) -> None:
    """Write ``out``'s sidecar atomically (complete or absent)."""
    atomic_write_text(sidecar_path(out), json.dumps(record, indent=2, sort_keys=False) + "\n")


def read_record(out: Path) -> dict[str, Any] | None:
    """``out``'s sidecar, or None when there is none.

    Raises:
        UsageError: It exists but is not an edgeleuk provenance record (exit 2).
    """
    path = sidecar_path(out)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}; restore it, or choose a new --out") from exc
    if not (isinstance(record, dict) and record.get("format") == SIDECAR_FORMAT
            and isinstance(record.get("models"), dict) and isinstance(record.get("changes"), list)):
        raise UsageError(f"{path} is not an {SIDECAR_FORMAT} record; restore it, or choose a new --out")
    return record


def _as_threshold(text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")  # a cell edited by hand matches no threshold: refused, never guessed


def _known(threshold: float) -> float | None:
    """A threshold for JSON: None when it could not be read (JSON has no NaN)."""
    return None if math.isnan(threshold) else threshold


def _last_call(rows: Sequence[Mapping[str, str]]) -> tuple[str, float] | None:
    """Model id and threshold of the last row that names a model."""
    for row in reversed(rows):
        if row.get("model"):
            return row["model"], _as_threshold(row.get("threshold"))
    return None


def _recorded_call(record: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """Model id and threshold a sidecar says the output continues with (its last change, or its one model)."""
    if not record:
        return None
    if record["changes"]:
        last = record["changes"][-1]
        return str(last.get("to")), _as_threshold(last.get("to_threshold"))
    if len(record["models"]) == 1:
        ((model, entry),) = record["models"].items()
        return str(model), _as_threshold(entry.get("threshold") if isinstance(entry, dict) else None)
    return None


def _add_row_models(models: dict[str, Any], rows: Sequence[Mapping[str, str]]) -> None:
    """Give every model id the rows name an entry (a sidecar lost or never written: what rows say, else None)."""
    for row in rows:
        entry = models.get(row.get("model") or "")
        if row.get("model") and entry is None:
            unknown = dict.fromkeys(("sha256", "file", "class_names", "export_profile", "gates", "calibration"))
            models[row["model"]] = {**unknown, "threshold": _known(_as_threshold(row.get("threshold"))),
                                    "first_seen_utc": row.get("time_utc") or None, "engines": []}
            entry = models[row["model"]]
        if entry is not None and row.get("engine") and row["engine"] not in entry.setdefault("engines", []):
            entry["engines"].append(row["engine"])


def _add_run(models: dict[str, Any], run: Provenance, now: str) -> None:
    """Enter ``run``'s model: a new entry, or the known one brought up to date (threshold, engines, unknowns)."""
    fresh = run.entry(now)
    entry = models.setdefault(run.stamp.model, fresh)
    if entry is fresh:
        return
    for key, value in fresh.items():
        if entry.get(key) is None:
            entry[key] = value
    entry["threshold"] = run.stamp.threshold
    if run.stamp.engine not in entry["engines"]:
        entry["engines"].append(run.stamp.engine)


def _describe(model: str, threshold: float, models: Mapping[str, Any]) -> str:
    entry = models.get(model)
    file = entry.get("file") if isinstance(entry, dict) else None
    return f"model {model} ({file or 'file not recorded'}, threshold {threshold_text(threshold)})"


def continue_output(
    out: Path, rows: Sequence[Mapping[str, str]], run: Provenance, allow_change: bool, now: str
) -> dict[str, Any]:
    """The sidecar for ``run`` adding rows to ``out``, which holds ``rows`` already; nothing is written here.

    The output continues with the model and threshold of its last row (or, with no row yet,
    of its sidecar). Another model or threshold is refused unless ``allow_change``; then the
    change is recorded. A sidecar whose output is gone is stale and starts again.

    Raises:
        UsageError: ``out`` was written by another model or threshold and ``allow_change`` is
            False, naming both and the fixes (exit 2); or its sidecar is unreadable.
    """
    old = read_record(out) if Path(out).exists() else None
    record = new_record(out, run, now)
    record["models"] = {k: dict(v) for k, v in old["models"].items() if isinstance(v, dict)} if old else {}
    record["changes"] = list(old["changes"]) if old else []
    _add_row_models(record["models"], rows)
    previous = _last_call(rows) or _recorded_call(old)
    if previous is not None and not run.stamp.same_call(*previous):
        were, now_runs = _describe(*previous, record["models"]), _describe(run.stamp.model, run.stamp.threshold,
                                                                           {run.stamp.model: {"file": run.file}})
        if not allow_change:
            raise UsageError(
                f"{out} was written by {were}; this run uses {now_runs}. Its rows would mix the calls of "
                f"two models or thresholds in one file. Choose a new --out for this model, or pass "
                f"{CONTINUE_FLAG} to go on in {Path(out).name} (the change is recorded in "
                f"{sidecar_path(out).name})"
            )
        record["changes"].append({"time_utc": now, "from": previous[0], "to": run.stamp.model,
                                  "from_threshold": _known(previous[1]), "to_threshold": run.stamp.threshold,
                                  "reason": CONTINUE_FLAG})
        log.warning("%s: going on with %s after rows of %s (%s); the change is recorded in %s",
                    out, now_runs, were, CONTINUE_FLAG, sidecar_path(out).name)
    _add_run(record["models"], run, now)
    return record


def legacy_header(header: Sequence[str], columns: Sequence[str]) -> str | None:
    """Why ``header`` cannot be continued, when it is an older predictions file without provenance columns.

    Its rows do not say which model or threshold made them, so new rows cannot be told apart from them.
    """
    older = [c for c in columns if c not in PROVENANCE_COLUMNS]
    if not header or any(c in PROVENANCE_COLUMNS for c in header) or not set(header) <= set(older):
        return None
    return (
        "it was written before edgeleuk recorded which model made each call (no model, threshold, "
        "engine or time columns), so new rows could not be told apart from its rows. Keep it as it is "
        "and choose a new --out"
    )
