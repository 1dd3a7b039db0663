"""The paper's network, a tiny stand-in for tests and the CPU demo, and pretrained loading.

The paper (Prellberg & Kramer, ISBI 2019) fine-tunes Cadene's SE-ResNeXt50 32x4d,
which timm ships as ``legacy_seresnext50_32x4d`` (stem max-pool with ceil_mode),
with one output logit. Its children ``layer0..layer4`` and ``last_linear`` define
the layer-wise learning-rate groups.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from edgeleuk.core.errors import CheckpointError, UsageError
from edgeleuk.core.meta import PAPER_ARCH
from edgeleuk.modeling.weights import load_state_dict

# Parameter groups of the paper: stages 1-2, stages 3-5, classifier.
GROUPS: dict[str, tuple[str, ...]] = {
    "stages_1_2": ("layer0", "layer1"),
    "stages_3_5": ("layer2", "layer3", "layer4"),
    "classifier": ("last_linear",),
}


def _paper_net() -> nn.Module:
    import timm  # lazy: seconds to import, and the tiny net used by tests and the demo needs none of it

    return timm.create_model(PAPER_ARCH, pretrained=False, num_classes=1)


class _SEBlock(nn.Module):
    """Residual conv block with squeeze-and-excitation, a miniature of the SE-ResNeXt unit."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cout, max(cout // 4, 4), 1), nn.ReLU(inplace=True),
            nn.Conv2d(max(cout // 4, 4), cout, 1), nn.Sigmoid(),
        )
        self.skip = (
            nn.Identity() if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y * self.se(y) + self.skip(x))


class TinySENet(nn.Module):
    """A small SE-ResNeXt-shaped network with the paper net's child names.

    Not the paper's model: it exists so tests and the CPU demo run in seconds
    while exercising the same training, export and runtime code paths.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        w0 = widths[0]
        self.layer0 = nn.Sequential(nn.Conv2d(3, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0), nn.ReLU(True))
        self.pool0 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.layer1 = _SEBlock(w0, widths[0], 1)
        self.layer2 = _SEBlock(widths[0], widths[1], 2)
        self.layer3 = _SEBlock(widths[1], widths[2], 2)
        self.layer4 = _SEBlock(widths[2], widths[3], 2)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(widths[3], 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (layer4's output), as timm's networks name it."""
        x = self.pool0(self.layer0(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(torch.flatten(self.global_pool(self.forward_features(x)), 1))


def head_of(net: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module, nn.Linear]:
    """The network as ``(features, pool, linear)``: ``linear(flatten(pool(features(x)), 1))`` is its ``forward``.

    Both architectures end so (timm's legacy SE-ResNeXt: ``forward_features`` -> ``global_pool`` ->
    ``last_linear``, dropout off in eval; :class:`TinySENet` alike), which makes the class
    activation map exact: the linear weights applied at every position of the last feature map
    average, plus the bias, to the logit.

    Raises:
        UsageError: The network has no such parts, or its linear layer is not one logit.
    """
    linear = getattr(net, "last_linear", None)
    features, pool = getattr(net, "forward_features", None), getattr(net, "global_pool", None)
    if not (callable(features) and isinstance(pool, nn.Module) and isinstance(linear, nn.Linear)):
        raise UsageError(f"{type(net).__name__} does not split into forward_features, global_pool and "
                         "last_linear: no embedding or class activation map can be built for it")
    if linear.out_features != 1 or float(getattr(net, "drop_rate", 0.0) or 0.0) > 0 and net.training:
        raise UsageError(f"{type(net).__name__}: the class activation map needs one output logit in eval mode")
    return features, pool, linear


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    PAPER_ARCH: _paper_net,
    "seresnext_tiny": TinySENet,
}


def create_model(arch: str = PAPER_ARCH) -> nn.Module:
    """Build an untrained network with one output logit.

    Raises:
        UsageError: ``arch`` is not one of :data:`ARCHITECTURES`.
    """
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise UsageError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return factory()


def param_groups(model: nn.Module, lrs: dict[str, float]) -> list[dict]:
    """Split parameters into the paper's learning-rate groups.

    Args:
        model: A network with the children named in :data:`GROUPS`.
        lrs: Learning rate per group name (``stages_1_2``, ``stages_3_5``, ``classifier``).

    Returns:
        Optimizer parameter groups, each tagged with ``name``; every parameter is in exactly one.
    """
    children = dict(model.named_children())
    groups, seen = [], set()
    for name, child_names in GROUPS.items():
        params = [p for c in child_names if c in children for p in children[c].parameters()]
        seen.update(id(p) for p in params)
        groups.append({"name": name, "params": params, "lr": lrs[name]})
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise UsageError(f"parameters outside the learning-rate groups: {missing[:5]}")
    return groups


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_pretrained(model: nn.Module, source: str, arch: str = PAPER_ARCH) -> list[str]:
    """Load ImageNet weights into ``model``, skipping the classifier head.

    Args:
        model: Network from :func:`create_model`.
        source: ``"imagenet"`` (timm's published weights, needs internet) or a path
            to a local timm or Cadene state dict (``.pth``/``.pt``/``.safetensors``).
        arch: Architecture name, used for the timm download.

    Returns:
        The head keys that were skipped.

    Raises:
        CheckpointError: Offline, unreadable file, or keys that do not match.
    """
    if source == "imagenet":
        if not _hub_reachable():
            raise CheckpointError(
                "--pretrained imagenet needs internet to fetch timm's weights and none is reachable; "
                "download the state dict elsewhere and pass it with --pretrained PATH"
            )
        import timm  # lazy: see _paper_net

        state = timm.create_model(arch, pretrained=True).state_dict()
    else:
        state = _read_state_dict(Path(source))
    head = [k for k in state if k.startswith(("last_linear.", "fc.", "classifier."))]
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in head}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("last_linear.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"pretrained weights do not match {arch}: missing {missing[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}"
        )
    return head


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: optional, only for .safetensors files

        return load_file(str(path))
    return load_state_dict(path)
