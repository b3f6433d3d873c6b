"""API keys, roles and the audit log (keel.server.KeyStore), on a real SQLite file and a real
Postgres schema: what is written to the tables, what is refused, and tenant scoping in every
method."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.core import StoreError, StoreUnavailable, StoreVersionError, UserError
from keel.server import (
    ACTIONS,
    ROLES,
    ApiKey,
    AuthError,
    KeyNotFound,
    KeyRevoked,
    KeyStore,
    allows,
    check_role,
)
from keel.store import RunFilter, open_store
from tests._stores import PG_URL

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    """A fresh database for a key store, and raw SQL on it (what the tables hold)."""

    kind: str
    url: str
    schema: str | None = None
    path: Path | None = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            assert self.path is not None
            with closing(sqlite3.connect(self.path)) as conn:
                return conn.execute(sql, params).fetchall()
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            return conn.execute(sql.replace("?", "%s"), params).fetchall()

    def all_text(self) -> str:
        """Every byte the database holds for keel, as text (SQLite: the files themselves)."""
        if self.kind == "sqlite":
            assert self.path is not None
            files = [p for p in self.path.parent.iterdir() if p.name.startswith(self.path.name)]
            return b"".join(p.read_bytes() for p in files).decode("latin-1")
        tables = ("keel_api_keys", "keel_audit", "keel_server_secret")
        return "\n".join(str(r) for t in tables for r in self.rows(f"SELECT * FROM {t}"))


def _backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    if kind == "sqlite":
        path = tmp_path / "runs.db"
        yield Backend(kind, f"sqlite:///{path}", path=path)
        return
    schema = f"keel_keys_{uuid.uuid4().hex[:12]}"
    try:
        yield Backend(kind, f"{PG_URL}?schema={schema}", schema=schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, tmp_path)


@pytest.fixture
async def keys(db: Backend) -> AsyncIterator[KeyStore]:
    async with KeyStore(db.url) as store:
        yield store


def _secret(plaintext: str) -> str:
    return plaintext.split("_", 2)[2]


# ------------------------------------------------------------------------------- roles


def test_roles_matrix() -> None:
    expected = {
        "viewer": {"read"},
        "operator": {"read", "run", "chat"},
        "reviewer": {"read", "decide"},
        "admin": {"read", "run", "decide", "admin", "chat"},
    }
    assert set(ROLES) == set(expected)
    for role in ROLES:
        assert {a for a in ACTIONS if allows(role, a)} == expected[role], role
    # a customer token (never a key's role) may only chat
    assert {a for a in ACTIONS if allows("customer", a)} == {"chat"}
    with pytest.raises(UserError, match="cannot have the customer role"):
        check_role("customer")
    assert not any(allows("root", a) for a in ACTIONS)  # an unknown role is allowed nothing
    assert not allows("", "read")
    with pytest.raises(UserError, match="unknown action 'rn'"):
        allows("admin", "rn")


# ------------------------------------------------------------------------ create, verify


async def test_only_a_digest_of_the_secret_is_stored(keys: KeyStore, db: Backend) -> None:
    key, plaintext = await keys.create_key("acme", "operator", name="ci bot", by="alice")
    assert plaintext.startswith(f"keel_{key.key_id}_") and len(_secret(plaintext)) == 43
    assert (key.tenant, key.role, key.name, key.created_by) == ("acme", "operator", "ci bot",
                                                                "alice")
    row = db.rows("SELECT key_id, tenant, role, name, secret_hash, generation, created_by, "
                  "revoked_at FROM keel_api_keys")
    digest = hashlib.sha256(_secret(plaintext).encode()).hexdigest()
    assert row == [(key.key_id, "acme", "operator", "ci bot", f"sha256${digest}", 1, "alice",
                    None)]
    await keys.verify(plaintext)  # written again (last_used_at): still no secret
    await keys.close()
    text = db.all_text()
    assert key.key_id in text
    assert _secret(plaintext) not in text and plaintext not in text
    assert "secret" not in json.dumps(key.to_dict()).replace("secret_", "")


async def test_verify_returns_the_key_and_records_its_use(keys: KeyStore, db: Backend) -> None:
    key, plaintext = await keys.create_key("acme", "viewer", name="dash", by="alice")
    before = time.time()
    got = await keys.verify(plaintext)
    assert (got.key_id, got.tenant, got.role) == (key.key_id, "acme", "viewer")
    assert got.last_used_at is not None and got.last_used_at >= before
    [(used,)] = db.rows("SELECT last_used_at FROM keel_api_keys")
    assert used == pytest.approx(got.last_used_at)
    assert await keys.is_active(key.key_id) and await keys.is_active(key.key_id, 1)
    assert not await keys.is_active(key.key_id, 2)


async def test_verify_refuses_without_echoing_the_key(keys: KeyStore) -> None:
    key, plaintext = await keys.create_key("acme", "viewer", name="dash", by="alice")
    secret = _secret(plaintext)
    wrong = f"keel_{key.key_id}_{'A' * 43}"
    unknown = f"keel_{'0' * 16}_{secret}"
    cases = {
        "malformed": ["", "keel_", "keel_abc_def", plaintext + "x", plaintext[:-1],
                      plaintext.upper(), " " + plaintext, "x" * 10_000,
                      plaintext.replace("keel_", "keal_")],
        "unknown": [wrong, unknown],
    }
    for reason, bad in cases.items():
        for text in bad:
            with pytest.raises(AuthError) as caught:
                await keys.verify(text)
            assert caught.value.reason == reason, text
            shown = str(caught.value)
            assert secret not in shown and (len(text) < 20 or text.strip() not in shown)
    with pytest.raises(AuthError):
        await keys.verify(None)  # type: ignore[arg-type]
    await keys.revoke_key(key.key_id, by="bob")
    with pytest.raises(AuthError, match="revoked") as caught:
        await keys.verify(plaintext)
    assert caught.value.reason == "revoked" and secret not in str(caught.value)


async def test_bad_input_is_refused_before_anything_is_written(keys: KeyStore,
                                                               db: Backend) -> None:
    with pytest.raises(UserError, match="viewer, operator, reviewer, admin"):
        await keys.create_key("acme", "root", name="n", by="a")  # type: ignore[arg-type]
    for tenant in ("", "   ", "a\nb", "x" * 201, 7):
        with pytest.raises(UserError, match="tenant"):
            await keys.create_key(tenant, "viewer", name="n", by="a")  # type: ignore[arg-type]
    for name in ("", " ", "x" * 101, "two\nlines", "\x1b[31m", None):
        with pytest.raises(UserError, match="name="):
            await keys.create_key("acme", "viewer", name=name, by="a")  # type: ignore[arg-type]
    for by in ("", "a\tb", None):
        with pytest.raises(UserError, match="by"):
            await keys.create_key("acme", "viewer", name="n", by=by)  # type: ignore[arg-type]
    assert db.rows("SELECT count(*) FROM keel_api_keys") == [(0,)]
    assert db.rows("SELECT count(*) FROM keel_audit") == [(0,)]
    key, _ = await keys.create_key("acme", "viewer", name="x" * 100, by="a")
    assert key.name == "x" * 100


# ------------------------------------------------------------------------ rotate, revoke


async def test_rotate_replaces_the_secret_at_once(keys: KeyStore, db: Backend) -> None:
    key, old = await keys.create_key("acme", "reviewer", name="desk", by="alice")
    rotated, new = await keys.rotate_key(key.key_id, by="bob")
    assert new != old and new.startswith(f"keel_{key.key_id}_")
    assert (rotated.key_id, rotated.tenant, rotated.role, rotated.name) == (
        key.key_id, "acme", "reviewer", "desk")
    assert rotated.generation == 2 and rotated.rotated_at is not None
    with pytest.raises(AuthError) as caught:
        await keys.verify(old)
    assert caught.value.reason == "unknown"
    assert (await keys.verify(new)).generation == 2
    digest = hashlib.sha256(_secret(new).encode()).hexdigest()
    assert db.rows("SELECT secret_hash, generation FROM keel_api_keys") == [
        (f"sha256${digest}", 2)]
    assert not await keys.is_active(key.key_id, 1) and await keys.is_active(key.key_id, 2)


async def test_revoke_is_immediate_and_revoking_twice_is_an_error(keys: KeyStore,
                                                                  db: Backend) -> None:
    key, _ = await keys.create_key("acme", "admin", name="root", by="alice")
    revoked = await keys.revoke_key(key.key_id, by="bob")
    assert revoked.revoked_by == "bob" and not revoked.active
    assert not await keys.is_active(key.key_id)
    with pytest.raises(KeyRevoked, match=r"already revoked.*'bob'"):
        await keys.revoke_key(key.key_id, by="carol")
    with pytest.raises(KeyRevoked, match="nothing to rotate"):
        await keys.rotate_key(key.key_id, by="carol")
    [(revoked_at, revoked_by)] = db.rows("SELECT revoked_at, revoked_by FROM keel_api_keys")
    assert revoked_by == "bob" and revoked_at == pytest.approx(revoked.revoked_at)
    assert [r[0] for r in db.rows("SELECT action FROM keel_audit ORDER BY id")] == [
        "key.create", "key.revoke"]  # the refused second revoke wrote nothing
    assert (await keys.get_key(key.key_id)).revoked_by == "bob"


async def test_unknown_key_ids_are_no_such_key(keys: KeyStore) -> None:
    for key_id in ("0123456789abcdef", "nope", "", "x" * 500, "'; DROP TABLE x; --"):
        with pytest.raises(KeyNotFound, match="no API key"):
            await keys.get_key(key_id)
        with pytest.raises(KeyNotFound):
            await keys.rotate_key(key_id, by="a")
        with pytest.raises(KeyNotFound):
            await keys.revoke_key(key_id, by="a")
        assert not await keys.is_active(key_id)


# ------------------------------------------------------------------------------ tenants


async def test_every_method_is_scoped_to_its_tenant(keys: KeyStore, db: Backend) -> None:
    acme, _ = await keys.create_key("acme", "admin", name="a", by="root")
    globex, _ = await keys.create_key("globex", "viewer", name="g", by="root")
    before = db.rows("SELECT * FROM keel_api_keys ORDER BY key_id")
    for call in (lambda: keys.get_key(acme.key_id, tenant="globex"),
                 lambda: keys.rotate_key(acme.key_id, by="g-admin", tenant="globex"),
                 lambda: keys.revoke_key(acme.key_id, by="g-admin", tenant="globex")):
        with pytest.raises(KeyNotFound, match="in tenant 'globex'"):
            await call()
    assert db.rows("SELECT * FROM keel_api_keys ORDER BY key_id") == before
    assert [k.key_id for k in await keys.list_keys("acme")] == [acme.key_id]
    assert [k.key_id for k in await keys.list_keys("globex")] == [globex.key_id]
    assert {k.key_id for k in await keys.list_keys()} == {acme.key_id, globex.key_id}
    assert await keys.list_keys("initech") == []
    assert (await keys.get_key(acme.key_id, tenant="acme")).key_id == acme.key_id
    await keys.rotate_key(acme.key_id, by="a-admin", tenant="acme")
    await keys.revoke_key(globex.key_id, by="g-admin", tenant="globex")
    acme_log = await keys.read_audit(tenant="acme")
    assert [(e.action, e.target) for e in acme_log] == [("key.rotate", acme.key_id),
                                                        ("key.create", acme.key_id)]
    assert {e.tenant for e in await keys.read_audit(tenant="globex")} == {"globex"}
    assert len(await keys.read_audit()) == 4
    with pytest.raises(UserError, match="tenant"):
        await keys.list_keys("")


# -------------------------------------------------------------------------------- audit


async def test_each_key_operation_writes_its_audit_entry(keys: KeyStore, db: Backend) -> None:
    key, _ = await keys.create_key("acme", "operator", name="bot", by="alice")
    await keys.rotate_key(key.key_id, by="bob")
    await keys.revoke_key(key.key_id, by="carol")
    rows = db.rows("SELECT who, tenant, action, target, details FROM keel_audit ORDER BY id")
    assert [r[:4] for r in rows] == [("alice", "acme", "key.create", key.key_id),
                                     ("bob", "acme", "key.rotate", key.key_id),
                                     ("carol", "acme", "key.revoke", key.key_id)]
    assert json.loads(rows[0][4]) == {"role": "operator", "name": "bot"}
    assert json.loads(rows[1][4]) == {"generation": 2} and rows[2][4] is None
    [(at,)] = db.rows("SELECT at FROM keel_audit WHERE action = 'key.create'")
    assert at == pytest.approx(key.created_at)


async def test_a_key_change_and_its_audit_entry_commit_together(
        keys: KeyStore, db: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    key, plaintext = await keys.create_key("acme", "operator", name="bot", by="alice")

    def broken(*args: Any) -> int:
        raise StoreError("the audit log is full")

    monkeypatch.setattr(keys, "_append", broken)
    with pytest.raises(StoreError, match="full"):
        await keys.create_key("acme", "viewer", name="second", by="alice")
    with pytest.raises(StoreError, match="full"):
        await keys.rotate_key(key.key_id, by="bob")
    with pytest.raises(StoreError, match="full"):
        await keys.revoke_key(key.key_id, by="bob")
    monkeypatch.undo()
    assert db.rows("SELECT name, generation, revoked_at FROM keel_api_keys") == [
        ("bot", 1, None)]
    assert (await keys.verify(plaintext)).key_id == key.key_id
    assert db.rows("SELECT count(*) FROM keel_audit") == [(1,)]


async def test_audit_log_reads_newest_first_by_page(keys: KeyStore, db: Backend) -> None:
    written = [await keys.audit(who="alice", tenant="acme", action="run.start",
                                target=f"run-{i}", details={"i": i, "note": "ünïcode"})
               for i in range(5)]
    server = await keys.audit(who="ops", tenant=None, action="server.start", target="-")
    assert server.tenant is None and server.details is None
    page = await keys.read_audit(limit=3)
    assert [e.target for e in page] == ["-", "run-4", "run-3"]
    rest = await keys.read_audit(limit=3, before=page[-1].id)
    assert [e.target for e in rest] == ["run-2", "run-1", "run-0"]
    assert rest[-1] == written[0] and rest[-1].details == {"i": 0, "note": "ünïcode"}
    assert [e.target for e in await keys.read_audit(tenant="acme", limit=2)] == [
        "run-4", "run-3"]
    assert db.rows("SELECT count(*) FROM keel_audit WHERE tenant IS NULL") == [(1,)]
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": True}, {"before": "3"},
                {"tenant": "\x00"}):
        with pytest.raises(UserError):
            await keys.read_audit(**bad)
    for kw in ({"details": ["x"]}, {"details": {"x": "y" * 20_000}}, {"action": ""},
               {"who": ""}, {"target": "a\nb"}):
        args: dict[str, Any] = {"who": "a", "tenant": "acme", "action": "x", "target": "t",
                                **kw}
        with pytest.raises(UserError):
            await keys.audit(**args)
    assert db.rows("SELECT count(*) FROM keel_audit") == [(6,)]


# ------------------------------------------------------------------ secret, store, files


async def test_the_signing_secret_is_made_once_and_shared(keys: KeyStore, db: Backend) -> None:
    secret = await keys.signing_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    async with KeyStore(db.url) as other:
        assert await other.signing_secret() == secret
    assert db.rows("SELECT id, secret FROM keel_server_secret") == [(1, secret.hex())]


async def test_the_run_store_still_opens_next_to_the_keys(db: Backend) -> None:
    async with KeyStore(db.url) as keys:
        await keys.create_key("acme", "viewer", name="n", by="a")
    store = open_store(db.url)
    async with store:
        assert await store.list_runs(RunFilter(limit=1)) == []
    async with KeyStore(db.url) as keys:
        assert len(await keys.list_keys()) == 1


async def test_an_in_memory_store_keeps_keys_for_its_life() -> None:
    async with KeyStore(":memory:") as keys:
        key, plaintext = await keys.create_key("acme", "viewer", name="n", by="a")
        assert (await keys.verify(plaintext)).key_id == key.key_id
        assert [e.action for e in await keys.read_audit()] == ["key.create"]
        assert len(await keys.signing_secret()) == 32


async def test_a_file_that_is_not_a_keel_store_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
        conn.commit()
    with pytest.raises(StoreVersionError, match="not a keel run store"):
        async with KeyStore(path):
            pass
    with closing(sqlite3.connect(path)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["invoices"]


async def test_an_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    keys = KeyStore("postgresql://keel:hunter2@127.0.0.1:1/db", timeout=2)
    assert "hunter2" not in repr(keys)
    with pytest.raises((StoreError, StoreUnavailable)) as caught:
        await keys.list_keys()
    assert "127.0.0.1" in str(caught.value) and "hunter2" not in str(caught.value)
    await keys.close()


@pytest.mark.parametrize("url", ["", "redis://x", "sqlite:///", "bad\x00path"])
def test_unusable_urls_are_config_errors(url: str) -> None:
    with pytest.raises(UserError):
        KeyStore(url)


_OPENER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from keel.server import KeyStore

    url, go = sys.argv[1], Path(sys.argv[2])
    Path(f"{go}.ready.{sys.argv[3]}").touch()
    while not go.exists():
        time.sleep(0.002)

    async def main():
        async with KeyStore(url) as keys:
            key, _ = await keys.create_key("acme", "viewer", name="p" + sys.argv[3], by="p")
            print((await keys.signing_secret()).hex())

    asyncio.run(main())
""")


def test_two_processes_opening_a_fresh_store_at_once(db: Backend, tmp_path: Path) -> None:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    procs = [subprocess.Popen([sys.executable, "-W", "error", "-c", _OPENER, db.url, str(go),
                               str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for i in range(2)]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    go.touch()
    secrets_ = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        secrets_.append(out.decode().strip())
    assert secrets_[0] == secrets_[1] and len(secrets_[0]) == 64
    assert sorted(r[0] for r in db.rows("SELECT name FROM keel_api_keys")) == ["p0", "p1"]
    assert db.rows("SELECT count(*) FROM keel_server_secret") == [(1,)]


def test_api_key_records_hold_no_secret() -> None:
    fields = set(ApiKey.__dataclass_fields__)
    assert not any("secret" in f or "hash" in f for f in fields)


async def test_sqlite_reads_do_not_wait_for_a_writer_and_writes_leave_the_loop_free(
        tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with KeyStore(path, timeout=5) as keys:
        key, _ = await keys.create_key("acme", "viewer", name="n", by="a")
        with closing(sqlite3.connect(path, isolation_level=None)) as writer:
            writer.execute("BEGIN IMMEDIATE")  # another process writing a journal, say
            started = time.monotonic()
            assert await keys.is_active(key.key_id)
            assert [k.key_id for k in await keys.list_keys()] == [key.key_id]
            assert time.monotonic() - started < 1.0
            waiting = asyncio.create_task(keys.revoke_key(key.key_id, by="a"))
            ticks = 0
            while time.monotonic() - started < 0.3:  # the loop keeps running meanwhile
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks >= 10 and not waiting.done()
            writer.execute("COMMIT")
        assert not (await waiting).active
