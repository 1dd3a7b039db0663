"""The eager PyTorch reference: the paper's PIL pipeline, averaged over rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import Preprocess
from edgeleuk.modeling.checkpoint import Checkpoint, load_checkpoint
from edgeleuk.modeling.reference import TorchReference


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (3, 450, 450, 3), dtype=np.uint8)


def test_logits_are_mean_over_pil_rotations(tiny_checkpoint, images: np.ndarray) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    logits, probs = TorchReference(ckpt).predict_arrays(images)
    assert logits.dtype == probs.dtype == np.float32 and logits.shape == (3,)
    net = ckpt.build_model()
    crop = Image.fromarray(images[0][75:375, 75:375])
    with torch.no_grad():
        per_angle = [
            net(TF.to_tensor(TF.rotate(crop, a, interpolation=TF.InterpolationMode.NEAREST))[None]).item()
            for a in ckpt.meta.preprocess.angles
        ]
    assert logits[0] == pytest.approx(np.mean(per_angle), abs=1e-6)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)


def test_chunking_does_not_change_results(tiny_checkpoint, images: np.ndarray) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    small = TorchReference(ckpt, max_views=8).predict_arrays(images)[0]
    large = TorchReference(ckpt, max_views=64).predict_arrays(images)[0]
    np.testing.assert_allclose(small, large, atol=1e-6)


def test_meta_override_changes_preprocessing(tiny_checkpoint, images: np.ndarray) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    shifted = ckpt.meta.replace(preprocess=Preprocess(mean=(0.5, 0.5, 0.5)))
    a = TorchReference(ckpt).predict_arrays(images)[0]
    b = TorchReference(ckpt, meta=shifted).predict_arrays(images)[0]
    assert np.abs(a - b).max() > 1e-3


def test_one_rotation_is_plain_centre_crop(tiny_checkpoint, images: np.ndarray) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    one = Checkpoint(meta=ckpt.meta.replace(preprocess=Preprocess(rotations=1)), state_dict=ckpt.state_dict)
    logits, _ = TorchReference(one).predict_arrays(images[:1])
    x = torch.from_numpy(images[0][75:375, 75:375]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert logits[0] == pytest.approx(one.build_model()(x).item(), abs=1e-6)


def test_rejects_wrong_batch(tiny_checkpoint) -> None:
    with pytest.raises(UsageError):
        TorchReference(load_checkpoint(tiny_checkpoint)).predict_arrays(np.zeros((450, 450, 3), np.uint8))
