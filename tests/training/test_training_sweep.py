"""Seed sweeps (Table 2) and their comparison (Figure 4, Mann-Whitney U) on tiny runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from training_support import fast_recipe

from edgeleuk.core.errors import UsageError
from edgeleuk.training import sweep
from edgeleuk.training.compare import compare_sweeps
from edgeleuk.training.recipe import Augment
from edgeleuk.training.sweep import run_sweep


@pytest.fixture(scope="module")
def sweeps(synth_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    a = run_sweep(synth_root, recipe=fast_recipe(name="fast-a", epochs=2), seeds=2, out=root / "a")
    # The second sweep trains without rotation augmentation: a different, comparable recipe.
    b = run_sweep(synth_root, recipe=fast_recipe(name="fast-b", epochs=2, augment=Augment(degrees=0.0)),
                  seeds=2, out=root / "b")
    return root, a, b


@pytest.mark.slow
def test_sweep_writes_table2(sweeps):
    root, table, _ = sweeps
    assert [r.seed for r in table.runs] == [0, 1]
    f1s = [r.best_metrics["f1"] for r in table.runs]
    stats = table.rows["f1"]
    assert stats["min"] == pytest.approx(100 * min(f1s)) and stats["max"] == pytest.approx(100 * max(f1s))
    assert stats["mean"] == pytest.approx(100 * np.mean(f1s)) and stats["std"] == pytest.approx(100 * np.std(f1s))
    assert set(table.rows) >= {"accuracy", "f1", "precision", "recall"}
    assert table.selected.best_metrics["f1"] == max(f1s)
    md = (root / "a" / "table2.md").read_text()
    assert "Mean ± Std" in md and "Selected model: seed" in md and "SYNTHETIC" in md
    data = json.loads((root / "a" / "table2.json").read_text())
    assert data["runs"] == 2 and data["selected"]["checkpoint"].endswith("best.pt")
    for seed in (0, 1):
        assert (root / "a" / f"seed-{seed}" / "summary.json").is_file()


@pytest.mark.slow
def test_sweep_skips_finished_runs(sweeps, synth_root, monkeypatch):
    root, table, _ = sweeps

    def boom(*args, **kwargs):
        raise AssertionError("a finished seed was trained again")

    monkeypatch.setattr(sweep, "train", boom)
    again = run_sweep(synth_root, recipe=fast_recipe(name="fast-a", epochs=2), seeds=2, out=root / "a")
    assert again.rows == table.rows


@pytest.mark.slow
def test_sweep_refuses_another_recipe_in_the_folder(sweeps, synth_root):
    root, _, _ = sweeps
    with pytest.raises(UsageError, match="fast-a"):
        run_sweep(synth_root, recipe=fast_recipe(name="other"), seeds=1, out=root / "a")


@pytest.mark.slow
def test_compare_writes_figure_and_tests(sweeps, tmp_path):
    root, a, b = sweeps
    report = compare_sweeps([root / "a", root / "b"], out=tmp_path / "cmp")
    for name in ("compare_f1.png", "compare.md", "compare.json"):
        assert (tmp_path / "cmp" / name).is_file()
    (test,) = report.tests
    best_a = [r.best_metrics["f1"] for r in a.runs]
    best_b = [r.best_metrics["f1"] for r in b.runs]
    expect = mannwhitneyu(best_a, best_b, alternative="greater")
    assert (test["u"], test["p"]) == pytest.approx((expect.statistic, expect.pvalue))
    assert report.sweeps[0].f1.shape == (2, 2)
    assert "Mann-Whitney" in report.to_markdown() and "SYNTHETIC" in report.to_markdown()


def _fake_sweep(path, best):
    """A sweep folder with given per-run F1 curves, as training would leave it."""
    for seed, curve in enumerate(best):
        run = path / f"seed-{seed}"
        run.mkdir(parents=True)
        lines = [{"epoch": e, "f1": f} for e, f in enumerate(curve)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        summary = {"out": str(run), "recipe": path.name, "seed": seed, "epochs": len(curve),
                   "epochs_done": len(curve), "best_epoch": int(np.argmax(curve)),
                   "best_metrics": {"f1": max(curve)}, "finished": True}
        (run / "summary.json").write_text(json.dumps(summary))


def test_compare_statistics_on_known_scores(tmp_path):
    _fake_sweep(tmp_path / "proposal", [[0.8, 0.90], [0.85, 0.91], [0.7, 0.92]])
    _fake_sweep(tmp_path / "nospeclr", [[0.6, 0.80], [0.7, 0.81], [0.75, 0.82]])
    report = compare_sweeps([tmp_path / "proposal", tmp_path / "nospeclr"], out=tmp_path / "out")
    (test,) = report.tests
    assert test["u"] == 9.0 and test["p"] == pytest.approx(0.05)  # exact test: 1 / C(6, 3)
    np.testing.assert_allclose(report.sweeps[0].f1.mean(axis=0), [0.78333333, 0.91])
    assert "SYNTHETIC" not in report.to_markdown()


def test_compare_needs_finished_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no finished runs"):
        compare_sweeps([tmp_path / "empty"], out=tmp_path / "out")


@pytest.mark.slow
def test_cli_sweep_and_compare(synth_root, tmp_path):
    from training_support import FAST_TOML
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    recipe = tmp_path / "fast.toml"
    recipe.write_text(FAST_TOML)
    res = CliRunner().invoke(app, ["sweep", str(synth_root), "--recipe", str(recipe), "--seeds", "1",
                                   "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and (tmp_path / "s" / "table2.md").is_file()
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "compare_f1.png").is_file()
    res = CliRunner().invoke(app, ["sweep", str(synth_root), "--recipe", str(recipe), "--seeds", "0",
                                   "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--seeds" in res.output
