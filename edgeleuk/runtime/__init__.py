"""Torch-free inference: backends (ONNX Runtime CPU/CUDA, OpenVINO) and the Classifier API.

Importing this package loads no engine; ONNX Runtime and OpenVINO are imported
when a backend is opened.
"""

from __future__ import annotations

from edgeleuk.runtime.base import Backend, BackendInfo, BackendOptions
from edgeleuk.runtime.registry import BACKENDS, backend_options, choose_backend, open_backend

__all__ = ["BACKENDS", "Backend", "BackendInfo", "BackendOptions", "backend_options", "choose_backend",
           "open_backend"]
