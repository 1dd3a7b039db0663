"""Joining a Ray cluster: a refused or unreachable cluster is exit 2 with the way in (a stand-in Ray, none started)."""

from __future__ import annotations

import types

import pytest

from edgeleuk import cluster
from edgeleuk.core.errors import BackendUnavailable


def _ray_that_refuses() -> types.SimpleNamespace:
    class AuthenticationError(Exception):
        pass

    def init(**kwargs):
        raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}")

    return types.SimpleNamespace(is_initialized=lambda: False, init=init,
                                 exceptions=types.SimpleNamespace(AuthenticationError=AuthenticationError))


def test_a_refused_join_names_token_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "import_ray", _ray_that_refuses)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(BackendUnavailable) as err:
        cluster.connect("10.0.0.1:6379")
    text = str(err.value)
    assert "cannot reach the Ray cluster at 10.0.0.1:6379" in text and err.value.exit_code == 2
    assert "RAY_AUTH_MODE=token" in text and "ray get-auth-token" in text


def test_in_token_mode_the_hint_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "import_ray", _ray_that_refuses)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(BackendUnavailable) as err:
        cluster.connect("10.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in str(err.value)
