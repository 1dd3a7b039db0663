"""The exported graph's contract: one torch-free definition of its names, dtypes and shapes.

Export writes graphs that obey it, every runtime backend feeds and reads them by these
names, ``Classifier.load`` checks a loaded graph against it, and ``info`` prints it.
"""

from __future__ import annotations

from typing import Any

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


def input_shape(size: int) -> list[Any]:
    """The input's shape with a symbolic batch: ``["N", size, size, 3]``."""
    return ["N", size, size, CHANNELS]


def contract_record(size: int) -> dict[str, Any]:
    """The graph's inputs and outputs as recorded in the export record, for people and tools."""
    return {
        "input": {"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": input_shape(size), "layout": INPUT_LAYOUT,
                  "color": INPUT_COLOR},
        "outputs": {name: {"dtype": OUTPUT_DTYPE, "shape": ["N"]} for name in OUTPUT_NAMES},
    }
