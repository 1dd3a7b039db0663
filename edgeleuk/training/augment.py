"""Training augmentation and the PIL path from uint8 pixels to network input.

The paper's training transform is ``CenterCrop(300) -> RandomVerticalFlip ->
RandomHorizontalFlip -> RandomAffine(degrees=360, translate=(0.2, 0.2)) ->
ToTensor``: nearest-neighbour resampling, zero fill, no scaling, no shear, no
colour change. :class:`TrainTransform` applies exactly those operations, but
draws their parameters from a ``numpy`` generator the caller seeds per cell and
epoch instead of torch's global RNG, so that a run gives the same batches with
any number of loader workers and after ``--resume``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from edgeleuk.core.meta import Preprocess
from edgeleuk.training.recipe import Augment


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random augmentation.

    Attributes:
        vflip: Flip top-bottom.
        hflip: Flip left-right.
        angle: Counter-clockwise rotation in degrees.
        shift: Translation ``(dx, dy)`` in whole pixels.
    """

    vflip: bool
    hflip: bool
    angle: float
    shift: tuple[int, int]


def draw_params(rng: np.random.Generator, augment: Augment, size: int) -> AugmentParams:
    """Draw flips, angle and shift with the same distributions as torchvision's transforms."""
    vflip = bool(rng.random() < augment.vflip)
    hflip = bool(rng.random() < augment.hflip)
    angle = float(rng.uniform(-augment.degrees, augment.degrees))
    max_shift = augment.translate * size
    dx = round(rng.uniform(-max_shift, max_shift))
    dy = round(rng.uniform(-max_shift, max_shift))
    return AugmentParams(vflip=vflip, hflip=hflip, angle=angle, shift=(dx, dy))


def apply_params(image: Image.Image, params: AugmentParams) -> Image.Image:
    """Apply one draw to a (cropped) PIL image, as ``RandomAffine`` would: nearest, zero fill."""
    if params.vflip:
        image = TF.vflip(image)
    if params.hflip:
        image = TF.hflip(image)
    return TF.affine(
        image, angle=params.angle, translate=list(params.shift), scale=1.0, shear=[0.0, 0.0],
        interpolation=InterpolationMode.NEAREST, fill=0,
    )


def center_crop(image: np.ndarray | Image.Image, preprocess: Preprocess) -> Image.Image:
    """``CenterCrop(preprocess.crop)`` on a PIL image (uint8 arrays are converted first)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return TF.center_crop(image, [preprocess.crop, preprocess.crop])


def to_network_input(image: Image.Image, preprocess: Preprocess) -> torch.Tensor:
    """``ToTensor`` then ``Normalize(mean, std)``: float CHW in the model's input scale."""
    if math.isclose(preprocess.scale, 1.0 / 255.0):
        x = TF.to_tensor(image)  # divides by 255, bit-identical to the paper's pipeline
    else:
        x = TF.pil_to_tensor(image).float() * preprocess.scale
    return TF.normalize(x, list(preprocess.mean), list(preprocess.std))


def rotation_stack(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """The paper's validation input: crop, then one tensor per TTA angle, ``[R, 3, crop, crop]``."""
    cropped = center_crop(image, preprocess)
    return torch.stack([
        to_network_input(TF.rotate(cropped, angle, interpolation=InterpolationMode.NEAREST), preprocess)
        for angle in preprocess.angles
    ])


class TrainTransform:
    """Crop, random flips/rotation/shift, to tensor: the paper's ``TF_TRAIN``.

    Args:
        augment: Flip probabilities, rotation range and largest shift.
        preprocess: Crop size, scale, mean and std of the network input.
    """

    def __init__(self, augment: Augment, preprocess: Preprocess) -> None:
        self.augment = augment
        self.preprocess = preprocess

    def augmented_image(self, image: np.ndarray, rng: np.random.Generator) -> Image.Image:
        """The augmented, cropped PIL image (before conversion to a tensor)."""
        params = draw_params(rng, self.augment, self.preprocess.crop)
        return apply_params(center_crop(image, self.preprocess), params)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return to_network_input(self.augmented_image(image, rng), self.preprocess)
