"""The app ``bench/server_load.py`` serves: the server tests' support agent (a scripted model,
no network) with the model's think time and a rate limit fit for a load test.

    python -m keel.cli serve bench.server_app:app --store URL --port N

``KEEL_BENCH_DELAY_MS`` is the model's think time per request (default 50); the per-key
rate limit is raised so that one operator key can drive every client of the benchmark.
This module exists to be served: the think time is set when it is imported.
"""

from __future__ import annotations

import os

from tests.server.apps import DELAY, make_app

#: requests per second (and burst) one key may make; far above what the benchmark sends
RATE_PER_S = 100_000.0

DELAY["s"] = float(os.environ.get("KEEL_BENCH_DELAY_MS", "50")) / 1000
app = make_app(os.environ.get("KEEL_STORE", ".keel/bench-server.db"),
               rate_per_s=RATE_PER_S, burst=int(RATE_PER_S))
