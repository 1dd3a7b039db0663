"""The graph's opt-in outputs: ``embedding`` (pooled features) and ``cam`` (class activation map, upright).

The map is exact for these networks (global average pooling, then one linear layer): for a view
that shows every crop pixel (multiples of 90 degrees) its mean plus the linear bias is the view's
logit. Everything here runs the tiny stand-in on SYNTHETIC or random pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeleuk.core.contract import CAM, EMBEDDING, EXTRA_OUTPUTS, TensorSpec, graph_problems
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta, Preprocess
from edgeleuk.exporting.graph import contract_problems, export_wrapper
from edgeleuk.modeling import tta
from edgeleuk.modeling.checkpoint import load_checkpoint
from edgeleuk.modeling.reference import TorchReference
from edgeleuk.runtime.registry import backend_options, choose_backend

ENGINES = ("cpu", "openvino")
RIGHT_ANGLES = (0, 2, 4, 6)  # of the paper's 8 rotations: the views that show every crop pixel


def _open(model: Path, engine: str, extras: tuple[str, ...] = EXTRA_OUTPUTS, views: bool = True):
    options = dataclasses.replace(backend_options(), extras=extras, views_input=views)
    return choose_backend(model, engine, options)[0]


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 450, 450, 3), dtype=np.uint8)


def _bias(tiny_checkpoint: Path) -> float:
    return float(load_checkpoint(tiny_checkpoint).state_dict["last_linear.bias"].reshape(-1)[0])


def test_the_table_is_nearest_upsampling_turned_upright() -> None:
    pre = Preprocess()
    table = tta.cam_index_table(pre, (10, 10))
    assert table.shape == (8, 300 * 300) and table.min() >= 0 and table.max() == 100
    rows, cols = np.divmod(np.arange(300 * 300), 300)
    np.testing.assert_array_equal(table[0], 1 + (rows // 30) * 10 + cols // 30)  # identity: a 30x repeat
    for r in RIGHT_ANGLES:  # every pixel shown, each grid cell 900 times: the mean is kept
        assert (table[r] > 0).all() and (np.bincount(table[r], minlength=101)[1:] == 900).all()
    cells = (1 + np.arange(100).reshape(10, 10)).repeat(30, axis=0).repeat(30, axis=1)  # a view's cell per pixel
    for r in RIGHT_ANGLES:  # view r is the crop turned by r // 2 quarter turns: turned back upright
        np.testing.assert_array_equal(table[r].reshape(300, 300), np.rot90(cells, -(r // 2)))
    assert (table[1] == 0).any()  # a 45-degree view leaves the crop's corners out


@pytest.mark.parametrize("engine", ENGINES)
def test_mean_of_a_views_cam_plus_bias_is_that_views_logit(tiny_onnx: Path, tiny_checkpoint: Path,
                                                           engine: str) -> None:
    backend, bias, images = _open(tiny_onnx, engine), _bias(tiny_checkpoint), _images()
    for view in RIGHT_ANGLES:
        _, view_logits, extras = backend.run_views_extras(images, np.array([view]), (CAM,))
        cam = extras[CAM]
        assert cam.shape == (2, 300, 300) and cam.dtype == np.float32
        np.testing.assert_allclose(cam.astype(np.float64).mean(axis=(1, 2)) + bias, view_logits[:, 0],
                                   atol=1e-5, rtol=0)


def test_one_views_cam_plus_bias_is_that_views_logit_in_the_eager_wrapper(tiny_checkpoint: Path) -> None:
    # As above, before any export: with one view every shown region is averaged over exactly one view.
    ckpt = load_checkpoint(tiny_checkpoint)
    eager = tta._define_classifier()(ckpt.build_model().eval(), ckpt.meta, extras=True).eval()
    bias, images = _bias(tiny_checkpoint), torch.from_numpy(_images())
    with torch.no_grad():
        for view in RIGHT_ANGLES:
            _, _, view_logits, _, cam = eager.forward_extras(images, torch.tensor([view]))
            np.testing.assert_allclose(cam.double().mean(dim=(1, 2)).numpy() + bias, view_logits[:, 0].numpy(),
                                       atol=1e-5, rtol=0)


def _torch_view_maps(tiny_checkpoint: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upright maps of the right-angle views and every view's pooled features, computed in PyTorch.

    Independent of the graph: the views come from the paper's PIL path, the maps are upsampled
    with ``torch.nn.functional.interpolate`` and turned upright with ``np.rot90``.
    """
    ckpt = load_checkpoint(tiny_checkpoint)
    ref, net = TorchReference(ckpt), ckpt.build_model().eval()
    weight = net.last_linear.weight.reshape(1, -1, 1, 1)
    maps, pooled = [], []
    with torch.no_grad():
        for image in images:
            feats = net.forward_features(ref.views(image))
            pooled.append(feats.mean(dim=(2, 3)).numpy())
            grid = (feats * weight).sum(dim=1, keepdim=True)
            views = torch.nn.functional.interpolate(grid, size=(300, 300), mode="nearest")[:, 0].numpy()
            maps.append(np.mean([np.rot90(views[r], -(r // 2)) for r in RIGHT_ANGLES], axis=0))
    return np.stack(maps), np.stack(pooled)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_graphs_cam_and_embedding_are_pytorchs(tiny_onnx: Path, tiny_checkpoint: Path, engine: str) -> None:
    images = _images(2, seed=3)
    maps, pooled = _torch_view_maps(tiny_checkpoint, images)
    backend = _open(tiny_onnx, engine)
    _, _, extras = backend.run_views_extras(images, np.array(RIGHT_ANGLES), (EMBEDDING, CAM))
    np.testing.assert_allclose(extras[CAM], maps, atol=1e-5, rtol=0)
    np.testing.assert_allclose(extras[EMBEDDING], pooled[:, list(RIGHT_ANGLES)].mean(axis=1), atol=1e-5, rtol=0)
    # The file's own call: the embedding averaged over all 8 rotations; the map as the eager wrapper makes it.
    _, _, full = backend.run_extras(images, (EMBEDDING, CAM))
    np.testing.assert_allclose(full[EMBEDDING], pooled.mean(axis=1), atol=1e-5, rtol=0)
    ckpt = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        eager = tta._define_classifier()(ckpt.build_model().eval(), ckpt.meta, extras=True).eval()
        _, _, _, embedding, cam = eager.forward_extras(torch.from_numpy(images), torch.arange(8))
    np.testing.assert_allclose(full[CAM], cam.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(full[EMBEDDING], embedding.numpy(), atol=1e-5, rtol=0)


class _Brightness(nn.Module):
    """A network whose evidence is brightness: features = mean brightness of each 30x30 patch."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, 1, 30, stride=30, bias=False)
        nn.init.constant_(self.patches.weight, 1.0 / (3 * 30 * 30))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(1, 1)
        nn.init.constant_(self.last_linear.weight, 1.0)
        nn.init.constant_(self.last_linear.bias, 0.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.patches(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(torch.flatten(self.global_pool(self.forward_features(x)), 1))


@pytest.mark.parametrize("quadrant", [(0, 0), (0, 1), (1, 1)])
def test_evidence_in_one_quadrant_is_hottest_there_for_every_rotation(tmp_path: Path, quadrant: tuple) -> None:
    meta = ModelMeta()
    wrapper = tta._define_classifier()(_Brightness().eval(), meta, extras=True).eval()
    path = tmp_path / "bright.onnx"
    import onnx

    onnx.save(export_wrapper(wrapper, meta, 17), str(path))
    image = np.zeros((1, 450, 450, 3), np.uint8)
    row, col = 75 + 40 + 150 * quadrant[0], 75 + 40 + 150 * quadrant[1]  # a bright blob inside the quadrant
    image[0, row : row + 60, col : col + 60] = 255
    backend = _open(path, "cpu", (CAM,))
    for view in range(8):
        _, _, extras = backend.run_views_extras(image, np.array([view]), (CAM,))
        cam = extras[CAM][0]
        hottest = np.unravel_index(np.argmax(cam), cam.shape)
        assert (hottest[0] // 150, hottest[1] // 150) == quadrant, f"view {view}: hottest at {hottest}"
        sums = [cam[r * 150 : (r + 1) * 150, c * 150 : (c + 1) * 150].sum() for r in (0, 1) for c in (0, 1)]
        assert int(np.argmax(sums)) == 2 * quadrant[0] + quadrant[1], f"view {view}: quadrant sums {sums}"


@pytest.mark.parametrize(("engine", "views"), [("openvino", False), ("openvino", True), ("cpu", True)])
def test_outputs_not_asked_for_are_not_compiled(tiny_onnx: Path, engine: str, views: bool) -> None:
    """OpenVINO drops their results; ONNX Runtime with the views entry open (the graph parsed anyway) their nodes."""
    backend = _open(tiny_onnx, engine, extras=(), views=views)
    names = {o.name for o in backend.graph_io()[1]}
    assert not names & set(EXTRA_OUTPUTS) and backend.extras == (), names
    only = _open(tiny_onnx, engine, extras=(EMBEDDING,), views=views)
    assert only.extras == (EMBEDDING,) and CAM not in {o.name for o in only.graph_io()[1]}
    with pytest.raises(UsageError, match="did not open"):
        only.run_extras(_images(1), (CAM,))


def test_the_plain_ort_call_fetches_no_extra(tiny_onnx: Path) -> None:
    """ONNX Runtime opens the file as it is (no onnx import); the extras are only fetched when opened."""
    backend = _open(tiny_onnx, "cpu", extras=(), views=False)
    assert backend.extras == ()
    with pytest.raises(UsageError, match="did not open"):
        backend.run_extras(_images(1), (EMBEDDING,))


def test_a_file_without_extras_still_opens_and_says_what_it_lacks(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx

    from edgeleuk.runtime.views import prune_outputs

    proto = onnx.load(str(tiny_onnx))
    prune_outputs(proto, set(EXTRA_OUTPUTS))
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert contract_problems(proto, ModelMeta(arch="seresnext_tiny")) == []
    for engine in ENGINES:
        backend = _open(old, engine)
        assert backend.extras == ()
        logits, _ = backend.run(_images(1))
        assert logits.shape == (1,)


def test_extras_are_checked_when_present() -> None:
    image = TensorSpec("image", "uint8", (None, 450, 450, 3))
    base = [TensorSpec("logit", "float32", (None,)), TensorSpec("prob", "float32", (None,))]
    good = [TensorSpec(EMBEDDING, "float32", (None, 128)), TensorSpec(CAM, "float32", (None, 300, 300))]
    assert graph_problems([image], base, 450, 300) == []
    assert graph_problems([image], base + good, 450, 300) == []
    bad = [TensorSpec(EMBEDDING, "float16", (None, 128)), TensorSpec(CAM, "float32", (None, 299, 300))]
    problems = graph_problems([image], base + bad, 450, 300)
    assert len(problems) == 2 and "embedding" in problems[0] and "cam" in problems[1]
    assert graph_problems([image], base + [TensorSpec(CAM, "float32", (None, 300))], 450) != []


def test_the_exported_contract_refuses_a_wrong_cam(tiny_onnx: Path) -> None:
    import onnx

    proto = onnx.load(str(tiny_onnx))
    meta = ModelMeta(arch="seresnext_tiny")
    assert contract_problems(proto, meta) == []
    cam = next(o for o in proto.graph.output if o.name == CAM)
    cam.type.tensor_type.shape.dim[1].dim_value = 299
    assert any("cam" in p for p in contract_problems(proto, meta))
    order = onnx.load(str(tiny_onnx))
    outputs = list(order.graph.output)
    del order.graph.output[:]
    order.graph.output.extend([*outputs[:3], outputs[4], outputs[3]])  # cam before embedding
    assert any("outputs" in p for p in contract_problems(order, meta))
