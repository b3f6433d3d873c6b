"""Timing and memory measurement.

Frameworks measured together are *interleaved*: for each benchmark, round after round, each
framework times one batch in turn, and each figure is the median over its rounds. A burst of
outside load (this machine is shared) then lands on every framework's samples alike instead
of on whichever one happened to be running.
"""

from __future__ import annotations

import asyncio
import gc
import math
import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    CONCURRENT_RUNS,
    CONCURRENT_TURNS,
    MODEL_DELAY_S,
    PARALLEL_TOOLS,
    STEP_SIZES,
    TOOL_DELAY_S,
    Framework,
    RunFn,
)

BENCHES = ("steps", "concurrent", "parallel")


@dataclass
class SuiteConfig:
    """Sizes of one benchmark pass (the defaults are the published figures)."""

    sizes: tuple[int, ...] = STEP_SIZES
    concurrent_runs: int = CONCURRENT_RUNS
    concurrent_turns: int = CONCURRENT_TURNS
    model_delay: float = MODEL_DELAY_S
    parallel_tools: int = PARALLEL_TOOLS
    tool_delay: float = TOOL_DELAY_S
    repeats: int = 7  #: rounds of step batches
    min_batch_s: float = 0.05  #: a step batch repeats the run until it lasts this long
    step_budget_s: float = 15.0  #: per framework and size; at least one round is timed
    run_cap_s: float | None = None  #: a single run still going after this is cancelled
    concurrent_repeats: int = 3
    concurrent_budget_s: float = 60.0
    parallel_repeats: int = 11
    warmup_s: float = 1.0
    benches: tuple[str, ...] = field(default=BENCHES)
    #: A full garbage collection before each timed batch (:func:`settle`). Off for smoke runs
    #: at tiny sizes, whose figures are not published: it costs ~0.1 s a batch in a fresh
    #: process, more in a test session's heap.
    settle_gc: bool = True


@dataclass(frozen=True)
class Timing:
    """Median seconds per run: wall clock, and CPU time of this process (all threads).
    ``samples`` is the number of timed batches; ``0`` means the one run was stopped at the
    cap, so the figures are lower bounds."""

    wall: float
    cpu: float
    samples: int


def settle(enabled: bool = True) -> None:
    """Before a timed batch: collect garbage, then freeze the survivors (e.g. runs kept by an
    earlier batch's store) so the collector does not rescan them during the batch; objects the
    batch creates are collected as usual. ``enabled=False`` does nothing (smoke runs)."""
    if not enabled:
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Samples:
    def __init__(self) -> None:
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.spent = 0.0
        self.done: Timing | None = None  # set when timing ended early (capped, single run)

    def add(self, wall: float, cpu: float, per: int = 1) -> None:
        self.walls.append(wall / per)
        self.cpus.append(cpu / per)
        self.spent += wall

    def timing(self) -> Timing:
        if self.done is not None:
            return self.done
        return Timing(statistics.median(self.walls), statistics.median(self.cpus),
                      len(self.walls))


async def _timed(fn: RunFn, times: int = 1) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(times):
        await fn()
    return time.perf_counter() - start, time.process_time() - cpu


async def _first_run(fn: RunFn, cfg: SuiteConfig, s: _Samples) -> int:
    """The untimed first run decides the batch size (0: no further rounds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        await asyncio.wait_for(fn(), cfg.run_cap_s)
    except TimeoutError:
        s.done = Timing(time.perf_counter() - t0, time.process_time() - c0, 0)
        return 0
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    if first > cfg.step_budget_s / 2:
        s.done = Timing(first, first_cpu, 1)
        return 0
    s.spent = first
    return max(1, math.ceil(cfg.min_batch_s / max(first, 1e-9)))


async def interleaved_steps(fws: Mapping[str, Framework], cfg: SuiteConfig
                            ) -> dict[str, dict[int, Timing]]:
    out: dict[str, dict[int, Timing]] = {k: {} for k in fws}
    for n in cfg.sizes:
        async with AsyncExitStack() as stack:
            runs = {k: await stack.enter_async_context(fw.step_run(n)) for k, fw in fws.items()}
            samples = {k: _Samples() for k in runs}
            batch = {k: await _first_run(run, cfg, samples[k]) for k, run in runs.items()}
            for _ in range(cfg.repeats):
                for k, run in runs.items():
                    s = samples[k]
                    if batch[k] and (not s.walls or s.spent < cfg.step_budget_s):
                        settle(cfg.settle_gc)
                        s.add(*await _timed(run, batch[k]), per=batch[k])
            for k, s in samples.items():
                out[k][n] = s.timing()
    return out


async def interleaved_concurrent(fws: Mapping[str, Framework], cfg: SuiteConfig
                                 ) -> dict[str, Timing]:
    """Wall (and CPU) seconds for ``cfg.concurrent_runs`` runs started at once. Each batch
    gets a fresh agent and store (so batches do not pile up journals) and 10 warm-up runs."""
    samples = {k: _Samples() for k in fws}
    turns, n = cfg.concurrent_turns, cfg.concurrent_runs
    for _ in range(cfg.concurrent_repeats):
        for k, fw in fws.items():
            s = samples[k]
            if s.walls and s.spent >= cfg.concurrent_budget_s:
                continue
            async with fw.step_run(turns - 1, cfg.model_delay) as run:
                await asyncio.gather(*(run() for _ in range(min(10, n))))
                settle(cfg.settle_gc)
                start, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(run() for _ in range(n)))
                s.add(time.perf_counter() - start, time.process_time() - cpu)
    return {k: s.timing() for k, s in samples.items()}


async def interleaved_parallel(fws: Mapping[str, Framework], cfg: SuiteConfig,
                               tool_delay: float | None = None) -> dict[str, Timing]:
    """Seconds for the parallel-tools run (``tool_delay`` defaults to ``cfg.tool_delay``)."""
    delay = cfg.tool_delay if tool_delay is None else tool_delay
    async with AsyncExitStack() as stack:
        runs = {k: await stack.enter_async_context(fw.parallel_run(cfg.parallel_tools, delay))
                for k, fw in fws.items()}
        for run in runs.values():
            await run()
        samples = {k: _Samples() for k in runs}
        for _ in range(cfg.parallel_repeats):
            for k, run in runs.items():
                samples[k].add(*await _timed(run))
    return {k: s.timing() for k, s in samples.items()}


async def warm_up(fw: Framework, seconds: float, sizes: Sequence[int]) -> None:
    """Step runs of each size (at least one each) for about ``seconds``, untimed: the first
    runs in a process are slower, which would favour the frameworks measured later."""
    start = time.perf_counter()
    for i, n in enumerate(sizes):
        until = start + seconds * (i + 1) / len(sizes)
        async with fw.step_run(n) as run:
            await run()
            while time.perf_counter() < until:
                await run()


async def run_suites(fws: Mapping[str, Framework], cfg: SuiteConfig,
                     plan: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Time several frameworks together, interleaved. ``plan`` maps a framework to the
    benches it runs (default ``cfg.benches``). Per framework: ``steps`` ({size: Timing}),
    ``concurrent_s`` / ``concurrent_cpu_s``, ``parallel_s`` / ``parallel_cpu_s`` and
    ``parallel_zero_s`` (the same run with tools that do not wait)."""
    wanted = {k: tuple(plan[k]) if plan and k in plan else cfg.benches for k in fws}
    out: dict[str, Any] = {k: {"framework": fw.name} for k, fw in fws.items()}
    for fw in fws.values():
        await warm_up(fw, cfg.warmup_s, [n for n in cfg.sizes if n <= 100])

    def subset(bench: str) -> dict[str, Framework]:
        return {k: fw for k, fw in fws.items() if bench in wanted[k]}

    try:
        if group := subset("steps"):
            for k, steps in (await interleaved_steps(group, cfg)).items():
                out[k]["steps"] = steps
        if group := subset("concurrent"):
            for k, t in (await interleaved_concurrent(group, cfg)).items():
                out[k]["concurrent_s"], out[k]["concurrent_cpu_s"] = t.wall, t.cpu
        if group := subset("parallel"):
            for k, t in (await interleaved_parallel(group, cfg)).items():
                out[k]["parallel_s"], out[k]["parallel_cpu_s"] = t.wall, t.cpu
            for k, t in (await interleaved_parallel(group, cfg, 0.0)).items():
                out[k]["parallel_zero_s"] = t.wall
    finally:
        gc.unfreeze()
    return out


async def run_suite(fw: Framework, cfg: SuiteConfig,
                    benches: Sequence[str] | None = None) -> dict[str, Any]:
    """Time one framework (:func:`run_suites` with one entry)."""
    result: dict[str, Any] = (await run_suites({"fw": fw}, cfg, {"fw": benches or
                                                                 cfg.benches}))["fw"]
    return result


# ------------------------------------------------------------------------------ memory


def _proc_status_bytes(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak)."""
    value = _proc_status_bytes("VmRSS")
    return peak_rss_bytes() if value is None else value


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0). Without it,
    ``ru_maxrss`` even carries the parent's peak across fork + exec."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else ``ru_maxrss``."""
    value = _proc_status_bytes("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


async def measure_concurrent_memory(fn: RunFn, n: int) -> dict[str, float]:
    """Peak memory of ``n`` concurrent runs: the RSS growth (peak RSS during a batch minus
    RSS before it) / n, then the tracemalloc peak of a second batch / n. Call it in a fresh
    process (``run_all --child memory KEY``) so memory freed by earlier benchmarks cannot
    hide the growth."""
    import tracemalloc

    await asyncio.gather(*(fn() for _ in range(10)))  # warm-up: lazy imports, caches
    gc.collect()
    reset_peak_rss()
    before = rss_bytes()
    await asyncio.gather(*(fn() for _ in range(n)))
    rss_delta = max(0, peak_rss_bytes() - before)
    gc.collect()
    tracemalloc.start()
    await asyncio.gather(*(fn() for _ in range(n)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"tracemalloc_peak_per_run_kb": peak / n / 1024,
            "rss_delta_per_run_kb": rss_delta / n / 1024}


async def run_memory(fw: Framework, cfg: SuiteConfig) -> dict[str, float]:
    """Peak memory per run of the concurrent workload (call in a fresh process)."""
    async with fw.step_run(cfg.concurrent_turns - 1, cfg.model_delay) as run:
        return await measure_concurrent_memory(run, cfg.concurrent_runs)

