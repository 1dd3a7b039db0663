"""``edgeleuk card``: a model card from what a model file says about itself.

In the spirit of Hugging Face model cards and MONAI bundle metadata: intended use (and
that edgeleuk is not a medical device), architecture and input contract, where the
training data came from (fingerprint of the data index, cells and subjects per class,
recipe, seed, epochs), the export profile and every parity gate with its measured
figures, the calibration with its intervals, the limitations and the versions. Every
fact comes from the file's two metadata records (``train``, ``export`` and ``calibrate``
write them); a fact a file does not carry (one made before these records existed) is
written as unknown, never guessed. Limitations come first when they void the model: a
model trained on SYNTHETIC cells, a smoke model, one with no recorded training.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeleuk import __version__
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import TRAINING_KEY, Calibration, ModelMeta
from edgeleuk.core.trust import DEFAULT_QUALITY, ood_summary, quality_summary
from edgeleuk.core.versions import library_versions
from edgeleuk.io.atomic import atomic_write_text
from edgeleuk.io.formats import format_of
from edgeleuk.io.modelfile import read_model_meta
from edgeleuk.runtime.wire import model_sha256
from edgeleuk.workflow.render import render

UNKNOWN = "unknown (not recorded in this file)"
FORMATS = {"md": "card.md.j2", "html": "card.html.j2"}
INTENDED_USE = (
    "Research and engineering: reproducing Prellberg & Kramer (ISBI 2019), and running the classifier "
    "offline on microscope PCs to study throughput, parity and calibration. It scores single segmented "
    "white-blood-cell images (C-NMC 2019 style) as ALL blast or healthy (HEM)."
)
NOT_A_DEVICE = (
    "edgeleuk is not a medical device and this model is not a diagnostic test: it is not cleared or "
    "certified for clinical use. Its per-cell outputs must not be the basis of a diagnosis or a treatment "
    "decision; a qualified person reviews every smear."
)
GENERAL_LIMITS = (
    "Each call concerns one cell image, not a patient; a patient-level statement needs a validated protocol.",
    "C-NMC 2019 comes from one centre, one staining protocol and one microscope: other stains, scanners or "
    "segmentations need their own validation (calibrate on labelled cells from your own laboratory).",
)


@dataclass(frozen=True)
class Section:
    """One part of the card: label/value rows, bullet lines, a table (first row the header), a note."""

    title: str
    rows: tuple[tuple[str, str], ...] = ()
    bullets: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ModelCard:
    """Everything a card shows; :func:`build_card` fills it, the templates lay it out."""

    file: str
    sha256: str
    threshold: float
    limitations: tuple[str, ...]
    voiding: tuple[str, ...]
    sections: tuple[Section, ...]
    calibration: str
    gate: str
    written: str
    version: str = __version__
    intended_use: str = INTENDED_USE
    not_a_device: str = NOT_A_DEVICE
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def model_id(self) -> str:
        """The short id rows and reports name a model by: 12 hex digits of its SHA-256."""
        return self.sha256[:12]

    def summary(self) -> list[tuple[str, str]]:
        """The lines a report embeds: identity, threshold, calibration, gate and what voids the calls."""
        return [
            ("model", f"{self.file} (id {self.model_id})"),
            ("threshold", f"{self.threshold:.4g}"),
            ("calibration", self.calibration),
            ("parity gate", self.gate),
            ("limitations", " ".join(self.voiding) if self.voiding else self.limitations[0]),
        ]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if value is None or value == "":
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _per_class(counts: Any) -> str:
    counts = _dict(counts)
    cells, subjects = _dict(counts.get("cells")), _dict(counts.get("subjects"))
    if not cells:
        return UNKNOWN
    text = f"{cells.get('all', '?')} ALL + {cells.get('hem', '?')} HEM cells"
    if subjects:
        text += f" from {subjects.get('all', '?')} ALL + {subjects.get('hem', '?')} HEM subjects"
    return text


def _voiding(meta: ModelMeta) -> list[str]:
    """The limitations that void the model's calls: SYNTHETIC training, no recorded training, a smoke model."""
    training = _dict(meta.extra.get(TRAINING_KEY))
    synthetic = _dict(training.get("data")).get("synthetic") is True or meta.extra.get("synthetic") is True
    trained = bool(training) or "epoch" in meta.extra
    out = []
    if synthetic:
        out.append("TRAINED ON SYNTHETIC CELLS drawn by edgeleuk synth: its calls say nothing about "
                   "leukaemia; the model only shows that the pipeline works.")
    if not trained and "imported_from" not in meta.extra:
        out.append("UNKNOWN TRAINING: the file records neither a training run nor an import of published "
                   "weights, so the weights may be random (untrained). Do not rely on its calls.")
    if training.get("smoke") is True:
        out.append(f"SMOKE MODEL: made with the {training.get('recipe', 'smoke')!s} recipe (tiny network, "
                   f"{training.get('epochs', '?')} epoch(s), a handful of cells) to exercise the pipeline; "
                   "its calls are meaningless.")
    return out


def _limitations(meta: ModelMeta, export: dict[str, Any], cal: Calibration | None) -> list[str]:
    """What limits the model, the ones that void its calls (:func:`_voiding`) first."""
    training = _dict(meta.extra.get(TRAINING_KEY))
    out = _voiding(meta)
    if training.get("initialisation") == "random" and training.get("smoke") is not True:
        out.append("Trained from random initialisation (no ImageNet weights), unlike the paper.")
    if "SYNTHETIC" in str(_dict(export.get("gate")).get("data", "")):
        out.append("The parity gate ran on SYNTHETIC cells: it shows that the file computes what the checkpoint "
                   "computes, not that either is accurate on real cells.")
    if cal is None:
        out.append(f"Not calibrated: threshold {meta.threshold:.4g} (source: {meta.threshold_source!s}); run "
                   "edgeleuk calibrate on labelled cells from the laboratory that will use it.")
    elif cal.small_sample:
        out.append(f"Calibrated on a small sample ({cal.counts()}): read the intervals.")
    return out + list(GENERAL_LIMITS)


def _architecture(meta: ModelMeta, export: dict[str, Any]) -> Section:
    pre = meta.preprocess
    image = _dict(export.get("input"))
    shape = image.get("shape")
    rows = [
        ("architecture", meta.arch),
        ("input", (f"{image.get('name', '?')}: {image.get('dtype', '?')} {image.get('color', '')} "
                   f"{image.get('layout', '')} {list(shape) if isinstance(shape, list) else '?'}")
         if image else f"uint8 RGB [N, {pre.input_size}, {pre.input_size}, 3] (contract not recorded)"),
        ("outputs", ", ".join(sorted(_dict(export.get("outputs")))) or UNKNOWN),
        ("preprocessing (inside the graph)", f"centre crop {pre.crop}, scale {pre.scale:.6g}, mean {list(pre.mean)}, "
                                             f"std {list(pre.std)}"),
        ("test-time augmentation", f"{pre.rotations} rotations ({', '.join(f'{a:g}' for a in pre.angles)} degrees), "
                                   "mean of the logits"),
        ("classes", ", ".join(f"{k} = {v}" for k, v in sorted(meta.class_names.items())) + " (1 is positive)"),
        ("threshold", f"{meta.threshold:.6g} ({meta.threshold_source})"),
    ]
    return Section("Architecture and input contract", rows=tuple(rows))


def _training(meta: ModelMeta) -> Section:
    training = _dict(meta.extra.get(TRAINING_KEY))
    data = _dict(training.get("data"))
    imported = meta.extra.get("imported_from")
    rows = [
        ("data index fingerprint", _text(data.get("fingerprint") or meta.data_fingerprint)),
        ("synthetic data", _text(data.get("synthetic", meta.extra.get("synthetic")))),
        ("training cells", _per_class(data.get("train"))),
        ("validation cells", _per_class(data.get("val"))),
        ("recipe", _text(training.get("recipe") or meta.recipe)),
        ("seed", _text(training.get("seed", meta.seed))),
        ("epochs", _text(training.get("epochs"))),
        ("best epoch", _text(meta.extra["epoch"] + 1 if isinstance(meta.extra.get("epoch"), int) else None)),
        ("initialisation", _text(training.get("initialisation"))),
        ("validation (weighted F1)", _text(meta.val_metrics.get("f1"))),
    ]
    if imported:
        rows.append(("imported from", f"{imported} (sha256 {meta.extra.get('source_sha256', '?')})"))
    note = "" if training else ("This file predates training records: the facts marked unknown were not "
                                "stored when it was made.")
    return Section("Training data and run", rows=tuple(rows), note=note)


def _export(export: dict[str, Any]) -> Section:
    profile = _dict(export.get("profile"))
    quant = export.get("quantization")
    rows = [
        ("profile", f"{profile.get('name', UNKNOWN)}: {profile.get('description', '')}".rstrip(": ")),
        ("format and precision", f"{export.get('format', '?')}, {export.get('precision', '?')}"
                                 + (f", opset {export['opset']}" if export.get("opset") else "")),
        ("exported", _text(export.get("exported_at"))),
        ("source checkpoint", f"{export.get('source_checkpoint') or '?'} (sha256 "
                              f"{export.get('source_sha256') or '?'})"),
        ("quantization", _text(_dict(quant).get("method")) if quant else "none"),
    ]
    return Section("Export", rows=tuple(rows))


def _gates(export: dict[str, Any]) -> tuple[Section, str]:
    gate = _dict(export.get("gate"))
    if not gate:
        return Section("Parity gates", note="No gate record in this file."), "not recorded"
    head = ("engine", "status", "runtime", "cells", "agreement", "max |logit delta|", "max |prob delta|",
            "F1 file / reference", "breaches")
    table = [head]
    for check in gate.get("checks") or []:
        c, p = _dict(check), _dict(_dict(check).get("parity"))
        f1 = (f"{p['f1_model']:.4f} / {p['f1_reference']:.4f}"
              if isinstance(p.get("f1_model"), float) and isinstance(p.get("f1_reference"), float) else "-")
        table.append((str(c.get("engine", "?")), str(c.get("status", "?")), str(c.get("version") or "-"),
                      str(p.get("n", "-")), f"{p['agreement']:.2%}" if "agreement" in p else "-",
                      f"{p['max_abs_logit_delta']:.2e}" if "max_abs_logit_delta" in p else "-",
                      f"{p['max_abs_prob_delta']:.2e}" if "max_abs_prob_delta" in p else "-",
                      f1, "; ".join(map(str, c.get("breaches") or [])) or "none"))
    limits = _dict(gate.get("thresholds"))
    verdict = "passed" if gate.get("passed") else "FAILED"
    note = (f"Gate {verdict} on {gate.get('n', '?')} cells ({gate.get('data', '?')}); limits: agreement >= "
            f"{limits.get('min_agreement', '?')}, max |logit delta| <= {limits.get('max_abs_logit_delta', '?')}, "
            f"max F1 drop {limits.get('max_f1_drop') if limits.get('max_f1_drop') is not None else 'not set'}.")
    engines = ", ".join(str(_dict(c).get("engine")) for c in gate.get("checks") or [])
    return Section("Parity gates", table=tuple(table), note=note), f"{verdict} ({engines})"


def _calibration(cal: Calibration | None, meta: ModelMeta) -> Section:
    if cal is None:
        return Section("Calibration", note=f"Not calibrated: threshold {meta.threshold:.4g} ({meta.threshold_source}).")
    rows = [
        ("target sensitivity", _text(cal.target_sensitivity)),
        ("sensitivity", cal.figure("sensitivity")),
        ("specificity", cal.figure("specificity")),
        ("cells and subjects", cal.counts()),
        ("data", _text(cal.data)),
        ("date", _text(cal.date)),
    ]
    return Section("Calibration", rows=tuple(rows),
                   note="Intervals are exact (Clopper-Pearson) and treat cells as independent; cells of one "
                        "subject are alike, so the subject counts bound how far they generalise.")


def _trust(meta: ModelMeta) -> Section:
    """Where the quality ranges and the OOD model come from, and the ranges in force."""
    ranges = meta.quality or DEFAULT_QUALITY
    rows = [("quality ranges", quality_summary(meta.quality))]
    rows += [(name, f"{lo:.4g} .. {hi:.4g}") for name, (lo, hi) in
             ((n, getattr(ranges, n)) for n in ranges.measures())]
    rows.append(("out-of-distribution", ood_summary(meta.ood)))
    return Section("When not to trust a call", rows=tuple(rows),
                   note="A cell outside a range, or scoring above the OOD threshold, is flagged in its row "
                        "(qc, ood_score); see docs/trust.md.")


def _versions(meta: ModelMeta, export: dict[str, Any]) -> Section:
    trained = _dict(_dict(meta.extra.get(TRAINING_KEY)).get("versions"))
    exported = _dict(export.get("versions"))
    here = library_versions(("onnxruntime", "openvino", "torch"))
    rows = [
        ("trained with", ", ".join(f"{k} {v}" for k, v in trained.items() if v) or UNKNOWN),
        ("exported with", ", ".join(f"{k} {v}" for k, v in
                                    {"edgeleuk": export.get("edgeleuk_version"), **exported}.items() if v) or UNKNOWN),
        ("this card written with", ", ".join([f"edgeleuk {__version__}"] + [
            f"{k} {v}" for k, v in here.items() if v])),
    ]
    return Section("Versions", rows=tuple(rows))


def build_card(model: Path) -> ModelCard:
    """Read ``model``'s metadata into a :class:`ModelCard`.

    Raises:
        UsageError: The file is missing, of an unknown format, or its metadata break the contract.
    """
    model = Path(model)
    format_of(model)  # a clear error for a missing file or another suffix
    meta, export = read_model_meta(model)
    cal = Calibration.from_meta(meta)
    limits = _limitations(meta, export, cal)
    gate_section, gate = _gates(export)
    sections = (
        _architecture(meta, export), _training(meta), _export(export), gate_section, _calibration(cal, meta),
        _trust(meta), _versions(meta, export),
    )
    return ModelCard(
        file=model.name, sha256=model_sha256(model), threshold=meta.threshold, limitations=tuple(limits),
        voiding=tuple(_voiding(meta)),
        sections=sections, calibration=cal.summary() if cal else "not calibrated", gate=gate,
        written=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    )


def write_card(model: Path, out: Path | None = None, fmt: str = "md") -> tuple[Path, ModelCard]:
    """Write ``model``'s card as Markdown or HTML (atomically).

    Args:
        model: Exported ``.onnx`` or OpenVINO ``.xml``.
        out: File to write; None writes ``<model stem>.card.<fmt>`` beside the model.
        fmt: ``md`` or ``html``.

    Returns:
        The path written and the card.

    Raises:
        UsageError: Unknown format, or a model that cannot be read.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    card = build_card(model)
    out = Path(out) if out is not None else Path(model).with_name(f"{Path(model).stem}.card.{fmt}")
    atomic_write_text(out, render(FORMATS[fmt], card=card))
    return out, card
