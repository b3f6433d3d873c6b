"""``App(store=PostgresStore(...))``: a store object, not a URL, serves. The server keeps its
API keys beside the runs, so it must find the same database and schema from the object."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from keel import ConfigError
from keel.server import App
from keel.server._app import _store_url
from keel.store import PostgresStore
from tests._stores import PG_URL
from tests.server.apps import support
from tests.server.conftest import ServerThread, make_keys


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"keel_obj_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_postgres_store_object_serves_with_its_keys_in_its_schema(schema: str) -> None:
    store = PostgresStore(PG_URL, schema=schema)
    assert store.url == f"{PG_URL}?schema={schema}"
    keys = make_keys(store.url, tenants=("acme",))
    thread = ServerThread(App([support], store=store))
    url = thread.start()
    try:
        auth = httpx.post(f"{url}/v1/auth/token", timeout=30, headers={
            "Authorization": f"Bearer {keys[('acme', 'operator')]}"})
        assert auth.status_code == 200, auth.text
        headers = {"Authorization": f"Bearer {auth.json()['token']}"}
        r = httpx.post(f"{url}/v1/runs", headers=headers, timeout=30,
                       json={"agent": "support", "input": "hello", "wait": True})
        assert r.status_code == 200, r.text
        assert r.json()["run"]["output"] == "You said: hello"
        run_id = r.json()["run_id"]
    finally:
        thread.stop()

    async def stored() -> str:
        async with PostgresStore(PG_URL, schema=schema) as again:
            return (await again.get_run(run_id)).status

    assert asyncio.run(stored()) == "completed"


def test_a_store_object_without_a_url_is_refused_by_name() -> None:
    store = PostgresStore("host=127.0.0.1 dbname=test", schema="keel_x")
    assert store.url is None
    with pytest.raises(ConfigError, match="store URL"):
        _store_url(store)
