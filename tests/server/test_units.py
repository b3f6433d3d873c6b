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


async def test_an_unreachable_key_store_is_a_clear_retryable_error() -> None:
    from keel.server import KeyStore

    keys = KeyStore("postgresql://postgres:hunter2@127.0.0.1:1/test", timeout=1.0)
    with pytest.raises(StoreUnavailable) as refused:
        await keys.list_keys()
    message = str(refused.value)
    # the key store opens its run store first: that is what says it cannot connect
    assert "cannot connect" in message and "127.0.0.1" in message
    assert "hunter2" not in message
    await keys.close()


async def test_a_key_store_waiting_past_its_timeout_on_a_lock_says_so(tmp_path: Path) -> None:
    import sqlite3

    from keel.server import KeyStore

    db = tmp_path / "runs.db"
    async with KeyStore(str(db)) as keys:
        await keys.create_key("acme", "viewer", name="first", by="t")
    async with KeyStore(str(db), timeout=0.2) as keys:
        await keys.list_keys()  # open before the lock is taken
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await keys.create_key("acme", "viewer", name="second", by="t")
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert [k.name for k in await keys.list_keys()] == ["first"]  # nothing half-done
