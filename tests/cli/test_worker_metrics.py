"""`keel worker --metrics-port --alerts --alert-webhook`: a real worker process serving
/metrics on loopback (the approval it waits on shows in the human-task gauges) and sending
an overdue-approval alert to a real webhook; bad options refused."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.cli.conftest import InvokeResult
from tests.cli.test_fleet_cli import SHIPPER

Keel = Callable[..., InvokeResult]
SRC = str(Path(__file__).resolve().parents[2] / "src")

RULES = '''
    from keel.observe import ApprovalsOverdue, SuccessRateBelow

    rules = [ApprovalsOverdue(name="approvals-waiting", minutes=60, older_than_minutes=0.001),
             SuccessRateBelow(name="success", threshold=0.9, minutes=5)]
    not_rules = "success below 90%"
'''


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_worker_serves_metrics_and_sends_alerts(
        keel: Keel, store: str, write_module: Callable[[str, str], Path], tmp_path: Path,
        webhook: tuple[str, type[_Hook]]) -> None:
    shipper = f"{write_module('shipper', SHIPPER)}:agent"
    rules = f"{write_module('rules', RULES)}:rules"
    r = keel("--store", store, "run", shipper, "ship A-1")
    assert r.exit_code == 3, r  # waiting for an approval
    url, hook = webhook
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "--store", store, "worker", shipper,
         "--metrics-port", str(port), "--alerts", rules, "--alert-webhook", url,
         "--alert-interval", "0.2"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        body = _scrape(f"http://127.0.0.1:{port}/metrics", deadline)
        while 'keel_human_tasks_waiting{kind="approval"} 1.0' not in body:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
            body = _scrape(f"http://127.0.0.1:{port}/metrics", deadline)
        while not hook.bodies:
            assert time.monotonic() < deadline, "no alert reached the webhook"
            time.sleep(0.1)
        time.sleep(1)  # more ticks: the alert is not sent again in its window
        body = _scrape(f"http://127.0.0.1:{port}/metrics", deadline)
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
    assert [b["alert"]["rule"] for b in hook.bodies] == ["approvals-waiting"]
    assert 'keel_alerts_total{rule="approvals-waiting"} 1.0' in body
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out


def test_worker_observe_options_bad_input(keel: Keel, store: str,
                                          write_module: Callable[[str, str], Path]) -> None:
    shipper = f"{write_module('shipper', SHIPPER)}:agent"
    rules = write_module("rules", RULES)
    r = keel("--store", store, "worker", shipper, "--once", "--metrics-port", "70000")
    assert r.exit_code == 2 and "metrics port" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--metrics-host", "example.com",
             "--metrics-port", "0")
    assert r.exit_code == 2 and "metrics host" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--alert-webhook", "http://x/y")
    assert r.exit_code == 2 and "--alerts" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--alerts", f"{rules}:not_rules")
    assert r.exit_code == 2 and "not a list of rules" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--alerts", f"{rules}:missing")
    assert r.exit_code == 2 and "no attribute" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--alerts", f"{rules}:rules",
             "--alert-webhook", "ftp://hook")
    assert r.exit_code == 2 and "URL" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--alerts", f"{rules}:rules",
             "--alert-interval", "0")
    assert r.exit_code == 2 and "--alert-interval" in r.stderr, r
    r = keel("--store", store, "worker", shipper, "--once", "--metrics-port", "0")
    assert r.exit_code == 0 and "metrics on http://127.0.0.1:" in r.stdout, r
