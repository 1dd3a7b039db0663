"""What a row says about trusting its call, and what ``--qc`` does with a flagged cell.

The classifier checks every decoded cell's quality and, where the model carries an
out-of-distribution model and the graph its embedding, how far the cell lies from the
calibration cells (:class:`~edgeleuk.runtime.classifier.Prediction` ``qc``, ``ood_score``,
``ood_flag``). A cell is *flagged* when a check failed or it lies beyond the OOD threshold.
Rows carry two columns (:data:`TRUST_COLUMNS`):

* ``qc``: ``ok``, or the reasons comma-separated (the quality reasons, then :data:`OOD_REASON`
  when the cell lies outside the calibration cells' distribution); empty for a file that could not
  be classified and for every row under ``--qc off`` (not checked);
* ``ood_score``: the distance, empty when none was computed.

``--qc`` (:data:`QC_MODES`) decides what a flag does:

* ``flag`` (default): the call stands (label written) and the flag is visible in the row,
  the summary and the report;
* ``strict``: the call is withheld: ``status=flagged``, no label (the probability is still
  written), left out of the ALL/HEM counts, the per-subject shares and the metrics;
* ``off``: no quality checks run and flags are not acted on (``qc`` empty).

A flagged cell is never an error: exit codes stay those of a run without flags.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence

from edgeleuk.core.errors import UsageError
from edgeleuk.core.text import printable
from edgeleuk.runtime.classifier import Prediction

#: The ``--qc`` modes, the default first (the CLI's choices are derived from this).
QC_MODES = ("flag", "strict", "off")
DEFAULT_QC = QC_MODES[0]
#: The status of a call withheld under ``--qc strict``.
FLAGGED = "flagged"
#: The ``qc`` reason of a cell beyond the out-of-distribution threshold.
OOD_REASON = "ood"
#: The ``qc`` cell of a checked cell with no flag.
QC_OK = "ok"
#: The columns rows carry about trusting the call, in order (after the call's own columns).
TRUST_COLUMNS = ("qc", "ood_score")
#: Significant digits of ``ood_score`` in rows (a distance, not a probability: its scale varies).
OOD_DIGITS = 6
MAX_LISTED_FLAGS = 10
STRICT_CNMC = (
    "--format cnmc needs a 0/1 call on every line, and --qc strict withholds the call of a flagged cell: a "
    "line filled in for it would be scored as the model's call. Use --qc flag (the default) for a submission "
    "(every line holds the model's call; the summary lists the flagged cells), or --format csv with --qc strict"
)


def check_qc_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`QC_MODES`.

    Raises:
        UsageError: Any other value (exit 2).
    """
    if mode not in QC_MODES:
        raise UsageError(f"unknown --qc {mode!r}; choose one of {', '.join(QC_MODES)}")
    return mode


def checks_for(mode: str, heatmaps: bool = False) -> dict[str, bool]:
    """What ``Classifier.load`` is asked for a run in ``mode``: only what differs from its defaults.

    ``off`` opens the model without quality checks; ``heatmaps`` with its class activation maps.
    """
    return ({"qc": False} if mode == "off" else {}) | ({"heatmaps": True} if heatmaps else {})


def reasons(prediction: Prediction) -> tuple[str, ...]:
    """Why a cell is flagged: its quality reasons, then :data:`OOD_REASON`; empty when it is not."""
    return tuple(prediction.qc) + ((OOD_REASON,) if prediction.ood_flag else ())


def judge(prediction: Prediction, mode: str) -> Prediction:
    """The prediction as ``mode`` has it recorded (see the module docstring).

    ``strict`` turns a flagged call into ``status=flagged`` without a label; ``off`` drops the
    flags (the call stands, nothing is flagged); ``flag`` keeps the prediction as it is.
    """
    if mode == "off" and (prediction.qc or prediction.ood_flag):
        return dataclasses.replace(prediction, qc=(), ood_flag=False)
    if mode == "strict" and prediction.ok and prediction.flagged:
        return dataclasses.replace(prediction, status=FLAGGED, label=None)
    return prediction


def withheld(prediction: Prediction) -> bool:
    """Whether ``--qc strict`` withheld this call (classified, but no label)."""
    return prediction.status == FLAGGED


def qc_cell(prediction: Prediction, mode: str) -> str | None:
    """The row's ``qc`` value: ``ok`` or the reasons; None (empty) when not checked or not classified."""
    if mode == "off" or not (prediction.ok or withheld(prediction)):
        return None
    return ",".join(reasons(prediction)) or QC_OK


def ood_cell(prediction: Prediction) -> float | None:
    """The row's ``ood_score``, to :data:`OOD_DIGITS` significant digits; None when there is none."""
    score = prediction.ood_score
    return None if score is None else float(f"{score:.{OOD_DIGITS}g}")


def reason_counts(predictions: Iterable[Prediction]) -> Counter[str]:
    """How often each reason flagged a cell (a cell with two reasons counts for both)."""
    return Counter(r for p in predictions for r in reasons(p))


def describe_flags(named: Sequence[tuple[str, Prediction]], mode: str) -> list[str]:
    """A run summary's lines about flagged cells, given ``(shown path, prediction)`` per row."""
    if mode == "off":
        return ["  quality and distribution checks off (--qc off): no cell was flagged"]
    flagged = [(name, p) for name, p in named if p.flagged and (p.ok or withheld(p))]
    if not flagged:
        return []
    counts = ", ".join(f"{r} {n}" for r, n in sorted(reason_counts(p for _, p in flagged).items()))
    what = ("no label, left out of the ALL/HEM counts and the metrics (--qc strict)" if mode == "strict"
            else "labels kept (--qc strict would withhold them)")
    lines = [f"  flagged {len(flagged)} cell(s) ({counts}): {what}"]
    lines += [f"    {printable(name)}: {','.join(reasons(p))}" for name, p in flagged[:MAX_LISTED_FLAGS]]
    if len(flagged) > MAX_LISTED_FLAGS:
        lines.append(f"    ... and {len(flagged) - MAX_LISTED_FLAGS} more (see the qc column)")
    return lines


def pre_qc_header(header: Sequence[str], columns: Sequence[str]) -> str | None:
    """Why ``header`` cannot be continued, when it is a predictions file written before the trust columns.

    Its rows say nothing about the quality of their cells, so a file mixing them with checked rows
    would read as if the old cells had passed.
    """
    if list(header) != [c for c in columns if c not in TRUST_COLUMNS]:
        return None
    return (
        f"it was written before rows carried the {' and '.join(TRUST_COLUMNS)} columns, so its rows do not "
        "say whether their cells passed the quality checks, and new rows would mix with them. Keep it as it "
        "is and choose a new --out (edgeleuk report still reads it)"
    )
