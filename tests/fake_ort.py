"""A stand-in ``onnxruntime`` module for testing the ``cuda`` backend on machines without a GPU.

It records what the backend asks for (providers and their options, ``disable_fallback``,
``preload_dlls``) and starts only the providers a test says would start, as ONNX Runtime
does when a provider's libraries are missing: the session then quietly runs on the rest.
Install it with :func:`install` (``sys.modules["onnxruntime"]``, undone by monkeypatch).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass
class FakeArg:
    name: str
    type: str = "tensor(uint8)"
    shape: tuple = ("N", 450, 450, 3)


class FakeSession:
    """What ``InferenceSession`` returns: the providers that started, and what it was asked."""

    def __init__(self, ort: FakeOrt, source: Any, so: Any, providers: list[Any], **kwargs: Any) -> None:
        self.asked = list(providers)
        self.kwargs = kwargs
        self.fallback_disabled = False
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.providers = [n for n in names if n in ort.starts]
        ort.sessions.append(self)
        ort.events.append("session")

    def options_of(self, provider: str) -> dict[str, str]:
        """The options the session was given for ``provider`` ({} when given none)."""
        for entry in self.asked:
            if isinstance(entry, tuple) and entry[0] == provider:
                return dict(entry[1])
        return {}

    def disable_fallback(self) -> None:
        self.fallback_disabled = True

    def get_providers(self) -> list[str]:
        return self.providers

    def get_inputs(self) -> list[FakeArg]:
        return [FakeArg("image")]


class FakeSessionOptions:
    intra_op_num_threads = 0
    inter_op_num_threads = 0


class FakeOrt(types.ModuleType):
    """``onnxruntime`` with the given available providers, of which only ``starts`` start.

    Args:
        available: What ``get_available_providers()`` lists (the wheel's build).
        starts: What a session really gets (None: everything available).
        preload: Give the module ``preload_dlls`` (onnxruntime 1.21 on).
    """

    def __init__(self, available: list[str], starts: list[str] | None = None, preload: bool = True) -> None:
        super().__init__("onnxruntime")
        self.__version__ = "1.31.1"
        self.cuda_version = "13.0"
        self.available = list(available)
        self.starts = list(available if starts is None else starts)
        self.sessions: list[FakeSession] = []
        self.events: list[str] = []
        self.SessionOptions = FakeSessionOptions
        if preload:
            self.preload_dlls = lambda **kwargs: self.events.append("preload_dlls")

    def get_available_providers(self) -> list[str]:
        return self.available

    def InferenceSession(self, source: Any, so: Any = None, providers: Any = None, **kwargs: Any) -> FakeSession:  # noqa: N802 - ORT's name
        return FakeSession(self, source, so, providers or [], **kwargs)


def install(monkeypatch: pytest.MonkeyPatch, ort: FakeOrt) -> FakeOrt:
    """Make ``import onnxruntime`` return ``ort`` for the rest of the test."""
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    return ort
