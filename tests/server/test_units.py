"""The server's small decisions, checked directly: how keel's errors map to HTTP statuses,
where the app's secret and key store come from, and unknown names on the package."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel.server
from keel import ConfigError
from keel.core import (
    RunError,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    TaskConflict,
    TaskNotFound,
    UserError,
)
from keel.server import App, AuthError, KeyNotFound, KeyRevoked
from keel.server._app import _store_url
from keel.server._errors import keel_error_status
from keel.store import MemoryStore, SQLiteStore
from tests.server.apps import support


@pytest.mark.parametrize(("error", "status"), [
    (RunNotFound("x"), 404), (TaskNotFound("x"), 404), (KeyNotFound("x"), 404),
    (AuthError("no", reason="unknown"), 401), (TaskConflict("x"), 409), (KeyRevoked("x"), 409),
    (StoreUnavailable("down"), 503), (StoreError("broken"), 503), (UserError("bad"), 400),
    (RunError("the run failed"), 500),
])
def test_keel_errors_map_to_http_statuses(error: Exception, status: int) -> None:
    assert keel_error_status(error)[0] == status  # type: ignore[arg-type]


def test_the_signing_secret_comes_from_the_environment_when_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_SERVER_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        App([support])
    monkeypatch.setenv("KEEL_SERVER_SECRET", "s" * 40)
    assert App([support]).secret == b"s" * 40
    assert App([support], secret=b"k" * 32).secret == b"k" * 32  # the argument wins


def test_keys_live_in_the_run_stores_database(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    assert _store_url(SQLiteStore(db)) == str(db)
    assert _store_url("postgresql://x@h/db") == "postgresql://x@h/db"
    with pytest.raises(ConfigError, match="store URL"):
        _store_url(MemoryStore())


def test_the_package_answers_unknown_names_with_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = keel.server.Nope  # type: ignore[attr-defined]
