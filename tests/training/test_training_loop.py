"""End-to-end training runs on tiny synthetic data: outputs, resume, errors, skipped images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from training_support import FAST_TOML, fast_recipe

from edgeleuk.core.errors import UsageError
from edgeleuk.core.optics import SYNTH_UM_PER_PX
from edgeleuk.modeling.checkpoint import load_checkpoint
from edgeleuk.modeling.weights import safe_torch_load
from edgeleuk.training.dataset import select_records
from edgeleuk.training.loop import train
from edgeleuk.training.recipe import load_recipe
from edgeleuk.training.rundir import read_metrics

METRIC_KEYS = {"epoch", "train_loss", "val_loss", "confusion", "accuracy", "sensitivity", "specificity",
               "precision", "recall", "f1", "auc", "lr", "seconds"}


@pytest.fixture(scope="module")
def smoke_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    return train(synth_root, recipe="smoke", out=out, seed=3), out


@pytest.mark.slow
def test_one_epoch_of_smoke_writes_everything(smoke_run):
    result, out = smoke_run
    assert result.finished and result.epochs_done == 1 and result.best_epoch == 0
    for name in ("best.pt", "last.pt", "metrics.jsonl", "summary.json", "train.log", "curves.png",
                 "subjects.png", "subjects.json", "val_predictions.csv"):
        assert (out / name).is_file(), name
    lines = read_metrics(out / "metrics.jsonl")
    assert len(lines) == 1 and METRIC_KEYS <= set(lines[0])
    assert set(lines[0]["lr"]) == {"stages_1_2", "stages_3_5", "classifier"}
    assert result.synthetic and "SYNTHETIC" in result.describe()


@pytest.mark.slow
def test_best_checkpoint_carries_its_provenance(smoke_run, synth_root):
    result, out = smoke_run
    ckpt = load_checkpoint(out / "best.pt")
    meta = ckpt.meta
    assert (meta.arch, meta.recipe, meta.seed) == ("seresnext_tiny", "smoke", 3)
    assert meta.preprocess == load_recipe("smoke").preprocess
    assert meta.val_metrics["f1"] == pytest.approx(result.best_metrics["f1"])
    assert meta.data_fingerprint == result.data_fingerprint and meta.extra["synthetic"] is True
    train_cells = select_records(synth_root, load_recipe("smoke")).train
    n_hem = sum(r.path.name.endswith("_hem.bmp") for r in train_cells)
    assert meta.extra["pos_weight"] == pytest.approx(n_hem / (len(train_cells) - n_hem))  # loss weight used
    # The scale synth recorded, and the training cells' stain statistics, ride along for --fields.
    assert meta.um_per_px == SYNTH_UM_PER_PX
    assert meta.stain_reference is not None and meta.stain_reference.cells == len(train_cells)
    ckpt.build_model()
    state = safe_torch_load(out / "last.pt")  # weights_only=True
    assert state["next_epoch"] == 1 and state["seed"] == 3


@pytest.mark.slow
def test_existing_run_needs_resume(smoke_run, synth_root):
    _, out = smoke_run
    with pytest.raises(UsageError, match="--resume"):
        train(synth_root, recipe="smoke", out=out, seed=3)
    again = train(synth_root, recipe="smoke", out=out, seed=3, resume=True)  # finished: returned as is
    assert again.best_metrics == smoke_run[0].best_metrics
    with pytest.raises(UsageError, match="seed 3"):
        train(synth_root, recipe="smoke", out=out, seed=4, resume=True)


def _two_epochs():
    return fast_recipe(epochs=2, lr_milestones=(1,))


@pytest.mark.slow
def test_resume_equals_uninterrupted(synth_root, tmp_path):
    recipe = _two_epochs()
    train(synth_root, recipe=recipe, out=tmp_path / "full", seed=1)
    part = train(synth_root, recipe=recipe, out=tmp_path / "part", seed=1, stop_after=1)
    assert not part.finished and part.epochs_done == 1 and not (tmp_path / "part" / "summary.json").exists()
    resumed = train(synth_root, recipe=recipe, out=tmp_path / "part", seed=1, resume=True)
    assert resumed.finished
    a, b = (safe_torch_load(tmp_path / d / "last.pt") for d in ("full", "part"))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))
    assert a["scheduler"] == b["scheduler"] and a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["python"] == b["rng"]["python"]

    def strip(lines):
        return [{k: v for k, v in line.items() if "seconds" not in k} for line in lines]

    full_lines = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert len(full_lines) == 2 and full_lines[1]["lr"]["classifier"] == pytest.approx(1e-4)
    assert strip(full_lines) == strip(read_metrics(tmp_path / "part" / "metrics.jsonl"))


@pytest.mark.slow
def test_resume_refuses_another_seed(synth_root, tmp_path):
    train(synth_root, recipe=_two_epochs(), out=tmp_path / "r", seed=1, stop_after=1)
    with pytest.raises(UsageError, match="seed"):
        train(synth_root, recipe=_two_epochs(), out=tmp_path / "r", seed=2, resume=True)


@pytest.mark.slow
def test_unreadable_images_are_skipped_and_listed(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    recipe = fast_recipe(max_train_images=None, max_val_images=None, batch_size=8)
    bad_train = min(root.glob("training_data/fold_0/all/*.bmp"))
    bad_val = min((root / "prelim").glob("*.bmp"))
    bad_train.write_bytes(b"BM broken")
    bad_val.write_bytes(b"")
    result = train(root, recipe=recipe, out=tmp_path / "run")
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted([str(bad_train), str(bad_val)])
    n_val = len(list((root / "prelim").glob("*.bmp")))
    line = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert line["val_images"] == n_val - 1 and line["skipped"] == 2
    assert result.skipped == 2 and "skipped.txt" in result.describe()


def test_gather_and_pil_validation_agree(tiny_checkpoint):
    from edgeleuk.modeling.tta import TTAClassifier
    from edgeleuk.training.augment import rotation_stack
    from edgeleuk.training.evaluate import tta_logits

    ckpt = load_checkpoint(tiny_checkpoint)
    net = ckpt.build_model()
    imgs = np.random.default_rng(1).integers(0, 256, (2, 450, 450, 3), dtype=np.uint8)
    with torch.inference_mode():
        pil = tta_logits(net, torch.stack([rotation_stack(i, ckpt.meta.preprocess) for i in imgs]), None)
        gat = tta_logits(net, torch.from_numpy(imgs), TTAClassifier(net, ckpt.meta))
    torch.testing.assert_close(pil, gat, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cli_train_runs(synth_root, tmp_path):
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    recipe = tmp_path / "fast.toml"
    recipe.write_text(FAST_TOML)
    res = CliRunner().invoke(app, ["train", str(synth_root), "--recipe", str(recipe), "--out", str(tmp_path / "c"),
                                   "--seed", "2", "--pretrained", "none"])
    assert res.exit_code == 0, res.output
    assert "best epoch 0" in res.output and json.loads((tmp_path / "c" / "summary.json").read_text())["seed"] == 2
    res = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--recipe", str(recipe),
                                   "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "not found" in res.output


@pytest.mark.slow
def test_fresh_start_discards_lines_of_a_crashed_first_epoch(synth_root, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 0, "f1": 0.1}\n')
    (out / "skipped.txt").write_text("gone.bmp\tstale\n")
    train(synth_root, recipe=fast_recipe(), out=out, resume=True)  # nothing to resume: starts afresh
    lines = read_metrics(out / "metrics.jsonl")
    assert len(lines) == 1 and "train_loss" in lines[0]
    assert not (out / "skipped.txt").exists()


@pytest.mark.slow
def test_loader_workers_do_not_outlive_train(synth_root, tmp_path):
    import multiprocessing

    train(synth_root, recipe=fast_recipe(num_workers=1), out=tmp_path / "w1", seed=0)
    assert multiprocessing.active_children() == []
