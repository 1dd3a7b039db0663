"""One checkpoint format for the whole toolkit, and import of the paper's ``model.pt``.

A checkpoint is a ``torch.save`` of a plain dict: ``format``, ``meta`` (a
:class:`~edgeleuk.core.meta.ModelMeta` as a JSON-able dict) and ``state_dict``. It
loads with ``weights_only=True`` through :mod:`edgeleuk.modeling.weights`: a pickle that
carries code is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.meta import PAPER_ARCH, ModelMeta, Preprocess
from edgeleuk.io.atomic import atomic_path
from edgeleuk.io.files import sha256_file
from edgeleuk.modeling.model import create_model
from edgeleuk.modeling.weights import load_state_dict, safe_torch_load

FORMAT = "edgeleuk.checkpoint/1"  # the on-disk format name, not the module path: keep it


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        meta: The model's metadata (preprocessing, threshold, provenance).
        state_dict: Network weights.
        path: File it came from, if any.
    """

    meta: ModelMeta
    state_dict: dict[str, torch.Tensor]
    path: Path | None = None

    def build_model(self) -> nn.Module:
        """The network with these weights, in eval mode."""
        model = create_model(self.meta.arch)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"weights do not fit {self.meta.arch}: {exc}") from exc
        return model.eval()


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], meta: ModelMeta) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: Destination file.
        state_dict: Network weights (``model.state_dict()``).
        meta: Metadata to store with them.
    """
    payload = {
        "format": FORMAT,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: Missing file, unsafe pickle or not an edgeleuk checkpoint
            (the paper's raw ``model.pt`` needs ``edgeleuk import-checkpoint`` first).
    """
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an edgeleuk checkpoint; for the paper's model.pt run "
            "`edgeleuk import-checkpoint model.pt OUT` first"
        )
    return Checkpoint(meta=ModelMeta.from_dict(obj["meta"]), state_dict=obj["state_dict"], path=Path(path))


def convert_paper_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the paper code's DataParallel keys onto timm's ``legacy_seresnext50_32x4d``.

    ``module.layer0.conv1.weight`` becomes ``layer0.conv1.weight`` and the head
    ``module.cls.2.{weight,bias}`` becomes ``last_linear.{weight,bias}``.
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("cls.2."):
            key = "last_linear." + key.removeprefix("cls.2.")
        out[key] = value
    return out


def import_paper_checkpoint(src: str | Path, out: str | Path) -> Checkpoint:
    """Convert the paper's published ``model.pt`` into an edgeleuk checkpoint.

    The paper's code fed ``ToTensor()`` output (0..1, no mean/std), which is what
    the default :class:`Preprocess` records.

    Raises:
        CheckpointError: Unsafe pickle, or keys that do not match the architecture.
    """
    state = load_state_dict(src)
    meta = ModelMeta(
        arch=PAPER_ARCH,
        preprocess=Preprocess(),
        extra={"imported_from": Path(src).name, "source_sha256": sha256_file(src)},
    )
    ckpt = Checkpoint(meta=meta, state_dict=convert_paper_state_dict(state))
    ckpt.build_model()  # strict load: fails with the list of mismatching keys
    save_checkpoint(out, ckpt.state_dict, meta)
    return load_checkpoint(out)
