"""Open an exported graph's ``views`` entry, so an engine computes only some of the rotations.

An exported file holds the rotation indices it computes as an int64 initializer
``views`` (0..R-1) and outputs every view's logit (``view_logits``). Its own call
(``image`` in) is the full rotation TTA. Staged TTA needs to choose the rotations
per call, so the runtime turns that initializer into a graph input before the
engine compiles the model:

* ONNX Runtime: the ``views`` initializer moves into the graph's inputs (loaded
  with ``onnx``, handed to the session as bytes). Leaving it as an initializer
  *and* listing it as an input would also work (ONNX's overridable default), but
  then ONNX Runtime warns on every load and cannot fold the index for the plain
  call, so the file keeps it as a plain initializer;
* OpenVINO: its ONNX reader turns every initializer into a ``Constant``, even one
  listed as an input, and an IR has no defaults at all. The ``Constant`` named
  ``views`` (kept by NNCF and by ``save_model``) is replaced by a ``Parameter``.

Either way the opened model needs ``views`` on every call: the backend feeds
0..R-1 for the full result. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeleuk.core.contract import EXTRA_OUTPUTS, VIEW_LOGITS, VIEWS_NAME
from edgeleuk.core.errors import UsageError


class NoViewsEntry(UsageError):
    """The model file has no ``views`` entry: it was exported before staged TTA existed."""


def _no_views_entry(path: Path | str, what: str) -> NoViewsEntry:
    return NoViewsEntry(
        f"{path}: {what}; this model was exported before staged TTA existed. Re-export it with "
        "`edgeleuk export` to run --tta staged"
    )


def all_views(rotations: int) -> np.ndarray:
    """The ``views`` value of the full TTA: every rotation, in order."""
    return np.arange(rotations, dtype=np.int64)


def _import_onnx(why: str) -> Any:
    try:
        import onnx  # lazy: an optional dependency ('edgeleuk[cpu]'/'[gpu]'), only ORT backends need it
    except ImportError as exc:
        raise UsageError(f"{why} on ONNX Runtime needs the onnx package: pip install 'edgeleuk[cpu]'") from exc
    return onnx


def onnx_views_source(path: Path, extras: tuple[str, ...]) -> tuple[bytes, np.ndarray]:
    """The model for an ONNX Runtime session with the views entry open and only the ``extras`` asked for.

    The graph is parsed here anyway, so the extra outputs not asked for are cut off too (with
    the nodes only they need). The plain call opens the file as it is (no ``onnx`` import): there
    the extras' nodes run unfetched, which costs about 0.3 % of the tiny network's time and less
    of the paper's (ONNX Runtime's profiler, docs/model-file.md).

    Returns:
        ``(model bytes, the views initializer's value)``.

    Raises:
        NoViewsEntry: The graph has no views entry.
        UsageError: The ``onnx`` package is missing.
    """
    proto = _import_onnx("staged TTA").load(str(path))
    default = expose_views(proto, path)
    prune_outputs(proto, {o.name for o in proto.graph.output if o.name in EXTRA_OUTPUTS} - set(extras))
    return proto.SerializeToString(), default


def prune_outputs(proto: Any, drop: set[str]) -> None:
    """Remove the graph outputs named in ``drop``, the nodes only they need and their initializers, in place."""
    if not drop:
        return
    graph = proto.graph
    kept = [o for o in graph.output if o.name not in drop]
    del graph.output[:]
    graph.output.extend(kept)
    needed = {o.name for o in kept}
    live = []
    for node in reversed(graph.node):  # a valid graph lists its nodes in topological order
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    used = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def expose_views(proto: Any, path: Path | str) -> np.ndarray:
    """Move the ``views`` initializer of an ONNX ``proto`` to its inputs, in place; return its value.

    Raises:
        NoViewsEntry: The graph has no ``views`` initializer or no ``view_logits`` output.
    """
    import onnx  # lazy: see _import_onnx (already imported by the caller)

    graph = proto.graph
    if VIEW_LOGITS not in {o.name for o in graph.output}:
        raise _no_views_entry(path, f"no '{VIEW_LOGITS}' output")
    found = [t for t in graph.initializer if t.name == VIEWS_NAME]
    if not found:
        raise _no_views_entry(path, f"no '{VIEWS_NAME}' initializer")
    default = onnx.numpy_helper.to_array(found[0]).astype(np.int64)
    graph.initializer.remove(found[0])
    graph.input.append(onnx.helper.make_tensor_value_info(VIEWS_NAME, onnx.TensorProto.INT64, ["V"]))
    return default


def ov_keep_extras(model: Any, extras: tuple[str, ...]) -> tuple[str, ...]:
    """Remove the results of the extra outputs not in ``extras`` from an ``openvino.Model``, in place.

    OpenVINO computes every result; without them the compiled model holds none of their nodes.

    Returns:
        The extras the model still outputs.
    """
    kept = []
    for result in list(model.get_results()):
        names = result.output(0).get_names() | result.input_value(0).get_names()
        extra = next((n for n in EXTRA_OUTPUTS if n in names), None)
        if extra is None:
            continue
        if extra in extras:
            kept.append(extra)
        else:
            model.remove_result(result)
    model.validate_nodes_and_infer_types()
    return tuple(n for n in EXTRA_OUTPUTS if n in kept)


def ov_expose_views(model: Any) -> np.ndarray:
    """Replace the ``Constant`` named ``views`` of an ``openvino.Model`` by a ``Parameter``, in place.

    Returns:
        The constant's value: what gives the full result.

    Raises:
        NoViewsEntry: No such constant, or no ``view_logits`` output.
    """
    import openvino as ov  # lazy: importing edgeleuk.runtime loads no engine (runtime/__init__)

    if VIEW_LOGITS not in {name for out in model.outputs for name in out.get_names()}:
        raise _no_views_entry("model", f"no '{VIEW_LOGITS}' output")
    const = next((op for op in model.get_ordered_ops()
                  if op.get_type_name() == "Constant" and op.get_friendly_name() == VIEWS_NAME), None)
    if const is None:
        raise _no_views_entry("model", f"no '{VIEWS_NAME}' constant")
    default = np.asarray(const.get_data(), np.int64).copy()
    # The constant leaves the graph: drop its names first, so no two tensors answer to "views".
    const.output(0).get_tensor().set_names(set())
    const.set_friendly_name(f"{VIEWS_NAME}_default")
    param = ov.opset13.parameter(ov.PartialShape([-1]), ov.Type.i64, name=VIEWS_NAME)
    param.output(0).get_tensor().set_names({VIEWS_NAME})
    for target in list(const.output(0).get_target_inputs()):
        target.replace_source_output(param.output(0))
    model.add_parameters([param])
    model.validate_nodes_and_infer_types()
    return default
