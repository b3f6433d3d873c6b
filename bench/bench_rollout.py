"""What versions and rollouts cost on the path users take, against the same work without
them, in the same process. The machine is shared, so the variants are interleaved call by
call (each build or run of one variant is followed by one of the other) and each figure is
the median of the single calls:

* **build**: ``keel.Agent("bench", model=..., tools=[plain def tool])`` with every default,
  with ``Agent.version`` computed (on) and with the hash replaced by a constant (off);
* **run**: one run of that agent on a MemoryStore (a tool call, then the answer), recording
  the version in the run's metadata (on) or not (off);
* **rollout.run**: the same run through ``Rollout.run`` (the choice from the cached state,
  the rollout tag in the metadata) against ``agent.run``.

    python -m bench.bench_rollout [--builds 400] [--runs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import keel
from keel.rollout import Rollout, Versions
from keel.runtime import _agent
from keel.store import MemoryStore
from keel.testing import ScriptedModel, call


def lookup(i: int) -> str:
    """Look item ``i`` up."""
    return f"item {i}"


def build(instructions: str = "Help.") -> keel.Agent[str]:
    return keel.Agent("bench", model=ScriptedModel([call("lookup", {"i": 1}), "done"],
                                                   record_requests=False),
                      instructions=instructions, tools=[keel.tool(risk="read")(lookup)])


class _VersionOff:
    """The agent module's version hash replaced by a constant (what keel did before)."""

    def __enter__(self) -> None:
        self.saved = _agent.agent_version
        _agent.agent_version = lambda **_: "off"  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        _agent.agent_version = self.saved  # type: ignore[assignment]


def _build_off() -> None:
    with _VersionOff():
        build()


def builds(n: int) -> tuple[float, float]:
    """Median seconds per build, version on and off, interleaved."""
    on: list[float] = []
    off: list[float] = []
    for i in range(n):
        for fn, out in ((build, on), (_build_off, off)) if i % 2 else \
                ((_build_off, off), (build, on)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(on), statistics.median(off)


async def runs(n: int, a: Callable[[int], Awaitable[Any]],
               b: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """Median seconds per call of ``a`` and of ``b``, interleaved."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        order = ((a, 0), (b, 1)) if i % 2 else ((b, 1), (a, 0))
        for fn, k in order:
            start = time.perf_counter()
            await fn(i)
            times[k].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


async def measure(n_builds: int, n_runs: int) -> dict[str, tuple[float, float]]:
    """Median microseconds (on, off) of each comparison."""
    on = build()
    with _VersionOff():
        off = build()
    v1, v2 = build(), build("Help more.")
    store_a, store_b, store_r = MemoryStore(), MemoryStore(), MemoryStore()
    rollout = Rollout("bench", Versions(v1=v1, v2=v2), store=store_r, current="v1",
                      candidate="v2", steps=(10, 100))
    await rollout.start()
    builds(20)  # first-use work out of the way
    out = {"build": builds(n_builds),
           "run": await runs(n_runs, lambda i: on.run("hi", store=store_a),
                             lambda i: off.run("hi", store=store_b)),
           "rollout": await runs(n_runs, lambda i: rollout.run("hi", user=f"u{i}"),
                                 lambda i: v1.run("hi", store=store_b, user=f"u{i}"))}
    return {k: (a * 1e6, b * 1e6) for k, (a, b) in out.items()}


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=400)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args(argv)
    m = asyncio.run(measure(args.builds, args.runs))
    print("versions and rollouts (median us per call, interleaved; ratio = on / off)")
    for key, label in (("build", "build (Agent.version)"), ("run", "run (version recorded)"),
                       ("rollout", "Rollout.run vs agent.run")):
        on, off = m[key]
        print(f"  {label:28} {on:9.0f} vs {off:9.0f}  {on / off:5.2f}x")
    return m


if __name__ == "__main__":
    main()
