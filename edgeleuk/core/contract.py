"""The exported graph's contract: one torch-free definition of its names, dtypes and shapes.

Export writes graphs that obey it, every runtime backend feeds and reads them by these
names, ``Classifier.load`` checks a loaded graph against it, and ``info`` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeleuk.core.errors import UsageError

INPUT_NAME = "image"
INPUT_DTYPE = "uint8"
INPUT_LAYOUT = "NHWC"
INPUT_COLOR = "RGB"
CHANNELS = 3
LOGIT = "logit"
PROB = "prob"
OUTPUT_NAMES = (LOGIT, PROB)
OUTPUT_DTYPE = "float32"
# The two JSON strings a model file carries (ONNX metadata_props, OpenVINO IR rt_info).
META_KEY = "edgeleuk.meta"
EXPORT_KEY = "edgeleuk.export"
# Staged TTA. The graph also outputs every view's logit ([N, V], in the order of ``views``),
# and holds the rotation indices it computes as an int64 initializer ``views`` (default
# 0..R-1). The file's own call never needs it; a runtime that wants a subset of the
# rotations turns that initializer into an input (edgeleuk.runtime.views).
VIEW_LOGITS = "view_logits"
VIEWS_NAME = "views"
VIEWS_DTYPE = "int64"
# Opt-in outputs, fetched only by callers that want them; graphs exported before
# them lack both and still load. ``embedding``: the pooled features averaged over the views
# computed, [N, D]. ``cam``: the class activation map, [N, crop, crop], in the upright frame,
# averaged over the views that show each pixel; for one view its mean plus the last linear
# layer's bias is that view's logit (exactly where the view shows every pixel).
EMBEDDING = "embedding"
CAM = "cam"
EXTRA_OUTPUTS = (EMBEDDING, CAM)
#: Each extra output's rank: [N, D] and [N, crop, crop].
EXTRA_RANKS = {EMBEDDING: 2, CAM: 3}


def crop_offset(size: int, crop: int) -> int:
    """Top/left offset of the centre crop the graph takes, rounded exactly as ``torchvision``'s ``center_crop``.

    Declared here for the graph (:mod:`edgeleuk.modeling.tta`) and for what draws on the crop
    (the heatmap overlays, whose ``cam`` covers exactly this square).
    """
    return round((size - crop) / 2.0)


def input_shape(size: int) -> list[Any]:
    """The input's shape with a symbolic batch: ``["N", size, size, 3]``."""
    return ["N", size, size, CHANNELS]


def check_input(images: np.ndarray, size: int, hint: str = "") -> None:
    """Raise :class:`UsageError` unless ``images`` is what the graph takes: uint8 RGB ``[N, size, size, 3]``.

    Args:
        images: The batch about to be fed (the runtime's arrays, the PyTorch reference's).
        size: The model's input side.
        hint: What the caller should do instead, appended to the message.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, CHANNELS):
        raise UsageError(
            f"expected uint8 RGB images [N, {size}, {size}, {CHANNELS}] (the model's input contract), "
            f"got {images.dtype} {list(images.shape)}" + (f"; {hint}" if hint else "")
        )


def contract_record(size: int) -> dict[str, Any]:
    """The graph's inputs and outputs as recorded in the export record, for people and tools."""
    return {
        "input": {"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": input_shape(size), "layout": INPUT_LAYOUT,
                  "color": INPUT_COLOR},
        "outputs": {**{name: {"dtype": OUTPUT_DTYPE, "shape": ["N"]} for name in OUTPUT_NAMES},
                    VIEW_LOGITS: {"dtype": OUTPUT_DTYPE, "shape": ["N", "V"]},
                    EMBEDDING: {"dtype": OUTPUT_DTYPE, "shape": ["N", "D"], "optional": True,
                                "what": "pooled features averaged over the views computed"},
                    CAM: {"dtype": OUTPUT_DTYPE, "shape": ["N", "crop", "crop"], "optional": True,
                          "what": "class activation map, upright, averaged over the views"}},
        "views": {"name": VIEWS_NAME, "dtype": VIEWS_DTYPE, "shape": ["V"], "default": "0..R-1",
                  "kind": "initializer (make it an input to run a subset of the rotations)"},
    }


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a loaded graph, as its engine reports it.

    Attributes:
        name: Tensor name.
        dtype: numpy-style element type (``uint8``, ``float32``...), whatever the engine calls it.
        shape: Dimensions; None for a dynamic one (a symbolic batch axis).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]


def _show(spec: TensorSpec) -> str:
    return f"{spec.name!r} {spec.dtype} [{', '.join('N' if d is None else str(d) for d in spec.shape)}]"


def extra_problems(outputs: Sequence[TensorSpec], crop: int | None = None) -> list[str]:
    """How the optional outputs a graph has (``embedding``, ``cam``) differ from the contract.

    Absent ones are no problem (a model exported before them); present ones must be float32
    of their rank, and ``cam``'s static sides, where the engine reports them, ``crop``.
    """
    problems = []
    for out in outputs:
        rank = EXTRA_RANKS.get(out.name)
        if rank is None:
            continue
        want = f"{out.name!r} {OUTPUT_DTYPE} [N, {'D' if rank == 2 else 'crop, crop'}]"
        sides = [d for d in out.shape[1:] if d is not None]
        if out.dtype != OUTPUT_DTYPE or len(out.shape) != rank:
            problems.append(f"output {_show(out)}, expected {want}")
        elif out.name == CAM and crop is not None and any(d != crop for d in sides):
            problems.append(f"output {_show(out)}, expected {out.name!r} {OUTPUT_DTYPE} [N, {crop}, {crop}]")
    return problems


def graph_problems(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], size: int,
                   crop: int | None = None) -> list[str]:
    """How a loaded graph's inputs and outputs differ from the contract (empty when it holds).

    Args:
        inputs: The graph's inputs, as the engine reports them.
        outputs: The graph's outputs.
        size: The input side the model's metadata declares.
        crop: The crop side the metadata declares (checks ``cam``'s sides); None: not checked.
    """
    problems = []
    # A runtime that opened the views entry (staged TTA) feeds the rotations as a second input.
    views = [i for i in inputs if i.name == VIEWS_NAME]
    inputs = [i for i in inputs if i.name != VIEWS_NAME]
    problems += [f"input {_show(v)}, expected {VIEWS_NAME!r} {VIEWS_DTYPE} [V]" for v in views
                 if v.dtype != VIEWS_DTYPE or len(v.shape) != 1]
    want_in = f"{INPUT_NAME!r} {INPUT_DTYPE} [N, {size}, {size}, {CHANNELS}]"
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append(f"inputs {[_show(i) for i in inputs]}, expected one input {want_in}")
    else:
        image = inputs[0]
        wrong_shape = len(image.shape) != 4 or tuple(image.shape[1:]) != (size, size, CHANNELS)
        if image.dtype != INPUT_DTYPE or wrong_shape:
            problems.append(f"input {_show(image)}, expected {want_in}")
        elif image.shape[0] is not None:
            problems.append(f"input {_show(image)} has a fixed batch axis; it must be dynamic (N)")
    by_name = {o.name: o for o in outputs}
    for name in OUTPUT_NAMES:
        out = by_name.get(name)
        if out is None:
            problems.append(f"no output {name!r} (outputs: {sorted(by_name)})")
        elif out.dtype != OUTPUT_DTYPE or len(out.shape) != 1:
            problems.append(f"output {_show(out)}, expected {name!r} {OUTPUT_DTYPE} [N]")
    return problems + extra_problems(outputs, crop)
