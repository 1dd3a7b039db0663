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

from edgeleuk.core.contract import crop_offset
from edgeleuk.core.meta import ModelMeta, Preprocess


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


def cam_index_table(pre: Preprocess, grid: tuple[int, int]) -> np.ndarray:
    """Which cell of each view's feature grid every upright crop pixel shows: the ``cam`` output's gather.

    A view's class activation map is its feature grid upsampled to the crop by nearest
    neighbour (view pixel ``(i, j)`` shows cell ``(i * gh // crop, j * gw // crop)``: an
    integer repeat, so the mean is kept, when the crop is a multiple of the grid, e.g.
    300 = 30 x 10 for both networks). It is turned back upright with the TTA's own rotation
    index maps, inverted: upright pixel ``q`` takes the first view pixel whose source is
    ``q``. Pixels a view does not show (the corners of a 45-degree view) are 0.

    Args:
        pre: The preprocessing (crop, angles).
        grid: ``(gh, gw)``, the last feature map's height and width for one view.

    Returns:
        int64 ``[rotations, crop * crop]``: 1 + the cell's row-major index in that view's
        grid, or 0 where the view does not show the pixel.
    """
    crop, (gh, gw) = pre.crop, grid
    rows, cols = np.divmod(np.arange(crop * crop, dtype=np.int64), crop)
    cell = 1 + (rows * gh // crop) * gw + (cols * gw // crop)  # per view pixel, nearest upsampling
    table = np.zeros((pre.rotations, crop * crop), np.int64)
    for r, angle in enumerate(pre.angles):
        source = rotation_index_map(crop, angle)
        shown = np.flatnonzero(source)
        upright, first = np.unique(source[shown] - 1, return_index=True)  # first view pixel per source
        table[r, upright] = cell[shown[first]]
    return table


def cam_regions(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the upright pixels that show the same cell in every view (675 groups for 300 px on a 10x10 grid).

    The map is then averaged once per group and spread to the pixels by one gather, instead of
    once per pixel and view: a few thousand lookups per cell instead of ``rotations * crop**2``.

    Args:
        table: :func:`cam_index_table`, ``[rotations, crop * crop]``.

    Returns:
        ``(cells [rotations, K], group of each pixel [crop * crop])``, both int64.
    """
    cells, group = np.unique(table.T, axis=0, return_inverse=True)
    return np.ascontiguousarray(cells.T, np.int64), group.reshape(-1).astype(np.int64)


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

    from edgeleuk.modeling.model import head_of

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

    class CamPart(nn.Module):
        """Per view, the last linear layer's weights at every position of the last feature map, upright.

        A module of its own so the exported nodes are named ``/cam/...``. Holds no state: the
        tables follow from the metadata and the grid size (:func:`cam_index_table`,
        :func:`cam_regions`).
        """

        def __init__(self, table: np.ndarray, crop: int) -> None:
            super().__init__()
            cells, group = cam_regions(table)
            self.register_buffer("cells", torch.from_numpy(cells), persistent=False)
            self.register_buffer("group", torch.from_numpy(group).reshape(1, -1), persistent=False)
            self.crop, self.n_cells, self.n_groups = crop, int(table.max()), cells.shape[1]

        def forward(self, feats: torch.Tensor, weight: torch.Tensor, views: torch.Tensor,
                    n_views: Any) -> torch.Tensor:
            # float32 whatever the network computes in: a map, not a gated logit.
            grid = (feats.float() * weight.float().reshape(1, -1, 1, 1)).sum(dim=1)
            grid = PrependZero.apply(grid.reshape(-1, 1, n_views * self.n_cells))  # 0 = "not in this view"
            cells = self.cells.index_select(0, views)  # [V, K]: each group's cell in each listed view
            offsets = torch.arange(n_views, dtype=torch.int64).reshape(-1, 1) * self.n_cells
            index = torch.where(cells > 0, cells + offsets, torch.zeros_like(cells)).reshape(-1)
            picked = grid.index_select(2, index).reshape(-1, n_views, self.n_groups)
            shown = (cells > 0).sum(dim=0).clamp(min=1).float()  # views showing each group
            per_group = picked.sum(dim=1) / shown
            # GatherElements: about 3x faster on ONNX Runtime's CPU than a Gather of single floats.
            spread = per_group.gather(1, self.group.expand(per_group.shape[0], -1))
            return spread.reshape(-1, self.crop, self.crop)

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
            extras: Also build :meth:`forward_extras` (``embedding`` and ``cam``); the network
                must split into features, pooling and one linear layer
                (:func:`edgeleuk.modeling.model.head_of`).
        """

        def __init__(self, net: nn.Module, meta: ModelMeta, half: bool = False, extras: bool = False) -> None:
            super().__init__()
            pre = meta.preprocess
            self.cam = CamPart(cam_index_table(pre, _grid_of(net.float(), pre.crop)), pre.crop) if extras else None
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

        def _net_input(self, planes: torch.Tensor, index: torch.Tensor, n_views: Any) -> torch.Tensor:
            views = planes.index_select(2, index)
            views = views.reshape(-1, 3, n_views, self.crop, self.crop).transpose(1, 2)
            views = views.reshape(-1, 3, self.crop, self.crop)
            x = views * self.gain + self.bias  # views are float32 already (_planes)
            return x.half() if self.half else x

        def _view_logits(self, planes: torch.Tensor, index: torch.Tensor, n_views: Any) -> torch.Tensor:
            return self.net(self._net_input(planes, index, n_views)).float().reshape(-1, n_views)

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

        def forward_extras(self, image: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """:meth:`forward_views` plus the pooled features and the class activation map.

            The network runs as its own parts (features, pooling, linear layer: the ops of its
            ``forward``), so the logits are those of :meth:`forward_views`.

            Returns:
                ``(logit, prob, view_logits, embedding, cam)``: the first three as
                :meth:`forward_views`; ``embedding`` float32 [N, D], the pooled features averaged
                over the listed views; ``cam`` float32 [N, crop, crop], the upright class
                activation map averaged over the views that show each pixel (for one view:
                its mean plus the linear layer's bias is that view's logit, where the view
                shows every pixel, i.e. at multiples of 90 degrees).
            """
            if self.cam is None:
                raise RuntimeError("built without extras: TTAClassifier(..., extras=True)")
            features, pool, linear = head_of(self.net)
            n_views = views.shape[0]
            index = self.table.index_select(0, views).reshape(-1)
            feats = features(self._net_input(self._planes(image), index, n_views))
            pooled = torch.flatten(pool(feats), 1)
            view_logits = linear(pooled).float().reshape(-1, n_views)
            logits = view_logits.mean(dim=1)
            embedding = pooled.float().reshape(-1, n_views, pooled.shape[1]).mean(dim=1)
            cam = self.cam(feats, linear.weight, views, n_views)
            return logits, torch.sigmoid(logits), view_logits, embedding, cam

    def _grid_of(net: nn.Module, crop: int) -> tuple[int, int]:
        """The last feature map's height and width for one ``crop x crop`` view (one probe pass)."""
        features, _, _ = head_of(net)
        training = net.training
        net.eval()  # no batch-norm statistics move for a probe
        with torch.no_grad():
            shape = features(torch.zeros(1, 3, crop, crop)).shape
        net.train(training)
        return int(shape[2]), int(shape[3])

    return TTAClassifier


def __getattr__(name: str) -> Any:
    # Lazy: building the nn.Module subclass imports torch, which the runtime must not need.
    if name == "TTAClassifier":
        cls = _define_classifier()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

