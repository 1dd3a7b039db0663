"""The gather-based rotation TTA must be bit-exact with the paper's PIL path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from edgeleuk.core.contract import check_input
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta, Preprocess
from edgeleuk.modeling import tta
from edgeleuk.modeling.checkpoint import Checkpoint, load_checkpoint
from edgeleuk.modeling.reference import TorchReference
from edgeleuk.modeling.tta import crop_offset, rotated_views, rotation_index_map


def _wrapper_class() -> type:
    """``TTAClassifier``, defined anew.

    The module builds it once per process and caches it, so a changed definition (``make mutate``)
    would otherwise never run.
    """
    return tta._define_classifier()


def _pil_views(image: np.ndarray, pre: Preprocess) -> np.ndarray:
    cropped = T.CenterCrop(pre.crop)(Image.fromarray(image))
    return np.stack([
        np.asarray(TF.rotate(cropped, a, interpolation=TF.InterpolationMode.NEAREST)) for a in pre.angles
    ])


@pytest.mark.parametrize("rotations", [1, 4, 8])
def test_gather_is_bit_exact_with_pil_rotate(rotations: int) -> None:
    pre = Preprocess(rotations=rotations)
    images = np.random.default_rng(rotations).integers(0, 256, (2, 450, 450, 3), dtype=np.uint8)
    views = rotated_views(images, pre)
    assert views.shape == (2, rotations, 300, 300, 3) and views.dtype == np.uint8
    for img, got in zip(images, views, strict=True):
        np.testing.assert_array_equal(got, _pil_views(img, pre))


@pytest.mark.parametrize(("size", "crop"), [(64, 33), (65, 32), (40, 40)])
def test_gather_handles_odd_crops_like_torchvision(size: int, crop: int) -> None:
    pre = Preprocess(input_size=size, crop=crop, rotations=8)
    images = np.random.default_rng(size).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rotated_views(images, pre)[0], _pil_views(images[0], pre))


def test_index_map_structure() -> None:
    ident = rotation_index_map(5, 0.0)
    np.testing.assert_array_equal(ident, np.arange(1, 26))
    quarter = rotation_index_map(6, 90.0)
    assert sorted(quarter) == list(range(1, 37))  # a pure permutation, no fill
    diagonal = rotation_index_map(6, 45.0)
    assert (diagonal == 0).any() and diagonal.max() <= 36  # corners are zero fill
    assert crop_offset(450, 300) == 75


def test_check_batch_rejects_wrong_input() -> None:
    pre = Preprocess()
    with pytest.raises(UsageError, match="uint8"):
        check_input(np.zeros((1, 450, 450, 3), np.float32), pre.input_size)
    with pytest.raises(UsageError):
        check_input(np.zeros((1, 300, 300, 3), np.uint8), pre.input_size)


def _small_wrapper(rotations: int = 8):
    """The wrapper around a 2-layer net on 64 px cells cropped to 40: fast enough for every mutant."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 1)).eval()
    pre = Preprocess(input_size=64, crop=40, rotations=rotations, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3))
    return _wrapper_class()(net, ModelMeta(preprocess=pre)).eval(), net, pre


def test_each_view_is_the_net_on_that_rotation_and_the_logit_their_mean() -> None:
    wrapper, net, pre = _small_wrapper()
    images = np.random.default_rng(5).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    views = torch.from_numpy(rotated_views(images, pre)).permute(0, 1, 4, 2, 3).reshape(-1, 3, 40, 40)
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net((views.float() * pre.scale - mean) / std).reshape(3, 8)
        logit, prob = wrapper(torch.from_numpy(images))
        picked = torch.tensor([6, 2, 5])
        v_logit, v_prob, view_logits = wrapper.forward_views(torch.from_numpy(images), picked)
        _, _, every = wrapper.forward_views(torch.from_numpy(images), torch.arange(8))
    torch.testing.assert_close(every, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(logit, expected.mean(dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(prob, torch.sigmoid(logit))
    torch.testing.assert_close(view_logits, every[:, [6, 2, 5]], atol=0, rtol=0)
    torch.testing.assert_close(v_logit, view_logits.mean(dim=1), atol=0, rtol=0)
    torch.testing.assert_close(v_prob, torch.sigmoid(v_logit))
    assert logit.dtype == view_logits.dtype == torch.float32 and logit.shape == (3,)


def test_the_exported_wrapper_computes_what_the_eager_one_does() -> None:
    import io

    import onnxruntime as ort

    wrapper, _, _ = _small_wrapper()
    images = np.random.default_rng(6).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    with torch.no_grad():
        eager, _ = wrapper(torch.from_numpy(images))
        torch.onnx.export(wrapper, (torch.from_numpy(images),), buf, dynamo=False, input_names=["image"],
                          output_names=["logit", "prob"], opset_version=17)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    logit, prob = session.run(None, {"image": images})
    np.testing.assert_allclose(logit, eager.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-logit)), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("mean", "std"), [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                           ((0.485, 0.456, 0.406), (0.2, 0.25, 0.3))])
def test_the_wrapper_folds_normalisation_once_in_float64_and_adds_no_state(mean: tuple, std: tuple) -> None:
    # gain = scale / std and bias = -mean / std, each computed in float64 and rounded to float32 once
    # (with these values float32 arithmetic would differ in the last bit); shaped to broadcast over NCHW.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pre = Preprocess(input_size=64, crop=40, rotations=4, mean=mean, std=std)
    wrapper = _wrapper_class()(net, ModelMeta(preprocess=pre))
    std64 = torch.tensor(std, dtype=torch.float64)
    torch.testing.assert_close(wrapper.gain, (pre.scale / std64).float().view(1, 3, 1, 1), rtol=0, atol=0)
    bias = (-torch.tensor(mean, dtype=torch.float64) / std64).float().view(1, 3, 1, 1)
    torch.testing.assert_close(wrapper.bias, bias, rtol=0, atol=0)
    # The index, table, gain and bias follow from the metadata: the wrapper's state is the network's.
    assert set(wrapper.state_dict()) == {f"net.{k}" for k in net.state_dict()}


def test_a_wrapper_with_extras_adds_no_state_and_says_when_it_has_none() -> None:
    from edgeleuk.modeling.model import create_model

    net = create_model("seresnext_tiny").eval()
    meta = ModelMeta(preprocess=Preprocess(input_size=48, crop=32, rotations=4))
    wrapper = _wrapper_class()(net, meta, extras=True)
    # The cam tables follow from the metadata too: a checkpoint of the network loads into it as it is.
    assert set(wrapper.state_dict()) == {f"net.{k}" for k in net.state_dict()}
    plain = _wrapper_class()(net, meta)
    with pytest.raises(RuntimeError, match=r"^built without extras: TTAClassifier\(\.\.\., extras=True\)$"):
        plain.forward_extras(torch.zeros(1, 48, 48, 3, dtype=torch.uint8), torch.arange(4))


def test_importing_the_exporter_and_the_trainer_does_not_build_the_wrapper_class() -> None:
    # Built at import, the class would be the one every later test used (a forked test process
    # inherits it), and no changed definition could ever run under them.
    code = ("import edgeleuk.exporting.graph, edgeleuk.training.evaluate, edgeleuk.modeling.tta as t; "
            "assert 'TTAClassifier' not in vars(t), 'built at import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_wrapper_class_is_built_on_first_use_and_kept() -> None:
    built = tta.__getattr__("TTAClassifier")
    assert built.__name__ == "TTAClassifier" and tta.TTAClassifier is built  # kept: built once
    assert issubclass(built, torch.nn.Module)
    with pytest.raises(AttributeError, match="module 'edgeleuk.modeling.tta' has no attribute 'nope'"):
        tta.__getattr__("nope")


@pytest.mark.parametrize("rotations", [4, 8])  # 8: the paper's TTA, what the export gate ships
def test_tta_classifier_matches_torch_reference(tiny_checkpoint, rotations: int) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    # Non-trivial mean/std so the folded normalisation is exercised.
    meta = ckpt.meta.replace(preprocess=Preprocess(mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), rotations=rotations))
    ckpt = Checkpoint(meta=meta, state_dict=ckpt.state_dict)
    images = np.random.default_rng(1).integers(0, 256, (3, 450, 450, 3), dtype=np.uint8)
    with torch.no_grad():
        logit, prob = _wrapper_class()(ckpt.build_model(), meta).eval()(torch.from_numpy(images))
    ref_logit, ref_prob = TorchReference(ckpt).predict_arrays(images)
    assert logit.dtype == torch.float32 and logit.shape == (3,)
    np.testing.assert_allclose(logit.numpy(), ref_logit, atol=1e-5, rtol=0)
    np.testing.assert_allclose(prob.numpy(), ref_prob, atol=1e-6, rtol=0)


def test_tta_classifier_half_keeps_io_types(tiny_checkpoint) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    model = _wrapper_class()(ckpt.build_model(), ckpt.meta, half=True).eval()
    assert next(model.net.parameters()).dtype == torch.float16
    with torch.no_grad():
        logit, prob = model(torch.zeros(2, 450, 450, 3, dtype=torch.uint8))
    assert logit.dtype == prob.dtype == torch.float32 and logit.shape == (2,)


def test_index_part_does_not_import_torch() -> None:
    code = ("import sys, edgeleuk.modeling.tta as t; from edgeleuk.core.meta import Preprocess; "
            "t.gather_index(Preprocess()); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_meta_default_is_paper_tta() -> None:
    assert ModelMeta().preprocess.angles == [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
