"""Rotation test-time augmentation as one gather, and the torch wrapper that exports it.

The paper averages the logits of 8 rotated views of the 300x300 centre crop,
each made with ``torchvision.transforms.functional.rotate`` on a PIL image
(nearest neighbour, zero fill). Nearest-neighbour rotation only moves pixels,
so each view is a fixed permutation of crop pixels plus zeros. We find that
permutation by rotating an *index image* with the very same PIL call, which
makes the exported graph bit-exact with the PIL pipeline.

The numpy/PIL part is torch-free; :class:`TTAClassifier` (an ``nn.Module``) is
built on first access so that importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from edgeleuk.core.meta import ModelMeta, Preprocess


def crop_offset(size: int, crop: int) -> int:
    """Top/left offset of a centre crop, rounded exactly as ``torchvision``'s ``center_crop``."""
    return round((size - crop) / 2.0)


def rotation_index_map(crop: int, angle: float) -> np.ndarray:
    """Where each pixel of a rotated ``crop x crop`` view comes from.

    Args:
        crop: Side of the square image that is rotated.
        angle: Degrees, counter-clockwise, as ``TF.rotate``.

    Returns:
        int64 array of ``crop * crop`` entries in row-major output order:
        0 means zero fill, ``k > 0`` means source pixel ``k - 1`` (row-major).
    """
    # PIL mode "I" holds int32, enough for 1..crop*crop; 0 is reserved for the fill.
    index = np.arange(1, crop * crop + 1, dtype=np.int32).reshape(crop, crop)
    # Same call as torchvision's _functional_pil.rotate with fill=None.
    rotated = Image.fromarray(index).rotate(
        angle, Image.NEAREST, expand=False, center=None, fillcolor=0
    )
    return np.asarray(rotated, dtype=np.int64).reshape(-1)


def gather_index(pre: Preprocess) -> np.ndarray:
    """One index vector that crops and rotates a flattened image into all views.

    The image is flattened per channel to ``input_size**2`` pixels with one zero
    pixel prepended (position 0), so a single ``Gather`` produces every view.

    Returns:
        int32 array of ``rotations * crop * crop`` positions into that padded vector.
    """
    off = crop_offset(pre.input_size, pre.crop)
    rows, cols = np.divmod(np.arange(pre.crop * pre.crop, dtype=np.int64), pre.crop)
    # Source pixel k-1 of the crop -> 1 + its position in the full image.
    crop_to_full = np.concatenate([[0], 1 + (rows + off) * pre.input_size + (cols + off)])
    maps = [crop_to_full[rotation_index_map(pre.crop, angle)] for angle in pre.angles]
    return np.concatenate(maps).astype(np.int32)


def rotated_views(images: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Numpy twin of the exported gather: uint8 [N, H, W, 3] -> [N, R, crop, crop, 3]."""
    n = images.shape[0]
    flat = images.reshape(n, -1, 3)
    padded = np.concatenate([np.zeros((n, 1, 3), np.uint8), flat], axis=1)
    views = padded[:, gather_index(pre)]
    return views.reshape(n, pre.rotations, pre.crop, pre.crop, 3)


def _define_classifier() -> type:
    # Lazy: the numpy half of this module (index maps) must import without torch.
    import torch
    from torch import nn

    class PrependZero(torch.autograd.Function):
        """Prepend one zero along the last axis; exports as a single constant ``Pad``.

        ``F.pad`` would export its pads through a Slice/Transpose chain that the
        legacy exporter cannot fold; here the pads are one constant. Given float
        planes: ONNX Runtime's CUDA provider has no uint8 ``Pad`` kernel.
        """

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.pad(x, (1, 0))

        @staticmethod
        def symbolic(g: Any, x: Any) -> Any:
            pads = g.op("Constant", value_t=torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.int64))
            return g.op("Pad", x, pads, mode_s="constant")

    class TTAClassifier(nn.Module):
        """Raw pixels to averaged-logit prediction, the whole contract in one module.

        Input ``image``: uint8 [N, input_size, input_size, 3] RGB. Inside: cast to
        float32, centre crop + rotations (one gather), ``x * scale`` then ``(x - mean) / std``,
        one network pass over the N*R views, logits averaged per image.
        Outputs ``logit`` and ``prob`` (sigmoid), float32 [N].

        Args:
            net: Network with one output logit, in eval mode.
            meta: Metadata giving the preprocessing.
            half: Run the network (weights and activations) in float16; input
                and outputs keep their types.
        """

        def __init__(self, net: nn.Module, meta: ModelMeta, half: bool = False) -> None:
            super().__init__()
            pre = meta.preprocess
            self.net = net.half() if half else net.float()
            self.half = half
            self.rotations, self.crop = pre.rotations, pre.crop
            self.n_pix = pre.input_size * pre.input_size  # a constant, not a traced Shape op
            index = torch.from_numpy(gather_index(pre))
            self.register_buffer("index", index, persistent=False)
            # The same positions, one row per rotation: forward_views picks rows by rotation index.
            self.register_buffer("table", index.reshape(self.rotations, -1), persistent=False)
            # Folded: (x * scale - mean) / std == x * gain + bias.
            std = torch.tensor(pre.std, dtype=torch.float64)
            gain = (pre.scale / std).float().view(1, 3, 1, 1)
            bias = (-torch.tensor(pre.mean, dtype=torch.float64) / std).float().view(1, 3, 1, 1)
            self.register_buffer("gain", gain, persistent=False)
            self.register_buffer("bias", bias, persistent=False)

        def _planes(self, image: torch.Tensor) -> torch.Tensor:
            # Channel-first before the gather: then the views come out as contiguous planes.
            planes = image.permute(0, 3, 1, 2).reshape(-1, 3, self.n_pix)
            # Cast before the pad, bit-exact (uint8 -> float32 is exact, the fill is 0.0 either way):
            # the CUDA provider has no uint8 Pad and would run it on the CPU, copying every image
            # device -> host -> device. Transpose, Reshape and Cast all have uint8 CUDA kernels.
            return PrependZero.apply(planes.float())  # position 0 = the zero-fill pixel

        def _view_logits(self, planes: torch.Tensor, index: torch.Tensor, n_views: Any) -> torch.Tensor:
            views = planes.index_select(2, index)
            views = views.reshape(-1, 3, n_views, self.crop, self.crop).transpose(1, 2)
            views = views.reshape(-1, 3, self.crop, self.crop)
            x = views * self.gain + self.bias  # views are float32 already (_planes)
            if self.half:
                x = x.half()
            return self.net(x).float().reshape(-1, n_views)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self._view_logits(self._planes(image), self.index, self.rotations).mean(dim=1)
            return logits, torch.sigmoid(logits)

        def forward_views(self, image: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """Only the rotations listed in ``views`` (int64 indices into the angles).

            Returns:
                ``(logit, prob, view_logits)``: the mean over the listed views, its
                sigmoid, and each view's logit [N, len(views)] in the order given.
            """
            index = self.table.index_select(0, views).reshape(-1)
            view_logits = self._view_logits(self._planes(image), index, views.shape[0])
            logits = view_logits.mean(dim=1)
            return logits, torch.sigmoid(logits), view_logits

    return TTAClassifier


def __getattr__(name: str) -> Any:
    # Lazy: building the nn.Module subclass imports torch, which the runtime must not need.
    if name == "TTAClassifier":
        cls = _define_classifier()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

