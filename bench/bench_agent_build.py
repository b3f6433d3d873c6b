"""Building an agent: what ``keel.Agent(...)`` costs with keel's defaults, against the same
construction with the two construction-time caches emptied before each build (the cost
before they existed), in the same process.

Every agent gets keel's default middleware, and two parts of it used to do the same work
for every agent: the paging middleware built its three drill-down tools from constant JSON
Schemas, each checked against its metaschema (``tool_from_schema``), and the data guard
compiled the same literal gates of the default data policy. Both are now remembered: a
schema's metaschema check by its JSON text (a failing schema is never remembered), a gate by
its set of literals.

* **cached**: ``keel.Agent("a", model=..., tools=[...])``, the caches warm (every agent
  after the first in a process);
* **uncached**: the same, the caches emptied before each build.

The rounds alternate between the two (this machine is shared); the figures are medians.

    python -m bench.bench_agent_build [--agents 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import keel
from keel.guard import _data_policy
from keel.testing import ScriptedModel
from keel.tools import _schema_tool


def lookup(i: int) -> str:
    """Look item ``i`` up."""
    return f"item {i}"


def build() -> keel.Agent[str]:
    return keel.Agent("bench", model=ScriptedModel(["done"]),
                      tools=[keel.tool(lookup, risk="read")])


def forget() -> None:
    _schema_tool._check_against_metaschema.cache_clear()
    _data_policy._hints.cache_clear()


def _per_agent(agents: int, before: Callable[[], None] | None) -> float:
    took = 0.0
    for _ in range(agents):
        if before is not None:
            before()
        start = time.perf_counter()
        build()
        took += time.perf_counter() - start
    return took / agents


def measure(agents: int, rounds: int) -> dict[str, float]:
    """Median microseconds per agent built, cached and uncached."""
    build()  # imports and first-use work out of the way
    cached: list[float] = []
    uncached: list[float] = []
    for _ in range(rounds):
        cached.append(_per_agent(agents, None))
        uncached.append(_per_agent(agents, forget))
    return {"cached_us": statistics.median(cached) * 1e6,
            "uncached_us": statistics.median(uncached) * 1e6}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    out = measure(args.agents, args.rounds)
    ratio = out["uncached_us"] / out["cached_us"]
    print(f"keel.Agent(...) with the default middleware, {args.agents} agents x "
          f"{args.rounds} rounds (median)")
    print(f"  {'build':10} {'us/agent':>10} {'ratio':>7}")
    print(f"  {'cached':10} {out['cached_us']:10.0f} {1.0:6.2f}x")
    print(f"  {'uncached':10} {out['uncached_us']:10.0f} {ratio:6.2f}x")
    return out


if __name__ == "__main__":
    main()
