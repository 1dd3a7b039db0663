"""What a model file says about when not to trust a call: quality ranges and the OOD model.

Two frozen records that :class:`edgeleuk.core.meta.ModelMeta` carries (``quality`` and ``ood``):

* :class:`QualityRanges`: the accepted range of every input-quality measure of a decoded cell
  (computed by :mod:`edgeleuk.quality`), fitted on training or calibration cells by robust
  percentiles, or :data:`DEFAULT_QUALITY` for a model that carries none (and says so);
* :class:`OodModel`: a PCA of the graph's ``embedding`` output on calibration cells; a cell's
  out-of-distribution score is its Mahalanobis distance in the whitened PCA space plus the
  residual off it, flagged above a percentile of the calibration scores.

Torch-free and light (numpy only): the runtime reads these on every load. Unknown keys are
errors, as for the rest of the metadata; arrays travel as base64 float32 in the JSON.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeleuk.core.errors import CheckpointError

#: Most characters the OOD model may take in the metadata JSON (the size budget: a 2048-wide
#: embedding with 32 components is about 0.36 MB). ``core.meta``'s cap on a whole metadata string
#: is this plus room for the rest.
MAX_OOD_CHARS = 2 << 20
#: Most principal components and embedding width an OOD model may have (bounds a hostile file).
MAX_OOD_COMPONENTS = 32
MAX_OOD_DIM = 16384

# Sources a QualityRanges states: "defaults", or "<how>:<n> cells" (e.g. "calibrate:400 cells").
DEFAULT_SOURCE = "defaults"


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class QualityRanges:
    """The accepted range ``(lo, hi)`` of each input-quality measure (see :mod:`edgeleuk.quality`).

    A value outside its range gives that measure's reason (``area``, ``off_centre``...). The
    measures are taken on the decoded ``input_size`` image; "crop" is the model's centre crop.

    Attributes:
        area_frac: Cell (non-black) pixels / crop pixels.
        offset_frac: Distance of the cell's centroid from the image centre / half the crop side.
        edge_frac: Share of the crop's one-pixel border that the cell covers (cut by the crop).
        focus: Variance of the Laplacian of the grey cell interior (low = out of focus).
        brightness: Mean grey level (0-255) of the cell pixels.
        clipped_frac: Share of the cell pixels with a channel at 255 (over-exposure).
        od_hematoxylin: Haematoxylin density of the cell's densest tenth (90th percentile over its
            pixels, after HED colour deconvolution): the nucleus's stain.
        od_eosin: Eosin density of the cell's densest tenth.
        background_frac: Share of the pixels outside the crop that are not black (the paper's
            mark of a segmentation that kept background).
        source: ``"defaults"``, or where the ranges were fitted (``"calibrate:<n> cells"``).
    """

    area_frac: tuple[float, float]
    offset_frac: tuple[float, float]
    edge_frac: tuple[float, float]
    focus: tuple[float, float]
    brightness: tuple[float, float]
    clipped_frac: tuple[float, float]
    od_hematoxylin: tuple[float, float]
    od_eosin: tuple[float, float]
    background_frac: tuple[float, float]
    source: str = DEFAULT_SOURCE

    def __post_init__(self) -> None:
        """Refuse ranges that are not two finite numbers, lo <= hi."""
        for name in self.measures():
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            if not (isinstance(value, tuple) and len(value) == 2 and all(_is_real(v) for v in value)):
                raise CheckpointError(f"quality range {name} must be two finite numbers, got {value!r}")
            if value[0] > value[1]:
                raise CheckpointError(f"quality range {name} is empty: {value[0]!r} > {value[1]!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if not isinstance(self.source, str) or not 0 < len(self.source) <= 200:
            raise CheckpointError(f"quality source must be short text, got {self.source!r}")

    @classmethod
    def measures(cls) -> tuple[str, ...]:
        """The names of the measures, in declaration order (every field but ``source``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "source")

    @property
    def is_default(self) -> bool:
        """True for the documented defaults (no cells were fitted)."""
        return self.source == DEFAULT_SOURCE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: each range as a two-item list, plus ``source``."""
        d: dict[str, Any] = {name: list(getattr(self, name)) for name in self.measures()}
        d["source"] = self.source
        return d

    @classmethod
    def from_dict(cls, d: Any) -> QualityRanges:
        """Inverse of :meth:`to_dict`; unknown or missing keys and bad values are errors."""
        if not isinstance(d, dict):
            raise CheckpointError(f"quality must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise CheckpointError(f"unknown quality keys: {sorted(set(d) - known)}")
        missing = set(cls.measures()) - set(d)
        if missing:
            raise CheckpointError(f"quality lacks ranges for {sorted(missing)}")
        return cls(**d)

    def replace(self, **changes: Any) -> QualityRanges:
        """A copy with some ranges changed."""
        return dataclasses.replace(self, **changes)

    def summary(self) -> str:
        """One line for ``info`` and the card: where the ranges came from."""
        if self.is_default:
            return "defaults (documented, not fitted on this model's cells)"
        return f"fitted ({self.source})"


#: The ranges a model without its own uses (documented in docs/trust.md). Chosen wide: every
#: ``edgeleuk synth`` training cell passes with room to spare, and the widths leave room for real
#: C-NMC cells (radius 60-150 px in the 450 px image, centred by the segmentation, black background),
#: which this package could not be fitted on (licensed data). Fit a model's own at calibrate/export.
DEFAULT_QUALITY = QualityRanges(
    area_frac=(0.08, 0.95),
    offset_frac=(0.0, 0.25),
    edge_frac=(0.0, 0.10),
    focus=(20.0, 20000.0),
    brightness=(60.0, 225.0),
    clipped_frac=(0.0, 0.15),
    od_hematoxylin=(0.02, 0.25),
    od_eosin=(0.0, 0.15),
    background_frac=(0.0, 0.02),
)


def quality_summary(ranges: QualityRanges | None) -> str:
    """What ``info`` and ``card`` say about a model's quality ranges (None: the model predates QC)."""
    if ranges is None:
        return "defaults (model predates QC)"
    return ranges.summary()


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decode(name: str, text: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A base64 float32 array of exactly ``shape``; anything else is a CheckpointError."""
    if not isinstance(text, str):
        raise CheckpointError(f"ood {name} must be base64 text, got {type(text).__name__}")
    expected = 4 * math.prod(shape)
    if len(text) > 4 * ((expected + 2) // 3):  # refuse before decoding a hostile string
        raise CheckpointError(f"ood {name} is longer than its shape {shape} needs")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"ood {name} is not base64: {exc}") from exc
    if len(raw) != expected:
        raise CheckpointError(f"ood {name} holds {len(raw)} bytes; shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def _frozen(name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float32)  # a copy: the caller's array may change later
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"ood {name} must be numbers: {exc}") from exc
    if array.ndim != ndim or not np.isfinite(array).all():
        raise CheckpointError(f"ood {name} must be a finite {ndim}-d array, got shape {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class OodModel:
    """A compact out-of-distribution model of the graph's ``embedding`` (PCA + Mahalanobis).

    ``score(x)^2 = sum_i (c_i . (x - mean))^2 / variances_i + |residual|^2 / residual_var``, where
    the residual is the part of ``x - mean`` off the ``k`` components (the term is left out when
    ``residual_var`` is 0). A cell scoring above ``threshold`` (the conformal ``percentile`` of
    the calibration cells' out-of-fold scores) is flagged. Computed by :func:`edgeleuk.quality.ood_scores`.

    Attributes:
        mean: float32 ``[dim]`` mean embedding of the calibration cells.
        components: float32 ``[k, dim]`` orthonormal principal directions (k <= 32).
        variances: float32 ``[k]`` variance along each component (> 0).
        residual_var: Mean squared residual norm of the calibration cells (0 = unused).
        threshold: Score above which a cell is flagged.
        percentile: Percentile of the calibration scores the threshold sits at.
        n_cells: Calibration cells fitted on.
        dim: Embedding width.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_var: float
    threshold: float
    percentile: float
    n_cells: int
    dim: int

    def __post_init__(self) -> None:
        """Refuse shapes that disagree, non-finite numbers and sizes past the budget."""
        if not _is_count(self.dim) or self.dim > MAX_OOD_DIM:
            raise CheckpointError(f"ood dim must be a whole number in 1..{MAX_OOD_DIM}, got {self.dim!r}")
        for name, ndim in (("mean", 1), ("components", 2), ("variances", 1)):
            object.__setattr__(self, name, _frozen(name, getattr(self, name), ndim))
        k = self.components.shape[0]
        if not 1 <= k <= MAX_OOD_COMPONENTS or k > self.dim:
            raise CheckpointError(f"ood needs 1..{min(MAX_OOD_COMPONENTS, self.dim)} components, got {k}")
        if self.mean.shape != (self.dim,) or self.components.shape != (k, self.dim):
            raise CheckpointError(
                f"ood shapes disagree: mean {self.mean.shape}, components {self.components.shape}, dim {self.dim}"
            )
        if self.variances.shape != (k,) or not (self.variances > 0).all():
            raise CheckpointError(f"ood variances must be {k} positive numbers, got shape {self.variances.shape}")
        for name, low in (("residual_var", 0.0), ("threshold", 0.0)):
            if not _is_real(getattr(self, name)) or getattr(self, name) < low:
                raise CheckpointError(f"ood {name} must be a finite number >= {low}, got {getattr(self, name)!r}")
        if not _is_real(self.percentile) or not 0.0 < self.percentile <= 100.0:
            raise CheckpointError(f"ood percentile must lie in (0, 100], got {self.percentile!r}")
        if not _is_count(self.n_cells):
            raise CheckpointError(f"ood n_cells must be a whole number >= 1, got {self.n_cells!r}")
        object.__setattr__(self, "residual_var", float(self.residual_var))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "percentile", float(self.percentile))

    @property
    def k(self) -> int:
        """Number of principal components kept."""
        return int(self.components.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OodModel):
            return NotImplemented
        arrays = ("mean", "components", "variances")
        scalars = ("residual_var", "threshold", "percentile", "n_cells", "dim")
        return (all(getattr(self, n) == getattr(other, n) for n in scalars)
                and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in arrays))

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict, arrays as base64 little-endian float32.

        Raises:
            CheckpointError: The serialised model exceeds :data:`MAX_OOD_CHARS`.
        """
        d = {
            "mean": _encode(self.mean), "components": _encode(self.components),
            "variances": _encode(self.variances), "residual_var": self.residual_var,
            "threshold": self.threshold, "percentile": self.percentile,
            "n_cells": self.n_cells, "dim": self.dim, "k": self.k,
        }
        size = len(json.dumps(d))
        if size > MAX_OOD_CHARS:
            raise CheckpointError(f"the OOD model takes {size} characters; at most {MAX_OOD_CHARS} are stored")
        return d

    @classmethod
    def from_dict(cls, d: Any) -> OodModel:
        """Inverse of :meth:`to_dict`; unknown or missing keys, bad shapes and oversize are errors."""
        if not isinstance(d, dict):
            raise CheckpointError(f"ood must be a JSON object, got {type(d).__name__}")
        keys = {f.name for f in dataclasses.fields(cls)} | {"k"}
        if set(d) != keys:
            extra, missing = sorted(set(d) - keys), sorted(keys - set(d))
            raise CheckpointError(f"ood keys wrong: unknown {extra}, missing {missing}")
        dim, k = d["dim"], d["k"]
        if not _is_count(dim) or dim > MAX_OOD_DIM or not _is_count(k) or k > MAX_OOD_COMPONENTS:
            raise CheckpointError(f"ood dim {dim!r} or k {k!r} out of bounds")
        size = len(json.dumps(d))
        if size > MAX_OOD_CHARS:
            raise CheckpointError(f"the OOD model takes {size} characters; at most {MAX_OOD_CHARS} are read")
        return cls(
            mean=_decode("mean", d["mean"], (dim,)),
            components=_decode("components", d["components"], (k, dim)),
            variances=_decode("variances", d["variances"], (k,)),
            residual_var=d["residual_var"], threshold=d["threshold"], percentile=d["percentile"],
            n_cells=d["n_cells"], dim=dim,
        )

    def summary(self) -> str:
        """One line for ``info`` and the card."""
        return (f"PCA {self.k} of {self.dim} dims + Mahalanobis"
                f"{' + residual' if self.residual_var > 0 else ''}; flagged above {self.threshold:.3g} "
                f"(percentile {self.percentile:g} of {self.n_cells} calibration cells)")


def ood_summary(ood: OodModel | None) -> str:
    """What ``info`` and ``card`` say about a model's OOD model (None: not calibrated for it)."""
    if ood is None:
        return "none (not calibrated with embeddings; no ood_score)"
    return ood.summary()
