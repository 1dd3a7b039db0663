"""Export profiles: what to build (precision, format) and how hard to gate it.

A profile is a small TOML file (packaged ones in ``edgeleuk/configs/profiles``,
listed by ``edgeleuk profiles``) loaded into the frozen
:class:`ExportProfile`; unknown keys and impossible combinations are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeleuk.core.config import DEFAULT_EXPORT_PROFILE, from_mapping, load_toml, resolve_named
from edgeleuk.core.errors import ConfigError
from edgeleuk.evaluation.parity import THRESHOLD_KEYS, Thresholds
from edgeleuk.io.formats import FORMATS, ModelFormat
from edgeleuk.runtime.registry import BACKENDS

MIN_INT8_CALIB = 300  # the INT8 calibration floor: a few hundred real training cells
DEFAULT_PROFILE = DEFAULT_EXPORT_PROFILE


@dataclass(frozen=True)
class ExportProfile:
    """One way to export a checkpoint.

    Attributes:
        name: Short name recorded in the model file.
        description: One line for humans.
        precision: ``fp32``, ``fp16`` (weights and activations; uint8 in, float32 out)
            or ``int8`` (NNCF post-training quantization).
        format: A model format of :mod:`edgeleuk.io.formats`: ``onnx`` or ``openvino`` (IR ``.xml``
            + ``.bin``; required for int8); the exporter refuses one it has no writer for.
        opset: ONNX opset of the exported graph.
        gate_engines: Runtime backends the parity gate runs the file on, opened as
            ``predict`` opens them (``cpu``, ``cuda``, ``openvino``: any registered
            backend that reads the format). One that cannot run here is recorded as
            skipped, with the reason.
        parity_n: Number of cells compared with the PyTorch reference.
        max_abs_logit_delta: Largest allowed |logit - reference logit|; None skips it.
        min_agreement: Smallest allowed fraction of cells with the reference's label.
        max_f1_drop: Largest allowed drop in weighted F1 (0..1) when labels are known;
            None skips it.
        batch_sizes: Batch sizes that must run and agree with each other.
        compute: Thresholds for running the file at a lower compute precision than it
            stores, keyed by that precision (``[compute.bf16]``: OpenVINO computing an
            fp32 file in bf16); ``bench`` gates such rows with them.
        calib_size: INT8 calibration images: training images NNCF gathers quantization
            statistics on (not ``edgeleuk calibrate``'s threshold; the TOML key keeps its name).
        allow_small_calib: Permit ``calib_size`` below 300 (tests and demos only; the
            model file records it).
        int8_preset: NNCF preset, ``performance`` (symmetric) or ``mixed``.
        accuracy_control: INT8 only: when the gate cells carry labels, quantize with
            ``nncf.quantize_with_accuracy_control`` (weighted F1 as the metric, floored by
            label agreement with the PyTorch reference; see ``exporting.int8_accuracy``),
            which keeps the layers that cost the most F1 in float. Without labels plain
            ``nncf.quantize`` runs and the model file says so.
        accuracy_control_n: Most labelled gate cells used as NNCF's validation set.
        accuracy_control_max_reverts: Most layer groups accuracy control may return to
            float (each costs one validation pass); the gate judges whatever results.
        accuracy_control_rank_n: Cells NNCF ranks layer groups on, once per group: the
            main cost of accuracy control when it has to restore (the cells whose label
            flipped first, then those that moved most).
        source_date_epoch: Fixed export time (Unix seconds) for byte-identical
            files; the ``SOURCE_DATE_EPOCH`` environment variable overrides it.
    """

    name: str
    description: str = ""
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    format: str = "onnx"
    opset: int = 17
    gate_engines: tuple[str, ...] = ("cpu",)
    parity_n: int = 16
    max_abs_logit_delta: float | None = None
    min_agreement: float = 1.0
    max_f1_drop: float | None = None
    batch_sizes: tuple[int, ...] = (1, 5)
    compute: dict[str, dict[str, float]] = field(default_factory=dict)
    calib_size: int = 0
    allow_small_calib: bool = False
    int8_preset: Literal["performance", "mixed"] = "performance"
    accuracy_control: bool = False
    accuracy_control_n: int = 200
    accuracy_control_max_reverts: int = 10
    accuracy_control_rank_n: int = 20
    source_date_epoch: int | None = None

    def __post_init__(self) -> None:
        where = f"export profile {self.name!r}"
        if self.format not in FORMATS:
            raise ConfigError(f"{where}: format {self.format!r}; choose from {list(FORMATS)}")
        if self.precision == "int8" and self.format != "openvino":
            raise ConfigError(f"{where}: int8 is produced as an OpenVINO IR; set format = \"openvino\"")
        if self.precision == "fp16" and self.format != "onnx":
            raise ConfigError(f"{where}: fp16 is an ONNX (CUDA) profile; set format = \"onnx\"")
        if self.precision == "int8" and self.calib_size < MIN_INT8_CALIB and not self.allow_small_calib:
            raise ConfigError(
                f"{where}: calib_size = {self.calib_size}; INT8 needs >= {MIN_INT8_CALIB} calibration images "
                "(set allow_small_calib = true only for tests)"
            )
        if self.precision == "int8" and self.calib_size < 1:
            raise ConfigError(f"{where}: int8 needs calib_size >= 1")
        if not 13 <= self.opset <= 20:
            raise ConfigError(f"{where}: opset {self.opset} outside 13..20 (what the exported graph needs and "
                              "torch's TorchScript exporter writes)")
        self._check_gate_engines(where)
        if self.parity_n < max(self.batch_sizes, default=1) or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"{where}: parity_n must be >= every batch size, batch sizes >= 1")
        self.thresholds()  # min_agreement in (0, 1]
        for precision, table in self.compute.items():
            unknown = sorted(set(table) - set(THRESHOLD_KEYS)) if isinstance(table, dict) else [table]
            if unknown:
                raise ConfigError(f"{where}: [compute.{precision}] may hold {list(THRESHOLD_KEYS)}, "
                                  f"got {unknown}")
            self.thresholds(precision)
        if self.accuracy_control:
            self._check_accuracy_control(where)

    def _check_gate_engines(self, where: str) -> None:
        unknown = sorted(set(self.gate_engines) - set(BACKENDS))
        if unknown or not self.gate_engines:
            raise ConfigError(f"{where}: gate_engines {list(self.gate_engines)}; "
                              f"choose from {list(BACKENDS)}")
        fmt = self.model_format
        unfit = [e for e in self.gate_engines if fmt.name not in BACKENDS[e].reads]
        if unfit:
            able = [n for n, cls in BACKENDS.items() if fmt.name in cls.reads]
            raise ConfigError(f"{where}: {', '.join(unfit)} cannot read an {fmt.label}; "
                              f"gate it on {able}")

    def _check_accuracy_control(self, where: str) -> None:
        if self.precision != "int8":
            raise ConfigError(f"{where}: accuracy_control applies to int8 only; remove it or set precision = \"int8\"")
        if self.max_f1_drop is None or self.min_agreement >= 1.0:
            raise ConfigError(f"{where}: accuracy_control needs max_f1_drop and a min_agreement below 1 "
                              "(they are its target)")
        if min(self.accuracy_control_n, self.accuracy_control_max_reverts, self.accuracy_control_rank_n) < 1:
            raise ConfigError(f"{where}: accuracy_control_n, _max_reverts and _rank_n must be >= 1")

    @property
    def model_format(self) -> ModelFormat:
        """The model format this profile writes."""
        return FORMATS[self.format]

    @property
    def suffix(self) -> str:
        """Suffix of the main output path."""
        return self.model_format.suffix

    def thresholds(self, compute: str | None = None) -> Thresholds:
        """The parity thresholds, or those of its ``[compute.<precision>]`` table.

        Raises:
            ConfigError: A threshold out of range, or no table for ``compute``.
        """
        where = f"export profile {self.name!r}"
        if compute is None:
            return Thresholds.from_table(self.name, self.to_dict())
        if compute not in self.compute:
            raise ConfigError(f"{where} has no [compute.{compute}] thresholds")
        return Thresholds.from_table(f"{self.name} computed in {compute}", self.compute[compute])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gate_engines"] = list(self.gate_engines)
        d["batch_sizes"] = list(self.batch_sizes)
        d["compute"] = {k: dict(v) for k, v in self.compute.items()}
        return d

    def replace(self, **changes: Any) -> ExportProfile:
        return dataclasses.replace(self, **changes)


def load_profile(profile: str | Path | ExportProfile | dict | None = None) -> ExportProfile:
    """Resolve a profile given as an object, a mapping, a TOML path or a packaged name (``cpu-fp32``).

    Raises:
        ConfigError: No such file, unknown keys, or an impossible combination.
    """
    if isinstance(profile, ExportProfile):
        return profile
    if isinstance(profile, dict):
        return from_mapping(ExportProfile, profile, where="export profile")
    return load_toml(ExportProfile, resolve_named(profile or DEFAULT_PROFILE, "profiles"))
