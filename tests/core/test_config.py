from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeleuk.core.config import (
    config_names,
    config_text,
    describe_configs,
    from_mapping,
    load_toml,
    resolve_named,
)
from edgeleuk.core.errors import ConfigError


@dataclass(frozen=True)
class _Inner:
    lr: float = 0.1


@dataclass(frozen=True)
class _Cfg:
    name: str
    epochs: int = 6
    folds: tuple[int, ...] = (0, 1, 2)
    inner: _Inner = _Inner()
    seed: int | None = None


def test_loads_and_coerces(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('name = "x"\nepochs = 2\nfolds = [0]\n[inner]\nlr = 1\n')
    cfg = load_toml(_Cfg, p)
    assert cfg == _Cfg(name="x", epochs=2, folds=(0,), inner=_Inner(lr=1.0))
    assert isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    "data, match",
    [({"name": "x", "epoch": 3}, "unknown key"), ({"name": "x", "epochs": "3"}, "integer"),
     ({"name": "x", "inner": {"lr": 1, "momentum": 0.9}}, "unknown key"), ({}, "name"),
     ({"name": "x", "epochs": True}, "integer")],
)
def test_bad_config_is_an_error(data, match):
    with pytest.raises(ConfigError, match=match):
        from_mapping(_Cfg, data)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_toml(_Cfg, tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_toml(_Cfg, bad)


def test_names_and_documented_paths_find_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no train/ or export/ folder here
    paper = resolve_named("paper", "recipes")
    assert paper.name == "paper.toml" and "edgeleuk/configs/recipes" in str(paper).replace("\\", "/")
    for given in ("paper.toml", "train/paper.toml", Path("train") / "paper.toml"):
        assert resolve_named(given, "recipes") == paper
    assert resolve_named("export/cpu-fp32.toml", "profiles").name == "cpu-fp32.toml"


def test_an_existing_file_wins_and_other_missing_paths_are_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    own = tmp_path / "train" / "paper.toml"
    own.write_text('name = "mine"\n')
    assert resolve_named("train/paper.toml", "recipes") == Path("train/paper.toml")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_named("elsewhere/paper.toml", "recipes")  # a typo must not fall back silently
    with pytest.raises(ConfigError, match="packaged recipes: .*paper.*smoke"):
        resolve_named("nothing", "recipes")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_named("export/paper.toml", "recipes")  # the profiles' folder holds no recipes


def test_every_packaged_config_loads_and_is_listed() -> None:
    from edgeleuk.exporting.profile import load_profile
    from edgeleuk.training.recipe import load_recipe

    assert {"paper", "smoke", "demo"} <= set(config_names("recipes"))
    assert {"cpu-fp32", "openvino-int8"} <= set(config_names("profiles"))
    for name in config_names("recipes"):
        assert load_recipe(name).name == name
        assert name in describe_configs("recipes")
    for name in config_names("profiles"):
        assert load_profile(name).name == name
    assert config_text("profiles", "cpu-fp32").startswith("# Default export")


def test_recipes_and_profiles_commands(tmp_path) -> None:
    from typer.testing import CliRunner

    from edgeleuk.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["profiles"])
    assert listed.exit_code == 0 and "cpu-fp32" in listed.stdout and "openvino-int8" in listed.stdout
    printed = runner.invoke(app, ["recipes", "smoke"])
    assert printed.exit_code == 0 and 'name = "smoke"' in printed.stdout
    copy = tmp_path / "mine.toml"
    copy.write_text(printed.stdout.replace('epochs = 1', 'epochs = 2'))
    from edgeleuk.training.recipe import load_recipe

    assert load_recipe(copy).epochs == 2  # the printed text is a working, editable recipe
    missing = runner.invoke(app, ["recipes", "nope"])
    assert missing.exit_code == 2 and "smoke" in missing.stderr
