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

from edgeleuk.errors import CheckpointError


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` and a clear error for code-carrying pickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
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
