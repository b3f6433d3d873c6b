"""Profile keel's per-step and per-run costs with cProfile (a diagnosis aid, not a benchmark).

    python -m bench.profile_keel [--steps 100] [--runs 20] [--journal memory|sqlite] [--top 25]

Prints the functions with the most own time, then the most cumulative time, for ``--runs``
runs of ``--steps`` steps each (the workload of :mod:`bench.bench_keel`). cProfile slows
Python code down about 2x, evenly enough that the shares are what matter.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from bench.bench_keel import Keel


async def _profile(steps: int, runs: int, journal: str, prof: cProfile.Profile) -> float:
    async with Keel(journal).step_run(steps) as run:
        await run()
        start = time.process_time()
        prof.enable()
        for _ in range(runs):
            await run()
        prof.disable()
        return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_keel")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--journal", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    prof = cProfile.Profile()
    cpu = asyncio.run(_profile(args.steps, args.runs, args.journal, prof))
    steps = args.steps * args.runs
    print(f"{args.runs} runs x {args.steps} steps, {args.journal} journal: "
          f"{cpu / steps * 1e6:.1f} µs CPU per step under the profiler")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
