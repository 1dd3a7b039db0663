"""Layer-wise learning rates and step decay, read back from the optimiser each epoch."""

from __future__ import annotations

import io

import pytest
import torch

from edgeleuk.modeling.model import create_model
from edgeleuk.training.recipe import load_recipe
from edgeleuk.training.state import build_optimizer, build_scheduler, current_lrs

PAPER_RATES = {"stages_1_2": 1e-6, "stages_3_5": 1e-4, "classifier": 1e-2}
PAPER_DECAY = [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]


def test_paper_rates_and_decay_every_epoch():
    # The paper's recipe on the tiny net (same child names); epochs are stubbed: no training.
    recipe = load_recipe("paper").replace(arch="seresnext_tiny", pretrained=None)
    opt = build_optimizer(create_model(recipe.arch), recipe)
    sched = build_scheduler(opt, recipe)
    seen = []
    for _ in range(recipe.epochs):
        seen.append(current_lrs(opt))
        opt.step()  # keeps torch from warning about scheduler-before-optimizer
        sched.step()
    for epoch, lrs in enumerate(seen):
        for group, base in PAPER_RATES.items():
            assert lrs[group] == pytest.approx(base * PAPER_DECAY[epoch], rel=1e-12), (epoch, group)


def test_groups_hold_the_paper_layers():
    model = create_model("seresnext_tiny")
    opt = build_optimizer(model, load_recipe("paper"))
    ids = {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    children = dict(model.named_children())
    expect = {"stages_1_2": ("layer0", "layer1"), "stages_3_5": ("layer2", "layer3", "layer4"),
              "classifier": ("last_linear",)}
    for group, names in expect.items():
        assert ids[group] == {id(p) for n in names for p in children[n].parameters()}


def test_nospeclr_uses_one_rate():
    recipe = load_recipe("ablation-nospeclr").replace(arch="seresnext_tiny")
    opt = build_optimizer(create_model(recipe.arch), recipe)
    assert set(current_lrs(opt).values()) == {1e-4}


def test_scheduler_state_survives_weights_only_round_trip():
    recipe = load_recipe("paper").replace(arch="seresnext_tiny")
    opt = build_optimizer(create_model(recipe.arch), recipe)
    sched = build_scheduler(opt, recipe)
    for _ in range(3):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(create_model(recipe.arch), recipe)
    sched2 = build_scheduler(opt2, recipe)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert current_lrs(opt2) == pytest.approx(current_lrs(opt))
    assert sched2.last_epoch == 4
