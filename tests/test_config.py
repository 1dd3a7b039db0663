from dataclasses import dataclass

import pytest

from edgeleuk.config import from_mapping, load_toml, resolve_named
from edgeleuk.errors import ConfigError


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


def test_resolve_named_finds_repo_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "paper.toml").write_text("")
    assert resolve_named("paper", "train", repo_root=tmp_path) == tmp_path / "train" / "paper.toml"
    with pytest.raises(ConfigError):
        resolve_named("nothing", "train", repo_root=tmp_path)
