"""bench/server_load.py at toy size, so it cannot rot: ``keel serve`` in a child process on
a fresh SQLite file, 10 SSE clients each following one run, 5 API reads a second, a 5 ms
model. It asserts what the benchmark checks (every journal event once and in order, every
run completed, no failed request, no error in the server's log), never a speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.server_load import bench_backend
from bench.server_load_core import LoadConfig, failed

pytestmark = pytest.mark.slow


async def test_ten_followers_get_every_event_once_and_in_order(tmp_path: Path) -> None:
    config = LoadConfig(clients=10, rate=5, delay_ms=5, duration_s=0, idle_s=0.5,
                        timeout_s=60)
    figures = await bench_backend("sqlite", config, tmp_path)
    assert failed(figures) == []
    assert figures["runs"] == figures["runs_completed"] == 10
    assert figures["events_received"] == figures["events_expected"] >= 30
    assert all(n == 0 for n in figures["faults"].values()), figures["faults"]
    assert figures["api_read_load"]["n"] + figures["api_read_idle"]["n"] > 0
