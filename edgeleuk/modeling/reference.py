"""The paper's eager PyTorch inference path, the yardstick every export is gated against.

Each image goes the way the paper's evaluation code took it: PIL image ->
``CenterCrop`` -> ``TF.rotate(angle, NEAREST)`` per angle -> ``ToTensor`` ->
``Normalize`` -> network -> logits averaged over the rotations. Nothing here is
shared with the exported graph except the weights and :class:`ModelMeta`, so a
mistake in the graph cannot hide in both.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from edgeleuk.core.contract import check_input
from edgeleuk.core.meta import ModelMeta
from edgeleuk.modeling.checkpoint import Checkpoint


class TorchReference:
    """A checkpoint run eagerly with the paper's PIL-rotation TTA.

    Args:
        ckpt: The checkpoint.
        meta: Preprocessing to use instead of the checkpoint's (tests corrupt it
            on purpose to prove the parity gate bites).
        max_views: Most views per network call, to bound memory.
    """

    def __init__(self, ckpt: Checkpoint, meta: ModelMeta | None = None, max_views: int = 32) -> None:
        self.meta = meta or ckpt.meta
        self.net = ckpt.build_model().float()
        self.max_views = max(max_views, self.meta.preprocess.rotations)
        pre = self.meta.preprocess
        self._crop = T.CenterCrop(pre.crop)
        self._to_tensor = T.ToTensor()
        self._normalize = T.Normalize(mean=list(pre.mean), std=list(pre.std))
        if abs(pre.scale - 1.0 / 255.0) > 1e-12:
            raise NotImplementedError("the PIL reference path only knows ToTensor's 1/255 scaling")

    def views(self, image: np.ndarray) -> torch.Tensor:
        """The normalised rotated views of one uint8 [H, W, 3] image: float32 [R, 3, crop, crop]."""
        cropped = self._crop(Image.fromarray(image))
        rotated = [
            TF.rotate(cropped, angle, interpolation=TF.InterpolationMode.NEAREST)
            for angle in self.meta.preprocess.angles
        ]
        # Normalize once on the stack: the same arithmetic per element as per view, fewer calls.
        return self._normalize(torch.stack([self._to_tensor(img) for img in rotated]))

    @torch.inference_mode()
    def predict_arrays(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch.

        Args:
            images: uint8 [N, input_size, input_size, 3] RGB.

        Returns:
            ``(logits, probs)``, float32 [N]; each logit is the mean over rotations.
        """
        check_input(images, self.meta.preprocess.input_size)
        rot = self.meta.preprocess.rotations
        per_call = max(1, self.max_views // rot)
        logits = []
        for start in range(0, len(images), per_call):
            views = torch.cat([self.views(img) for img in images[start : start + per_call]])
            logits.append(self.net(views).reshape(-1, rot).mean(dim=1))
        out = torch.cat(logits) if logits else torch.zeros(0)
        return out.numpy().astype(np.float32), torch.sigmoid(out).numpy().astype(np.float32)
