import pytest
import torch

from edgeleuk.core.errors import CheckpointError, UsageError
from edgeleuk.modeling import model as model_mod
from edgeleuk.modeling.model import GROUPS, create_model, load_pretrained, param_groups


def test_paper_architecture_matches_cadene_senet():
    net = create_model("legacy_seresnext50_32x4d")
    names = [n for n, _ in net.named_children()]
    assert names[:6] == ["layer0", "pool0", "layer1", "layer2", "layer3", "layer4"]
    assert net.pool0.ceil_mode is True  # Cadene's stem max-pool
    assert net.last_linear.out_features == 1
    assert net.layer1[0].conv2.groups == 32


def test_param_groups_cover_every_parameter_once():
    net = create_model("seresnext_tiny")
    groups = param_groups(net, {"stages_1_2": 1e-6, "stages_3_5": 1e-4, "classifier": 1e-2})
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert [g["name"] for g in groups] == list(GROUPS)
    assert groups[2]["params"] == list(net.last_linear.parameters())


def test_unknown_architecture():
    with pytest.raises(UsageError, match="seresnext_tiny"):
        create_model("resnet-nope")


def test_local_pretrained_skips_head(tmp_path):
    torch.manual_seed(0)
    source = create_model("seresnext_tiny")
    state = source.state_dict()
    state["last_linear.weight"] = torch.zeros(1000, 128)  # an ImageNet head
    state["last_linear.bias"] = torch.zeros(1000)
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    target = create_model("seresnext_tiny")
    skipped = load_pretrained(target, str(path), arch="seresnext_tiny")
    assert skipped == ["last_linear.weight", "last_linear.bias"]
    assert torch.equal(target.layer0[0].weight, source.layer0[0].weight)


def test_local_pretrained_mismatch_lists_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv_stem.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="conv_stem.weight"):
        load_pretrained(create_model("seresnext_tiny"), str(path), arch="seresnext_tiny")


def test_imagenet_offline_fails_fast_naming_the_local_alternative(monkeypatch):
    monkeypatch.setattr(model_mod, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(CheckpointError, match="--pretrained PATH"):
        load_pretrained(create_model("seresnext_tiny"), "imagenet")
