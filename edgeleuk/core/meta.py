"""The model's metadata: the single source of truth for preprocessing.

A checkpoint carries one :class:`ModelMeta`; training, the PyTorch reference,
the exported graph, ``predict`` and ``bench`` all read crop, scale, mean/std,
rotations, threshold and class names from it. This module is torch-free so the
runtime on a microscope PC can use it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.optics import StainReference, check_um_per_px
from edgeleuk.core.trust import MAX_OOD_CHARS, OodModel, QualityRanges

PAPER_ARCH = "legacy_seresnext50_32x4d"
INPUT_SIZE = 450  # C-NMC cells are 450x450 BMPs
ALLOWED_ROTATIONS = (1, 4, 8)
# Far above any cell crop; keeps a hostile model file from asking for gigabytes per image.
MAX_INPUT_SIZE = 2048
# Class names go into CSV cells and HTML reports: plain words only. The first character
# rules out spreadsheet formula starts (= + - @), and control characters never match.
_CLASS_NAME = re.compile(r"\w[\w .-]{0,63}")
#: Most characters and nesting levels of a metadata JSON string a model file carries. Real ones
#: are a few KB and 5 levels deep (plus the OOD model, at most ``MAX_OOD_CHARS``); 100,000 nested
#: brackets made ``json.loads`` raise RecursionError.
MAX_METADATA_CHARS = MAX_OOD_CHARS + (1 << 20)
MAX_METADATA_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # brackets inside strings do not nest
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def parse_json(text: Any, what: str = "metadata") -> Any:
    """``json.loads`` of a metadata string from a model file, refusing one too long or too deeply nested.

    The size and depth are checked before parsing: the parser recurses once per level.

    Raises:
        CheckpointError: Not text, longer than :data:`MAX_METADATA_CHARS`, nested deeper than
            :data:`MAX_METADATA_DEPTH`, or not JSON.
    """
    if not isinstance(text, str):
        raise CheckpointError(f"{what} must be a JSON string, got {type(text).__name__}")
    if len(text) > MAX_METADATA_CHARS:
        raise CheckpointError(f"{what} is {len(text)} characters long; at most {MAX_METADATA_CHARS} are read")
    steps = map(_NESTING.__getitem__, _JSON_BRACKET.findall(_JSON_STRING.sub("", text)))
    deepest = max(itertools.accumulate(steps), default=0)  # C iterators: a megabyte in milliseconds
    if deepest > MAX_METADATA_DEPTH:
        raise CheckpointError(f"{what} is nested {deepest} levels deep; at most {MAX_METADATA_DEPTH} are read")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{what} is not valid JSON: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_vector(name: str, value: Any) -> None:
    if not (isinstance(value, tuple) and len(value) == 3 and all(_is_real(v) for v in value)):
        raise CheckpointError(f"{name} must be three finite numbers, got {value!r}")


def _check_class_names(names: Any) -> None:
    """Refuse class names a prediction or a spreadsheet could trip on."""
    if not isinstance(names, dict) or set(names) != {0, 1}:
        got = sorted(names) if isinstance(names, dict) else type(names).__name__
        raise CheckpointError(f"class_names must name exactly classes 0 (HEM) and 1 (ALL), got {got}")
    for key, name in names.items():
        if not isinstance(name, str) or not _CLASS_NAME.fullmatch(name):
            raise CheckpointError(
                f"class {key} name {name!r} is not plain text (letters, digits, space, _ . -; "
                "starting with a letter or digit; at most 64 characters)"
            )
    if names[0].casefold() == names[1].casefold():
        raise CheckpointError(f"classes 0 and 1 have the same name {names[0]!r}")


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 RGB pixels become network input.

    Attributes:
        input_size: Side of the square input image in pixels.
        crop: Side of the centre crop fed to the network.
        scale: Multiplier applied to uint8 values (1/255 as in ``ToTensor``).
        mean: Per-channel mean subtracted after scaling.
        std: Per-channel std divided after subtracting the mean.
        rotations: Test-time rotations at ``360 * i / rotations`` degrees.
    """

    input_size: int = INPUT_SIZE
    crop: int = 300
    scale: float = 1.0 / 255.0
    # The paper fed ToTensor() output straight in: no ImageNet mean/std.
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotations: int = 8

    def __post_init__(self) -> None:
        if not _is_int(self.input_size) or not 1 <= self.input_size <= MAX_INPUT_SIZE:
            raise CheckpointError(
                f"input_size must be a whole number in 1..{MAX_INPUT_SIZE}, got {self.input_size!r}"
            )
        if not _is_int(self.crop) or not _is_int(self.rotations):
            raise CheckpointError(
                f"crop and rotations must be whole numbers, got {self.crop!r}, {self.rotations!r}"
            )
        if not _is_real(self.scale) or self.scale <= 0:
            raise CheckpointError(f"scale must be a positive finite number, got {self.scale!r}")
        _check_vector("mean", self.mean)
        _check_vector("std", self.std)
        if self.rotations not in ALLOWED_ROTATIONS:
            raise CheckpointError(f"rotations must be one of {ALLOWED_ROTATIONS}, got {self.rotations}")
        if not 0 < self.crop <= self.input_size:
            raise CheckpointError(f"crop {self.crop} must lie in 1..{self.input_size}")
        if any(s == 0 for s in self.std):
            raise CheckpointError("std must not contain zeros")

    @property
    def angles(self) -> list[float]:
        """Rotation angles in degrees, counter-clockwise as in ``TF.rotate``."""
        return [360.0 * i / self.rotations for i in range(self.rotations)]


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to use a trained classifier besides its weights.

    Attributes:
        arch: Model architecture name (see ``edgeleuk.modeling.model.ARCHITECTURES``).
        preprocess: Input contract and preprocessing.
        threshold: Decision threshold on the probability of ALL.
        class_names: Label index to name; 1 (ALL) is the positive class.
        threshold_source: Where the threshold came from (default or calibration).
        recipe: Name of the training recipe, if trained here.
        seed: Training seed.
        val_metrics: Validation metrics of this checkpoint.
        data_fingerprint: Hash of the training file list.
        extra: Free-form provenance (import source, epoch...).
        quality: Accepted ranges of the input-quality measures, fitted at export or calibrate;
            None for a model that predates QC (the runtime then uses ``DEFAULT_QUALITY`` and says so).
        ood: The out-of-distribution model of the graph's embedding, fitted at calibrate; None
            when not calibrated for it (no ``ood_score``).
        um_per_px: Micrometres per pixel of the training cells (``synth`` records its own, a recipe
            states it for real data); None in models made before it was recorded, or when nobody
            stated it: cutting cells from fields (``--fields``) then needs ``--model-um-per-px``.
        stain_reference: Colour statistics of the training cells for stain normalisation of cells
            cut from fields; None (older models, or not computed): field cells are white-balanced only.
    """

    arch: str = PAPER_ARCH
    preprocess: Preprocess = field(default_factory=Preprocess)
    threshold: float = 0.5
    class_names: dict[int, str] = field(default_factory=lambda: {0: "hem", 1: "all"})
    threshold_source: str = "default"
    recipe: str | None = None
    seed: int | None = None
    val_metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    quality: QualityRanges | None = None
    ood: OodModel | None = None
    um_per_px: float | None = None
    stain_reference: StainReference | None = None

    def __post_init__(self) -> None:
        """Refuse metadata that would crash or mislead at prediction time (a hostile or broken file)."""
        if not isinstance(self.preprocess, Preprocess):
            raise CheckpointError(f"preprocess must be an object, got {type(self.preprocess).__name__}")
        if not _is_real(self.threshold) or not 0.0 < self.threshold < 1.0:
            raise CheckpointError(f"threshold must be a finite number in (0, 1), got {self.threshold!r}")
        _check_class_names(self.class_names)
        for name in ("arch", "threshold_source"):
            if not isinstance(getattr(self, name), str):
                raise CheckpointError(f"{name} must be text, got {getattr(self, name)!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise CheckpointError(f"seed must be a whole number, got {self.seed!r}")
        for name in ("val_metrics", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise CheckpointError(f"{name} must be an object, got {type(getattr(self, name)).__name__}")
        for name, kind in (("quality", QualityRanges), ("ood", OodModel)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise CheckpointError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
        if self.um_per_px is not None:
            object.__setattr__(self, "um_per_px", check_um_per_px(self.um_per_px))
        if self.stain_reference is not None and not isinstance(self.stain_reference, StainReference):
            raise CheckpointError(f"stain_reference must be an object, got {type(self.stain_reference).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (class-name keys become strings).

        ``quality`` and ``ood`` are left out when None, so a model without them writes the
        same JSON as before they existed.
        """
        d = dataclasses.asdict(self.replace(quality=None, ood=None))  # asdict would deep-copy the arrays
        d["class_names"] = {str(k): v for k, v in self.class_names.items()}
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        del d["quality"], d["ood"]
        if self.quality is not None:
            d["quality"] = self.quality.to_dict()
        if self.ood is not None:
            d["ood"] = self.ood.to_dict()
        d["stain_reference"] = self.stain_reference.to_dict() if self.stain_reference is not None else None
        return d

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON with sorted keys (the string stored in exported models)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_dict`; unknown keys and values of the wrong kind are errors."""
        if not isinstance(d, dict):
            raise CheckpointError(f"metadata must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"unknown metadata keys: {sorted(unknown)}")
        pre = d.pop("preprocess", {})
        if not isinstance(pre, dict):
            raise CheckpointError(f"preprocess must be a JSON object, got {type(pre).__name__}")
        pre = dict(pre)
        pknown = {f.name for f in dataclasses.fields(Preprocess)}
        if set(pre) - pknown:
            raise CheckpointError(f"unknown preprocess keys: {sorted(set(pre) - pknown)}")
        for key in ("mean", "std"):
            if isinstance(pre.get(key), list):
                pre[key] = tuple(float(x) if _is_int(x) else x for x in pre[key])
        names = d.get("class_names")
        if isinstance(names, dict):
            try:
                d["class_names"] = {int(k): v for k, v in names.items()}
            except ValueError as exc:
                raise CheckpointError(f"class_names keys must be 0 and 1, got {sorted(names)}") from exc
        # Older model files have neither key: quality None (the runtime uses the defaults), ood None.
        if d.get("quality") is not None:
            d["quality"] = QualityRanges.from_dict(d["quality"])
        if d.get("ood") is not None:
            d["ood"] = OodModel.from_dict(d["ood"])
        if d.get("stain_reference") is not None:
            d["stain_reference"] = StainReference.from_dict(d["stain_reference"])
        return cls(preprocess=Preprocess(**pre), **d)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Inverse of :meth:`to_json`; unknown keys, and text :func:`parse_json` refuses, are errors."""
        return cls.from_dict(parse_json(text))

    def replace(self, **changes: Any) -> ModelMeta:
        """A copy with some fields changed (e.g. a calibrated threshold)."""
        return dataclasses.replace(self, **changes)

    def label_name(self, positive: bool) -> str:
        """Class name of a call: the positive class (ALL, index 1) when ``positive``, else HEM."""
        return self.class_names[1 if positive else 0]


#: The :attr:`ModelMeta.extra` key ``edgeleuk calibrate`` writes its record under.
CALIBRATION_KEY = "calibration"
#: The :attr:`ModelMeta.extra` key ``edgeleuk train`` writes the run's record under (recipe, seed,
#: epochs, initialisation, cells and subjects per class, library versions); older checkpoints lack it.
TRAINING_KEY = "training"


def _pair(value: Any) -> tuple[float, float] | None:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_real(v) for v in value)
    return (float(value[0]), float(value[1])) if ok else None


def _real(value: Any) -> float | None:
    return float(value) if _is_real(value) else None


def _count(value: Any) -> int | None:
    return value if _is_int(value) and value >= 0 else None


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` measured at the threshold it stored (``extra["calibration"]``), read leniently.

    Files calibrated before intervals were recorded lack ``*_ci``, ``confidence`` and the
    subject counts: those read as None, and every reader says "not recorded" rather than failing.

    Attributes:
        sensitivity: ALL cells called ALL / ALL cells, at the stored threshold.
        specificity: HEM cells called HEM / HEM cells.
        sensitivity_ci: Exact (Clopper-Pearson) interval of the sensitivity.
        specificity_ci: Exact interval of the specificity.
        confidence: Coverage of both intervals (0.95).
        target_sensitivity: What was asked for.
        n_all: ALL cells scored. n_hem: HEM cells scored.
        subjects_all: ALL subjects among them. subjects_hem: HEM subjects.
        small_sample: Run below the sample-size floor with ``--allow-small``.
        data: Where the cells came from (folder and split).
        date: Day of calibration (UTC).
    """

    sensitivity: float | None = None
    specificity: float | None = None
    sensitivity_ci: tuple[float, float] | None = None
    specificity_ci: tuple[float, float] | None = None
    confidence: float | None = None
    target_sensitivity: float | None = None
    n_all: int | None = None
    n_hem: int | None = None
    subjects_all: int | None = None
    subjects_hem: int | None = None
    small_sample: bool = False
    data: str | None = None
    date: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Calibration | None:
        """The record as stored (any edgeleuk version); None when there is none or it is not an object."""
        if not isinstance(d, dict):
            return None
        subjects = d.get("subjects") if isinstance(d.get("subjects"), dict) else {}
        split = d.get("split")
        data = d.get("data") if isinstance(d.get("data"), str) else None
        return cls(
            sensitivity=_real(d.get("sensitivity")), specificity=_real(d.get("specificity")),
            sensitivity_ci=_pair(d.get("sensitivity_ci")), specificity_ci=_pair(d.get("specificity_ci")),
            confidence=_real(d.get("confidence")), target_sensitivity=_real(d.get("target_sensitivity")),
            n_all=_count(d.get("n_all")), n_hem=_count(d.get("n_hem")),
            subjects_all=_count(subjects.get("all")), subjects_hem=_count(subjects.get("hem")),
            small_sample=d.get("small_sample") is True,
            data=f"{data} ({split} split)" if data and isinstance(split, str) else data,
            date=d.get("date") if isinstance(d.get("date"), str) else None,
        )

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> Calibration | None:
        """The calibration a model carries, or None for an uncalibrated one."""
        return cls.from_dict(meta.extra.get(CALIBRATION_KEY))

    def figure(self, which: str) -> str:
        """``sensitivity`` or ``specificity`` as text with its interval: ``0.950 (95% CI 0.751-0.999)``."""
        value, ci = getattr(self, which), getattr(self, f"{which}_ci")
        if value is None:
            return "not recorded"
        if ci is None:
            return f"{value:.3f} (no interval recorded)"
        level = f"{100 * self.confidence:g}%" if self.confidence is not None else "exact"
        return f"{value:.3f} ({level} CI {ci[0]:.3f}-{ci[1]:.3f})"

    def counts(self) -> str:
        """Cells and subjects per class, as far as recorded."""
        if self.n_all is None or self.n_hem is None:
            return "cell counts not recorded"
        text = f"{self.n_all} ALL + {self.n_hem} HEM cells"
        if self.subjects_all is not None and self.subjects_hem is not None:
            text += f" from {self.subjects_all} ALL + {self.subjects_hem} HEM subjects"
        return text + (" (small sample, run with --allow-small)" if self.small_sample else "")

    def summary(self) -> str:
        """One line for ``info``, the report and the card."""
        return (f"sensitivity {self.figure('sensitivity')}, specificity {self.figure('specificity')}; "
                f"{self.counts()}")
