"""Run every benchmark and print the tables (optionally write docs/benchmarks.md).

    pip install -e '.[bench]'
    python -m bench.run_all --markdown docs/benchmarks.md

``--quick`` runs tiny sizes (a check that everything runs, not figures to publish);
``--only keel`` skips the other frameworks; ``--json PATH`` saves the raw results.
Memory is measured in a fresh child process per framework (``--child memory KEY``).
The durable-runs suite (:mod:`bench.bench_durable`: journal cost on SQLite and Postgres per
durability mode, resume and replay of a 1,000-step run) runs last, in a child process of its
own (``--child durable``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from bench.bench_durable import durable_config, measure_durable
from bench.bench_keel import keel_frameworks
from bench.common import import_time, importtime_top, run_child
from bench.timing import SuiteConfig, Timing, run_memory, run_suite, run_suites

#: Modules imported for the import-time comparison (what each benchmark imports).
IMPORTS = {"keel": "keel", "langgraph": "langgraph.graph", "pydantic-ai": "pydantic_ai",
           "openai-agents": "agents"}
#: The frameworks whose concurrency memory is measured (one child process each).
MEMORY_KEYS = ("floor", "keel", "langgraph", "pydantic-ai", "openai-agents")


#: Concurrent runs in the memory measurement of the other frameworks (1000 for keel and the
#: floor): their 1000-run batches take 20-40 s each, and tracemalloc slows them further.
OTHERS_MEMORY_RUNS = 200
KEEL_SIDE = ("floor", "keel", "keel-def", "keel-inline", "keel-sqlite", "keel-default",
             "keel-scripted")
#: The longest single run of another framework we wait for (their 1000-step runs can take
#: minutes: the work per step grows with the length of the conversation).
RUN_CAP_S = 40.0


def config(quick: bool) -> tuple[SuiteConfig, SuiteConfig]:
    """(config for the floor and keel, config for the other frameworks)."""
    if quick:
        small = SuiteConfig(sizes=(1, 3), concurrent_runs=20, model_delay=0.01,
                            tool_delay=0.02, repeats=2, step_budget_s=2.0, parallel_repeats=3,
                            warmup_s=0.1, concurrent_repeats=1, settle_gc=False)
        return small, small
    ours = SuiteConfig()
    # The other frameworks take seconds to minutes per 1000-step run: fewer rounds (a run
    # over half the budget is timed once), one concurrent batch, and a single run still going
    # after RUN_CAP_S is stopped (its figure becomes a lower bound).
    theirs = SuiteConfig(repeats=3, step_budget_s=12.0, concurrent_repeats=1,
                         run_cap_s=RUN_CAP_S)
    return ours, theirs


def all_frameworks(only_keel: bool) -> tuple[dict[str, Any], dict[str, str]]:
    found = dict(keel_frameworks())
    skipped: dict[str, str] = {}
    if not only_keel:
        from bench.bench_frameworks import other_frameworks

        others, skipped = other_frameworks()
        found.update(others)
    return found, skipped


def suite_plan(key: str) -> tuple[str, ...]:
    """Which benches each framework runs (variants of keel and LangGraph: steps only)."""
    if key in ("keel-sqlite", "keel-default", "keel-scripted", "langgraph-saver"):
        return ("steps",)
    if key in ("keel-def", "keel-inline"):
        return ("steps", "concurrent")
    return ("steps", "concurrent", "parallel")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Timing):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _commit() -> str:
    """The checked-out commit, with "+ local changes" if src/ differs from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root,
                               text=True, capture_output=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + local changes in src/" if dirty.strip() else "")


def meta() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("keel-agents", "langgraph", "langchain-core", "pydantic-ai-slim",
                 "openai-agents", "pydantic"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
            "python": platform.python_version(), "platform": platform.platform(),
            "cores": os.cpu_count(), "versions": versions, "load_start": os.getloadavg()}


async def measure(frameworks: dict[str, Any], ours: SuiteConfig,
                  theirs: SuiteConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The floor and keel's variants interleaved (their figures are compared with each
    other at the µs level); then each other framework on its own."""
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    ours_fws = {k: fw for k, fw in frameworks.items() if k in KEEL_SIDE}
    started = time.perf_counter()
    print(f"[keel side] {', '.join(ours_fws)} (interleaved) ...", flush=True)
    results.update(await run_suites(ours_fws, ours, {k: suite_plan(k) for k in ours_fws}))
    print(f"[keel side] done in {time.perf_counter() - started:.1f} s", flush=True)
    for key, fw in frameworks.items():
        if key in KEEL_SIDE:
            continue
        started = time.perf_counter()
        print(f"[{key}] {fw.name} ...", flush=True)
        try:
            results[key] = await run_suite(fw, theirs, suite_plan(key))
        except Exception as exc:  # report it, keep benchmarking the rest
            errors[key] = f"{type(exc).__name__}: {exc}"
            print(f"[{key}] FAILED: {errors[key]}", flush=True)
            continue
        print(f"[{key}] done in {time.perf_counter() - started:.1f} s", flush=True)
    return results, errors


def memory(keys: list[str], quick: bool) -> tuple[dict[str, Any], dict[str, str]]:
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in keys:
        print(f"[memory] {key} ...", flush=True)
        args = ["memory", key] + (["--quick"] if quick else [])
        try:
            out[key] = run_child(args)
        except Exception as exc:
            errors[key] = str(exc)
            print(f"[memory] {key} FAILED: {exc}", flush=True)
    return out, errors


def imports(available: set[str], quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, module in IMPORTS.items():
        if key == "keel" or key in available:
            print(f"[import] {module} ...", flush=True)
            seconds = import_time(module, repeats=1 if quick else 5 if key == "keel" else 3)
            out[key] = {"module": module, "seconds": seconds}
    out["keel_top"] = importtime_top("keel")
    return out


def durable(quick: bool) -> tuple[dict[str, Any] | None, str | None]:
    """The durable-runs suite in a fresh process (its timings settle the garbage collector
    before every batch, which is cheap there and slow in this process's heap)."""
    print("[durable] journal cost per durability mode, resume, replay ...", flush=True)
    started = time.perf_counter()
    try:
        out = run_child(["durable"] + (["--quick"] if quick else []), timeout=3600)
    except Exception as exc:
        print(f"[durable] FAILED: {exc}", flush=True)
        return None, str(exc)
    print(f"[durable] done in {time.perf_counter() - started:.1f} s", flush=True)
    return out, None


def child(argv: list[str]) -> None:
    """``--child memory KEY [--quick]``: print one JSON line with the memory figures.
    ``--child durable [--quick]``: one JSON line with the durable-runs figures."""
    if argv[0] == "durable":
        to_stderr = functools.partial(print, file=sys.stderr, flush=True)
        cfg = durable_config("--quick" in argv)
        print(json.dumps(_jsonable(asyncio.run(measure_durable(cfg, to_stderr)))))
        return
    kind, key = argv[0], argv[1]
    if kind != "memory":
        raise SystemExit(f"unknown child task {kind!r}")
    quick = "--quick" in argv
    frameworks, skipped = all_frameworks(only_keel=key in keel_frameworks())
    if key not in frameworks:
        raise SystemExit(f"framework {key!r} is not available: {skipped.get(key, 'unknown')}")
    cfg = config(quick)[0]
    if key not in KEEL_SIDE and not quick:
        cfg = dataclasses.replace(cfg, concurrent_runs=OTHERS_MEMORY_RUNS)
    result = asyncio.run(run_memory(frameworks[key], cfg))
    print(json.dumps({**result, "runs": cfg.concurrent_runs}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return {}
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--markdown", metavar="PATH", help="write the results document here")
    parser.add_argument("--json", metavar="PATH", help="save the raw results as JSON")
    parser.add_argument("--only", choices=["keel"], help="benchmark keel and the floor only")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results: dict[str, Any] = {"meta": meta(), "quick": args.quick}
    ours, theirs = config(args.quick)
    results["config"] = {"keel": dataclasses.asdict(ours), "others": dataclasses.asdict(theirs)}
    frameworks, skipped = all_frameworks(only_keel=args.only == "keel")
    results["names"] = {k: fw.name for k, fw in frameworks.items()}
    results["skipped"] = skipped
    results["imports"] = imports(set(frameworks), args.quick)
    results["suites"], errors = asyncio.run(measure(frameworks, ours, theirs))
    results["memory"], mem_errors = memory(
        [k for k in MEMORY_KEYS if k in results["suites"]], args.quick)
    results["errors"] = {**errors, **{f"{k} (memory)": v for k, v in mem_errors.items()}}
    durable_results, durable_error = durable(args.quick)
    if durable_results is not None:
        results["durable"] = durable_results
    else:
        results["errors"]["durable"] = durable_error
    results["meta"]["load_end"] = os.getloadavg()
    results["meta"]["total_s"] = time.perf_counter() - started

    from bench.report import render_markdown, render_text

    print(render_text(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(results), f, indent=2)
    if args.markdown:
        from bench.bench_durable import update_doc
        from bench.bench_keel import MARKERS as TOOL_KINDS
        from bench.bench_patterns import MARKERS as PATTERNS

        kept = {m: _own_section(args.markdown, m) for m in (TOOL_KINDS, PATTERNS)}
        with open(args.markdown, "w") as f:
            f.write(render_markdown(results))
        for markers, section in kept.items():  # sections that come from their own runs
            if section:
                update_doc(args.markdown, section, markers=markers)
        print(f"wrote {args.markdown}")
    return results


def _own_section(path: str, markers: tuple[str, str]) -> str | None:
    """The section between ``markers`` already in the document at ``path`` (markers
    included): the patterns' and the tool kinds' come from their own runs."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    start, end = markers
    if start not in text or end not in text:
        return None
    return start + text.split(start, 1)[1].split(end, 1)[0] + end + "\n"


if __name__ == "__main__":
    main()
