"""Safe reading of PyTorch weight files: the one place that calls ``torch.load``.

Every ``.pt``/``.pth`` the toolkit opens (edgeleuk checkpoints, the paper's
``model.pt``, a local pretrained state dict, the trainer's ``last.pt``) loads
with ``weights_only=True``: a pickle that carries code is refused with a clear
error. A leaf module: ``checkpoint`` and ``model`` both build on it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from edgeleuk.core.errors import CheckpointError

#: The first torch whose ``weights_only=True`` cannot be bypassed (CVE-2025-32434).
SAFE_LOAD_TORCH = (2, 6)


def _torch_release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string such as ``2.6.0+cpu``."""
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and a clear error for code-carrying pickles.

    Refuses torch before 2.6, whose ``weights_only=True`` could be bypassed (CVE-2025-32434):
    the package floor says so too, but a machine may carry an older torch installed by hand.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if _torch_release(torch.__version__) < SAFE_LOAD_TORCH:
        raise CheckpointError(
            f"refusing to load {path} with torch {torch.__version__}: before 2.6, weights_only=True could "
            "be bypassed (CVE-2025-32434); pip install 'torch>=2.6'"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain weights file (weights_only=True rejected it: "
            f"{str(exc).splitlines()[0]}). Only load pickles you trust; re-save the state dict alone."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A bare state dict from a ``.pt``/``.pth`` file, loaded with ``weights_only=True``.

    A ``{"state_dict": ...}`` wrapper, as many training scripts save, is unwrapped.

    Raises:
        CheckpointError: Missing file, unsafe pickle, or no state dict inside.
    """
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return obj
