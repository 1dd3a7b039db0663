"""What every inference backend declares and implements (torch-free).

A backend module declares, on its :class:`Backend` subclass, everything the rest
of the package needs to know about it: its ``name``, the model kinds it
``reads``, its ``auto_rank`` (``auto`` tries lower ranks first), its own
``Options`` record and its ``availability`` check. ``runtime.registry`` derives
the backend table, ``auto`` order, readers per format, CLI choices and flags, bench rows
and export gate engines from these declarations.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeleuk.core.contract import EXTRA_OUTPUTS, TensorSpec
from edgeleuk.core.errors import UsageError
from edgeleuk.io.formats import ModelFormat, format_of

if TYPE_CHECKING:
    from edgeleuk.runtime.staged import StageChoice


#: What :meth:`Backend.run_extras` returns: ``(logits, probs or view logits, {extra name: array})``.
ExtrasResult = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


def option(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A field of a backend's options record; ``help`` and ``choices`` become its CLI flag."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class OptionsRecord:
    """Base of every backend's own options record: checks fields declared with ``choices``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise UsageError(f"{f.name} must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class NoOptions(OptionsRecord):
    """The record of a backend that needs nothing beyond the generic options."""


@dataclass(frozen=True)
class BackendOptions:
    """What the user asked of backends: generic settings plus each backend's own record.

    Attributes:
        threads: Intra-op threads for whichever backend runs; None keeps its default.
        engine: Backend name -> that backend's ``Options`` record; a backend missing
            here runs with its record's defaults (``auto`` may try several).
        views_input: Open the graph's ``views`` entry so :meth:`Backend.run_views` can
            compute a subset of the rotations (staged TTA; see ``edgeleuk.runtime.views``).
        extras: The graph's optional outputs to open (of ``edgeleuk.core.contract.EXTRA_OUTPUTS``:
            ``embedding``, ``cam``) for :meth:`Backend.run_extras`. Those not asked for are left
            out of what the engine compiles, so the default call does not compute them.
    """

    threads: int | None = None
    engine: Mapping[str, Any] = field(default_factory=dict)
    views_input: bool = False
    extras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.extras) - set(EXTRA_OUTPUTS))
        if unknown:
            raise UsageError(f"unknown extra outputs {unknown}; the graph's optional outputs are {list(EXTRA_OUTPUTS)}")

    def of(self, backend: type[Backend]) -> Any:
        """``backend``'s own record (its defaults when none was given)."""
        record = self.engine.get(backend.name)
        return backend.Options() if record is None else record


@dataclass(frozen=True)
class BenchVariant:
    """A further bench row a backend offers for a file, beside the plain one.

    Attributes:
        tag: Row label after the backend name (``bf16``, ``int8+bf16``).
        gate_precision: Compute precision whose thresholds gate the row; None: the file's.
        options: Fields of the backend's ``Options`` record for this row.
        needs: Machine feature the row needs (a key of the bench machine's features).
        why_not: Why the row cannot run when the feature is missing.
    """

    tag: str
    gate_precision: str | None
    options: Mapping[str, Any]
    needs: str | None = None
    why_not: str = ""


@dataclass(frozen=True)
class ThroughputMode:
    """Cells per second in an engine's own throughput mode.

    Attributes:
        mode: What ran, e.g. ``OpenVINO THROUGHPUT hint, 2 async requests``.
        cells_per_s: Cells per second.
        cells: Cells processed while timing.
    """

    mode: str
    cells_per_s: float
    cells: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BackendInfo:
    """What actually runs, read back from the engine after loading.

    Attributes:
        name: Backend key (``cuda``, ``openvino``, ``cpu``).
        engine: Library and version, e.g. ``onnxruntime 1.20.1``.
        providers: Providers or execution devices in use, as the engine reports them.
        precision: Inference precision in effect.
        details: Anything else worth printing (threads, hint, reason for auto choice).
    """

    name: str
    engine: str
    providers: tuple[str, ...]
    precision: str
    details: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """A loaded model on one engine: uint8 [N, 450, 450, 3] RGB in, logits and probabilities out.

    Class attributes (the declaration the registry derives everything from):
        name: Key users type (``--backend NAME``) and profiles list as gate engines.
        reads: Names of the model formats (:data:`edgeleuk.io.formats.FORMATS`) this backend opens.
        device: ``cpu`` or ``gpu``: what one instance computes on (``--cluster`` gives a worker
            of a ``gpu`` backend one GPU). A backend reads only formats that run on its device.
        auto_rank: Order in which ``auto`` tries backends, lowest first; None: only when named
            (``remote``: ``auto`` never moves inference to another machine).
        Options: This backend's own options record (an :class:`OptionsRecord`).
        libraries: Distributions whose installed versions ``bench`` records for it.
    """

    name: ClassVar[str] = "?"
    reads: ClassVar[tuple[str, ...]] = ()
    device: ClassVar[str] = "cpu"
    auto_rank: ClassVar[int | None] = 100
    Options: ClassVar[type[OptionsRecord]] = NoOptions
    libraries: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> str | None:
        """None when this backend can run here, else why not and the fix."""

    @classmethod
    def bench_variants(cls, precision: str) -> tuple[BenchVariant, ...]:
        """Extra bench rows for a file stored in ``precision`` (none by default)."""
        return ()

    @classmethod
    def model_format(cls, path: Path) -> ModelFormat:
        """The format of the model at ``path``, which this backend must read.

        Raises:
            UsageError: A missing model, a format this backend does not read, or missing companions.
        """
        fmt = format_of(path)
        if fmt.name not in cls.reads:
            raise UsageError(f"{Path(path).name}: the {cls.name} backend reads {' or '.join(cls.reads)} models only")
        return fmt

    @abc.abstractmethod
    def __init__(self, model_path: Path, options: BackendOptions) -> None: ...

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch.

        Args:
            batch: uint8 array [N, H, W, 3], RGB, H and W as in the model's contract.

        Returns:
            ``(logits, probs)``, each float32 [N].
        """

    def run_views(self, batch: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch on the listed rotations only (backend opened with ``views_input``).

        Args:
            batch: As for :meth:`run`.
            views: int64 rotation indices, e.g. ``[0, 4]``.

        Returns:
            ``(logits, view_logits)``: the mean logit over ``views`` [N], and each
            view's logit [N, len(views)] in the order of ``views``.
        """
        raise UsageError(f"the {self.name} backend cannot compute a subset of the rotations (staged TTA)")

    #: The extra outputs this backend opened and the graph has (a subset of ``options.extras``);
    #: set by backends that fetch extras, empty for the others.
    extras: tuple[str, ...] = ()

    def run_extras(self, batch: np.ndarray, names: tuple[str, ...]) -> ExtrasResult:
        """:meth:`run` plus the named extra outputs (each opened: in :attr:`extras`).

        Returns:
            ``(logits, probs, {name: float32 array with N rows})``.

        Raises:
            UsageError: A name this backend did not open (or cannot fetch).
        """
        if not names:
            return (*self.run(batch), {})
        raise UsageError(f"the {self.name} backend cannot fetch the outputs {list(names)}")

    def run_views_extras(self, batch: np.ndarray, views: np.ndarray,
                         names: tuple[str, ...]) -> ExtrasResult:
        """:meth:`run_views` plus the named extra outputs over the listed rotations only.

        Returns:
            ``(logits, view_logits, {name: float32 array with N rows})``.
        """
        if not names:
            return (*self.run_views(batch, views), {})
        raise UsageError(f"the {self.name} backend cannot fetch the outputs {list(names)} of some rotations")

    def _unopened(self, names: tuple[str, ...]) -> None:
        """Raise :class:`UsageError` for names not in :attr:`extras`."""
        missing = [n for n in names if n not in self.extras]
        if missing:
            raise UsageError(f"the {self.name} backend did not open the outputs {missing} (opened: "
                             f"{list(self.extras)}); load it with extras={tuple(names)!r} on a model that has them")

    @abc.abstractmethod
    def info(self) -> BackendInfo:
        """What actually runs (providers/devices read back after loading)."""

    def metadata(self) -> dict[str, str]:
        """String metadata stored in the loaded model file (ONNX metadata_props, IR rt_info).

        Lets callers read ``edgeleuk.meta`` without parsing a large model a second time.
        """
        return {}

    def graph_io(self) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
        """``(inputs, outputs)`` of the loaded graph as the engine reports them.

        :class:`edgeleuk.runtime.classifier.Classifier` checks them against
        :mod:`edgeleuk.core.contract` before any image is read. None: this backend cannot say.
        """
        return None

    def throughput_mode(self, cells: np.ndarray, budget_s: float, batch: int,
                        staged: StageChoice | None = None) -> ThroughputMode | None:
        """Cells/s in the engine's own throughput mode, for ``bench``; None when it has none.

        Args:
            cells: uint8 cells to cycle through.
            budget_s: Seconds to keep timing.
            batch: Largest batch size bench tries.
            staged: Run staged TTA with this choice (backend opened with ``views_input``);
                None runs the file's own full-TTA call. Engines without a staged
                throughput mode return None for it.
        """
        return None
