"""A real keel server on 127.0.0.1 (uvicorn, in a thread of the test process), a key per
role and tenant, and an HTTP client that exchanges them for tokens."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from keel.server import App, KeyStore
from tests.server.apps import make_app

ROLES = ("viewer", "operator", "reviewer", "admin")


class _Server(uvicorn.Server):
    """uvicorn's server, looking for the exit flag every 10 ms instead of every 100 ms: a
    test stops a server at its end, and each stop waited up to a tick for nothing."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            await asyncio.sleep(0.01)
            counter = (counter + 1) % 864_000


class ServerThread:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 until :meth:`stop`."""

    def __init__(self, app: App) -> None:
        self.spec = app
        config = uvicorn.Config(app.asgi(), host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=20)
        self.server: uvicorn.Server = _Server(config)
        self.exit_code: object = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run()
        except SystemExit as exc:  # uvicorn exits when the app fails to start
            self.exit_code = exc.code

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def make_keys(db: str, tenants: tuple[str, ...] = ("acme", "globex")) -> dict[tuple[str, str], str]:
    async def go() -> dict[tuple[str, str], str]:
        out = {}
        async with KeyStore(db) as keys:
            for tenant in tenants:
                for role in ROLES:
                    _, secret = await keys.create_key(tenant, role, name=f"{role} of {tenant}",
                                                      by="test")
                    out[(tenant, role)] = secret
        return out

    return asyncio.run(go())


@dataclass
class Served:
    url: str
    db: str
    keys: dict[tuple[str, str], str]
    thread: ServerThread
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self, tenant: str = "acme", role: str = "admin") -> str:
        if (tenant, role) not in self.tokens:
            r = httpx.post(f"{self.url}/v1/auth/token",
                           headers={"Authorization": f"Bearer {self.keys[(tenant, role)]}"})
            assert r.status_code == 200, r.text
            self.tokens[(tenant, role)] = r.json()["token"]
        return self.tokens[(tenant, role)]

    def client(self, tenant: str = "acme", role: str = "admin") -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={
            "Authorization": f"Bearer {self.token(tenant, role)}"})


def serve(tmp_path: Path, **options: Any) -> Iterator[Served]:
    db = str(tmp_path / "runs.db")
    keys = make_keys(db)
    thread = ServerThread(make_app(db, **options))
    url = thread.start()
    try:
        yield Served(url, db, keys, thread)
    finally:
        thread.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)
