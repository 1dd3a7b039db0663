"""The model's metadata: the single source of truth for preprocessing.

A checkpoint carries one :class:`ModelMeta`; training, the PyTorch reference,
the exported graph, ``predict`` and ``bench`` all read crop, scale, mean/std,
rotations, threshold and class names from it. This module is torch-free so the
runtime on a microscope PC can use it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from edgeleuk.errors import CheckpointError

PAPER_ARCH = "legacy_seresnext50_32x4d"
INPUT_SIZE = 450  # C-NMC cells are 450x450 BMPs
ALLOWED_ROTATIONS = (1, 4, 8)


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
        arch: Model architecture name (see ``edgeleuk.model.ARCHITECTURES``).
        preprocess: Input contract and preprocessing.
        threshold: Decision threshold on the probability of ALL.
        class_names: Label index to name; 1 (ALL) is the positive class.
        threshold_source: Where the threshold came from (default or calibration).
        recipe: Name of the training recipe, if trained here.
        seed: Training seed.
        val_metrics: Validation metrics of this checkpoint.
        data_fingerprint: Hash of the training file list.
        extra: Free-form provenance (import source, epoch...).
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (class-name keys become strings)."""
        d = dataclasses.asdict(self)
        d["class_names"] = {str(k): v for k, v in self.class_names.items()}
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        return d

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON with sorted keys (the string stored in exported models)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"unknown metadata keys: {sorted(unknown)}")
        pre = dict(d.pop("preprocess", {}))
        pknown = {f.name for f in dataclasses.fields(Preprocess)}
        if set(pre) - pknown:
            raise CheckpointError(f"unknown preprocess keys: {sorted(set(pre) - pknown)}")
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(float(x) for x in pre[key])
        if "class_names" in d:
            d["class_names"] = {int(k): str(v) for k, v in d["class_names"].items()}
        return cls(preprocess=Preprocess(**pre), **d)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> ModelMeta:
        """A copy with some fields changed (e.g. a calibrated threshold)."""
        return dataclasses.replace(self, **changes)

    def label_name(self, positive: bool) -> str:
        """Class name of a call: the positive class (ALL, index 1) when ``positive``, else HEM."""
        return self.class_names[1 if positive else 0]
