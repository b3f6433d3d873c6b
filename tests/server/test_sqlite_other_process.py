"""A server on an SQLite store must see what other processes write to the same file while it
runs: keys made with ``keel keys create``, or revoked with ``keel keys revoke``.

Found by bench/server_load.py (and fixed: the check now reads the header through SQLite,
which shares one lock per file among a process's connections): a key created by another
process after the server started was refused ("no such key"), and ``GET /v1/keys`` answered
503 "database disk image is malformed". The cause was in the store, not the server:
``keel.store._sqlite_schema._check_file`` read the file's header with a plain
``open()``/``close()`` each time a connection is opened, and closing any descriptor of a
file drops every POSIX lock this process holds on it (fcntl locks are per process, not per
descriptor). The server opens the file a second time at start-up (``KeyStore._open`` opens
the run store to check it) while its run store's connection is already open, so from then on
it holds no lock on the database. Another process that closes its last connection then takes
the exclusive lock, checkpoints and deletes the write-ahead log and its index, while the
server's connections still use the deleted ones: they read stale pages (a missing row, a
"malformed" page). See "How To Corrupt An SQLite Database File", section 2.2
(sqlite.org/howtocorrupt.html).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.server.apps import make_app
from tests.server.conftest import ServerThread, make_keys

_CREATE_KEY = """
import asyncio, sys
from keel.server import KeyStore
async def go():
    async with KeyStore(sys.argv[1]) as keys:
        print((await keys.create_key("acme", "operator", name="made outside", by="t"))[1])
asyncio.run(go())
"""

_REVOKE_KEY = """
import asyncio, sys
from keel.server import KeyStore
async def go():
    async with KeyStore(sys.argv[1]) as keys:
        await keys.revoke_key(sys.argv[2], by="t")
asyncio.run(go())
"""


def _in_another_process(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, check=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return done.stdout.strip()


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = tmp_path / "runs.db"
    admin = make_keys(str(db), tenants=("acme",))[("acme", "admin")]
    key_id = admin.split("_")[1]
    thread = ServerThread(make_app(str(db)))
    url = thread.start()
    token = httpx.post(f"{url}/v1/auth/token",
                       headers={"Authorization": f"Bearer {admin}"}).json()["token"]
    try:
        yield url, db, {"Authorization": f"Bearer {token}", "key_id": key_id}
    finally:
        thread.stop()


def test_a_key_created_by_another_process_is_accepted(server) -> None:  # type: ignore[no-untyped-def]
    url, db, _ = server
    key = _in_another_process(_CREATE_KEY, str(db))
    r = httpx.post(f"{url}/v1/auth/token", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text


def test_a_key_revoked_by_another_process_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    url, db, auth = server
    key_id = auth["key_id"]
    _in_another_process(_REVOKE_KEY, str(db), key_id)
    r = httpx.get(f"{url}/v1/runs", headers={"Authorization": auth["Authorization"]})
    assert r.status_code == 401, r.text
