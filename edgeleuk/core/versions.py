"""Versions of the libraries that make and run a model, read from package metadata (nothing imported).

``export`` records them in the model file and ``edgeleuk card`` sets them beside what is
installed where the card is written (edgeleuk's own version is ``edgeleuk.__version__``: the code
running, which a checkout may hold apart from the installed copy). Some libraries ship under more than one distribution
name (the GPU build of ONNX Runtime): the first one installed counts.
"""

from __future__ import annotations

from importlib import metadata

#: Library -> the distributions that provide it.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "timm": ("timm",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
}


def library_version(name: str) -> str | None:
    """The installed version of a library in :data:`LIBRARIES` (or any distribution), None if absent."""
    for dist in LIBRARIES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions(names: tuple[str, ...] = tuple(LIBRARIES)) -> dict[str, str | None]:
    """``{library: version or None}`` for ``names``."""
    return {name: library_version(name) for name in names}
