"""The Postgres run store: the conformance suite, plus what only a shared database shows.

These tests need the Postgres server that CI runs on 127.0.0.1:5432 (database ``test``,
trust auth; ``KEEL_TEST_POSTGRES_URL`` points them elsewhere). When it is not reachable they
fail: a store backend that is never tested is not a passing one.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from keel.core import (
    ConfigError,
    LeaseLost,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    StoreVersionError,
)
from keel.store import SCHEMA_VERSION, PostgresStore, RunStore, open_store
from keel.store._postgres_connect import parse_target
from keel.testing import StoreConformance
from keel.testing._store_conformance import assert_same, sample_entry, sample_run

URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _new_schema() -> str:
    return f"keel_test_{uuid.uuid4().hex[:12]}"


def _sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _tables(schema: str) -> list[str]:
    return [r[0] for r in _sql("SELECT tablename FROM pg_tables WHERE schemaname = %s "
                               "ORDER BY tablename", (schema,))]


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema name; the schema (if created) is dropped afterwards."""
    name = _new_schema()
    yield name
    _sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[RunStore]:
        async with PostgresStore(URL, schema=schema) as store:
            yield store


# ------------------------------------------------------------------------------ opening


async def test_open_store_urls_strip_the_schema_parameter(schema: str) -> None:
    for scheme in ("postgresql", "postgres"):
        url = URL.replace("postgresql://", f"{scheme}://", 1)
        store = open_store(f"{url}?schema={schema}&application_name=keel-test")
        assert isinstance(store, PostgresStore)
        async with store:
            assert store.schema == schema
            await store.create_run(sample_run(f"run-{scheme}"))
    target = parse_target(f"{URL}?schema={schema}&sslmode=disable", None)
    assert "schema" not in target.conninfo and "sslmode" in target.conninfo
    assert _tables(schema) == ["keel_feedback", "keel_journal", "keel_meta", "keel_outbox",
                               "keel_runs", "keel_settings", "keel_tasks"]


def test_bad_schema_names_and_clashes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresStore(URL, schema="no spaces; drop")
    with pytest.raises(ConfigError, match="give it once"):
        PostgresStore(f"{URL}?schema=a", schema="b")


async def test_open_creates_no_connection_until_used(schema: str) -> None:
    store = open_store(f"{URL}?schema={schema}")
    await store.close()
    await store.close()  # twice is fine
    assert _tables(schema) == []
    with pytest.raises(StoreError, match="was closed"):
        await store.get_run("x")


async def test_close_is_safe_twice_and_refuses_later_use(schema: str) -> None:
    store = PostgresStore(URL, schema=schema)
    await store.create_run(sample_run())
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="was closed"):
        await store.get_run("run-1")


async def test_an_unreachable_server_fails_fast_naming_it_without_the_password() -> None:
    start = time.monotonic()
    store = open_store("postgresql://keel:s3cret-pw@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable) as info:
        async with store:
            pass
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "127.0.0.1:1" in message and "pg_isready -h 127.0.0.1 -p 1" in message
    assert "s3cret" not in message and "s3cret" not in repr(store)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert info.value.retryable


async def test_an_unknown_host_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith(".invalid"):  # no resolver is asked: the test stays offline
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"no-such-host\.invalid:5432") as info:
        await PostgresStore("postgresql://u:hunter2@no-such-host.invalid/test").get_run("x")
    assert time.monotonic() - start < 5
    assert "hunter2" not in str(info.value)
    assert "Check that Postgres is running" in str(info.value)


async def test_a_wrong_database_says_so() -> None:
    url = URL.rsplit("/", 1)[0] + "/keel_no_such_db"
    with pytest.raises(StoreError, match="Check the database name") as info:
        async with PostgresStore(url):
            pass
    assert not info.value.retryable


async def test_a_newer_schema_is_refused_untouched(schema: str) -> None:
    _sql(f'CREATE SCHEMA "{schema}"')
    _sql(f'CREATE TABLE "{schema}".keel_meta (key text PRIMARY KEY, value text NOT NULL)')
    _sql(f"INSERT INTO \"{schema}\".keel_meta VALUES ('schema_version', '99')")
    for _ in range(2):
        with pytest.raises(StoreVersionError, match="newer keel"):
            async with PostgresStore(URL, schema=schema):
                pass
    assert _tables(schema) == ["keel_meta"]
    assert _sql(f'SELECT key, value FROM "{schema}".keel_meta') == [("schema_version", "99")]


async def test_foreign_tables_with_keel_names_are_refused(schema: str) -> None:
    _sql(f'CREATE SCHEMA "{schema}"')
    _sql(f'CREATE TABLE "{schema}".keel_runs (id int)')
    with pytest.raises(StoreVersionError, match="not a keel run store"):
        async with PostgresStore(URL, schema=schema):
            pass
    assert _tables(schema) == ["keel_runs"]


async def test_stores_opening_a_new_schema_at_once_create_it_once(schema: str) -> None:
    stores = [PostgresStore(URL, schema=schema) for _ in range(6)]
    try:
        await asyncio.gather(*(s.__aenter__() for s in stores))
        await stores[0].create_run(sample_run())
        assert [r.run_id for r in await stores[5].list_runs()] == ["run-1"]
    finally:
        for s in stores:
            await s.close()
    assert _sql(f'SELECT value FROM "{schema}".keel_meta') == [(str(SCHEMA_VERSION),)]


# ------------------------------------------------------------------------- concurrency


async def test_many_coroutines_appending_to_many_runs(schema: str) -> None:
    async with PostgresStore(URL, schema=schema, max_size=8) as store:
        for i in range(16):
            await store.create_run(sample_run(f"run-{i}"))
            await store.acquire_lease(f"run-{i}", "w1", 60)

        async def steps(i: int) -> None:
            for n in range(0, 30, 3):  # singles and batches, fenced and not
                await store.append(f"run-{i}", [sample_entry(n)], lease="w1")
                await store.append(f"run-{i}", [sample_entry(n + 1), sample_entry(n + 2)],
                                   lease=None if n % 2 else "w1")

        await asyncio.gather(*(steps(i) for i in range(16)))
        for i in range(16):
            assert_same(await store.read_journal(f"run-{i}"),
                        [sample_entry(n) for n in range(30)], f"the journal of run-{i}")


async def test_a_takeover_during_appends_fences_the_old_owner(schema: str) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        await store.create_run(sample_run("run-t"))
        await store.acquire_lease("run-t", "w1", 60)
        written: list[int] = []
        busy = asyncio.Event()

        async def old_owner() -> None:
            for n in range(200):
                try:
                    await store.append("run-t", [sample_entry(n)], lease="w1")
                except StoreError:
                    return
                written.append(n)
                if n == 20:
                    busy.set()

        task = asyncio.create_task(old_owner())
        await busy.wait()
        await store.acquire_lease("run-t", "w2", 60, steal_from="w1")
        await task
        journal = await store.read_journal("run-t")
        assert [e.seq for e in journal] == written, "a write landed after the takeover"
        assert len(written) < 200


_CLAIMER = textwrap.dedent("""
    import asyncio, json, sys
    from keel.store import PostgresStore

    async def main(url, schema, owner):
        claimed = []
        async with PostgresStore(url, schema=schema) as store:
            print("ready", flush=True)
            sys.stdin.readline()  # "go": both processes start claiming together
            while True:
                got = await store.claim_runs(owner, 60, limit=2)
                if not got:
                    break
                claimed += [r.run_id for r in got]
        print(json.dumps(claimed))

    asyncio.run(main(*sys.argv[1:]))
""")


@pytest.mark.slow
async def test_two_processes_claiming_never_share_a_run(schema: str) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        for i in range(200):
            await store.create_run(sample_run(f"q-{i:03d}", created_at=1_700_000_000.0 + i))
    pipe = asyncio.subprocess.PIPE
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLAIMER, URL, schema, f"proc-{n}", stdin=pipe, stdout=pipe,
        stderr=pipe) for n in range(2)]
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 60)
        assert line == b"ready\n", (line, await p.stderr.read() if p.stderr else b"")
    outs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    claims = [json.loads(out) for out, _ in outs]
    everything = claims[0] + claims[1]
    assert len(everything) == len(set(everything)) == 200, "a run was claimed twice or never"
    assert all(claims), f"one process claimed nothing: the test did not race ({claims})"
    owners = dict(_sql(f'SELECT run_id, lease_owner FROM "{schema}".keel_runs'))
    for n, claimed in enumerate(claims):
        assert all(owners[run_id] == f"proc-{n}" for run_id in claimed)


async def test_lease_expiry_uses_the_database_clock(schema: str) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        await store.create_run(sample_run("run-clock"))
        (db_now,) = _sql("SELECT extract(epoch FROM clock_timestamp())::float8")[0]
        got = await store.acquire_lease("run-clock", "w1", 30)
        assert got.lease_expires_at is not None
        assert db_now + 29 < got.lease_expires_at < db_now + 32


async def test_a_batch_mixing_int_and_float_times_is_stored(schema: str) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        await store.create_run(sample_run())
        await store.append("run-1", [sample_entry(0, latency_ms=12), sample_entry(1)])
        got = await store.read_journal("run-1")
        assert [e.latency_ms for e in got] == [12.0, 12.5]


@pytest.mark.parametrize("size", [3, 40], ids=["values", "unnest"])
async def test_batches_of_any_size_keep_order_fence_and_are_atomic(schema: str,
                                                                  size: int) -> None:
    async with PostgresStore(URL, schema=schema) as store:
        await store.create_run(sample_run())
        await store.acquire_lease("run-1", "w1", 60)
        first = [sample_entry(n, f"k{size - n:03d}") for n in range(size)]  # keys descending
        await store.append("run-1", first, lease="w1")
        second = [sample_entry(size + n) for n in range(size)]
        await store.append("run-1", second)
        clash = [sample_entry(2 * size + n) for n in range(size)] + [first[-1]]
        with pytest.raises(StoreError, match="already has the result entry"):
            await store.append("run-1", clash, lease="w1")
        with pytest.raises(LeaseLost):
            await store.append("run-1", clash[:-1], lease="w2")
        with pytest.raises(RunNotFound):
            await store.append("nope", clash[:-1], lease="w1")
        assert_same(await store.read_journal("run-1"), first + second, "the journal")


def test_urls_keep_their_form_when_the_schema_is_taken_out() -> None:
    from keel.store._postgres_connect import _take_schema

    assert _take_schema("postgresql:///test?host=/var/run/postgresql&schema=x") == (
        "postgresql:///test?host=%2Fvar%2Frun%2Fpostgresql", "x")
    assert _take_schema("postgresql://u@h/db?options=-c%20x%3Dy&schema=s") == (
        "postgresql://u@h/db?options=-c%20x%3Dy", "s")
    assert _take_schema("postgresql://u@h/db") == ("postgresql://u@h/db", None)


async def test_a_unix_socket_url_connects() -> None:
    import uuid

    from keel.store import open_store

    schema = f"keel_sock_{uuid.uuid4().hex[:8]}"
    store = open_store(f"postgresql:///test?host=/var/run/postgresql&schema={schema}")
    try:
        assert await store.list_runs() == []
    finally:
        await store.close()
        import psycopg

        async with await psycopg.AsyncConnection.connect(
                "postgresql:///test?host=/var/run/postgresql", autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
