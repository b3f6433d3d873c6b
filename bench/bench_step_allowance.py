"""The step allowance (``Launch.step_allowance``, keel.temporal's runtime seam): what it costs
a run that does not use it, and what running a run one step per execution costs in keel
itself (the part of a keel.temporal step that is not Temporal's).

    python -m bench.bench_step_allowance            # the full sizes
    python -m bench.bench_step_allowance --quick    # tiny sizes (a smoke run)

The workload is bench_durable's: bench_keel's zero-latency model calls the read-only
``lookup`` tool N times, then answers (2N + 1 steps), on a fresh MemoryStore per run, so the
figures are keel's own CPU cost and nothing else. Interleaved rounds, medians:

* **off** (the default: ``step_allowance=None``): the baseline.
* **on, never reached**: ``step_allowance`` larger than the run: the check on every step.
* **step at a time**: ``step_allowance=1``, and the run resumed after each pause until it
  completes, as keel.temporal's ``keel.advance`` does per activity (each execution replays
  the journal before its one new step, so the total grows with N²).

Each round times every mode once, a different mode first in each round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import keel
from bench.bench_durable import make_agent
from bench.common import FINAL_TEXT, check
from bench.timing import settle
from keel.core import new_run_id
from keel.runtime import Launch, Paused, execute

MODES = ("off", "on, never reached", "step at a time")


async def _one(agent: keel.Agent[str], mode: str) -> int:
    """One run of ``agent`` in ``mode``; returns how many executions it took."""
    store = keel.MemoryStore()
    if mode == "off":
        result = await execute(agent, store, Launch(input="go"))
        check(result.output == FINAL_TEXT, f"off: {result.output!r}")
        return 1
    if mode == "on, never reached":
        result = await execute(agent, store, Launch(input="go", step_allowance=10**9))
        check(result.output == FINAL_TEXT, f"on: {result.output!r}")
        return 1
    run_id = new_run_id()
    how = Launch(input="go", run_id=run_id, step_allowance=1)
    for n in range(1, 100_000):
        try:
            result = await execute(agent, store, how)
        except Paused:
            how = Launch(resume_id=run_id, step_allowance=1)
            continue
        check(result.output == FINAL_TEXT, f"step at a time: {result.output!r}")
        return n
    raise keel.RunError("the step-at-a-time run never completed")


async def measure(steps: int, rounds: int) -> dict[str, dict[str, float]]:
    """{mode: {"ms_per_run", "us_per_step", "ratio", "executions"}}; ratio against off."""
    agent = make_agent(steps)
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    executions: dict[str, int] = {}
    for mode in MODES:  # warm-up, untimed
        executions[mode] = await _one(agent, mode)
    for r in range(rounds):
        for mode in MODES[r % 3:] + MODES[:r % 3]:  # each mode first in turn: no order bias
            settle()
            t0 = time.perf_counter()
            await _one(agent, mode)
            samples[mode].append(time.perf_counter() - t0)
    base = statistics.median(samples["off"])
    work = 2 * steps + 1
    return {m: {"ms_per_run": statistics.median(s) * 1e3,
                "us_per_step": statistics.median(s) / work * 1e6,
                "ratio": statistics.median(s) / base, "executions": executions[m]}
            for m, s in samples.items()}


def report(steps: int, figures: dict[str, dict[str, float]]) -> str:
    lines = [f"step allowance: runs of {2 * steps + 1} steps (N={steps}), MemoryStore",
             f"{'mode':<20} {'ms/run':>10} {'µs/step':>10} {'vs off':>8} {'executions':>11}"]
    for mode, f in figures.items():
        lines.append(f"{mode:<20} {f['ms_per_run']:>10.2f} {f['us_per_step']:>10.1f} "
                     f"{f['ratio']:>7.2f}x {int(f['executions']):>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_step_allowance",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out: dict[str, Any] = {}
    for steps in ((2,) if args.quick else (10, 50)):
        figures = asyncio.run(measure(steps, 2 if args.quick else 40))
        print(report(steps, figures))
        out[str(steps)] = figures
    return out


if __name__ == "__main__":
    main()
