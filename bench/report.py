"""Turn the results of :mod:`bench.run_all` into tables, PASS/MISS verdicts and markdown."""

from __future__ import annotations

from typing import Any

from bench.common import Table
from bench.timing import Timing

TARGET_US_MEMORY = 50.0
TARGET_US_SQLITE = 150.0
TARGET_FLAT = 1.5
TARGET_CONCURRENT_X = 2.0
TARGET_KB_PER_RUN = 30.0
TARGET_PARALLEL_X = 1.2
TARGET_IMPORT_S = 0.3
#: A plain ``def`` tool's run against the same run with an ``async def`` tool.
TARGET_SYNC_X = 1.3


def _steps(results: dict[str, Any], key: str) -> dict[int, Timing]:
    suite = results["suites"].get(key) or {}
    steps: dict[int, Timing] = suite.get("steps", {})
    return steps


def overhead_us(results: dict[str, Any], key: str, n: int, cpu: bool = False) -> float | None:
    """(run time - floor time) / n, in µs (wall clock, or CPU time of the process)."""
    mine, floor = _steps(results, key).get(n), _steps(results, "floor").get(n)
    if mine is None or floor is None:
        return None
    if cpu:
        return (mine.cpu - floor.cpu) / n * 1e6
    return (mine.wall - floor.wall) / n * 1e6


def sync_ratio(results: dict[str, Any], key: str) -> float | None:
    """The worst (run time with ``key``'s tool) / (run time with the async tool) over the
    sizes above 1 step, both measured interleaved in the same process."""
    mine, base = _steps(results, key), _steps(results, "keel")
    ratios = [mine[n].wall / base[n].wall for n in _sizes(results)
              if n > 1 and n in mine and n in base]
    return max(ratios) if ratios else None


def _cell(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "**MISS**")


def _sizes(results: dict[str, Any]) -> list[int]:
    return list(results["config"]["keel"]["sizes"])


def _keys(results: dict[str, Any]) -> list[str]:
    return list(results["suites"])


# ------------------------------------------------------------------------------ tables


def overhead_table(results: dict[str, Any], cpu: bool = False) -> Table:
    sizes = _sizes(results)
    rows = []
    for key in _keys(results):
        if key == "floor" or "steps" not in results["suites"][key]:
            continue
        values = [overhead_us(results, key, n, cpu) for n in sizes]
        capped = [_steps(results, key)[n].samples == 0 if n in _steps(results, key) else False
                  for n in sizes]
        flat = None
        if 10 in sizes and values[-1] is not None and values[sizes.index(10)]:
            flat = values[-1] / values[sizes.index(10)]  # type: ignore[operator]
        rows.append([results["names"][key],
                     *(("> " if c else "") + _cell(v) for v, c in zip(values, capped,
                                                                       strict=True)),
                     ("> " if capped[-1] else "") + _cell(flat, "{:.2f}×")])
    what = "CPU time of the process" if cpu else "wall clock"
    return Table(f"Overhead per step, µs ({what}): (run − floor) / steps",
                 ["framework", *(f"{n} steps" for n in sizes), f"{sizes[-1]} ÷ 10 steps"], rows)


def run_time_table(results: dict[str, Any]) -> Table:
    sizes = _sizes(results)
    floor = _steps(results, "floor")
    rows = []
    for key in _keys(results):
        steps = _steps(results, key)
        if not steps:
            continue
        cells = []
        for n in sizes:
            t = steps.get(n)
            if t is None:
                cells.append("–")
                continue
            ratio = "" if key == "floor" or n not in floor else f" ({t.wall / floor[n].wall:,.0f}×)"
            once = "" if t.samples > 1 else " ¹"
            if t.samples == 0:
                cells.append(f"> {t.wall * 1e3:,.0f} (stopped)")
                continue
            cells.append(f"{t.wall * 1e3:,.3f}{ratio}{once}")
        rows.append([results["names"][key], *cells])
    return Table("Whole run, ms (wall; × the floor in brackets; ¹ = timed once; "
                 "stopped = cancelled at the cap, a lower bound)",
                 ["framework", *(f"{n} steps" for n in sizes)], rows)


def concurrent_table(results: dict[str, Any]) -> Table:
    cfg = results["config"]["keel"]
    ideal = cfg["concurrent_turns"] * cfg["model_delay"]
    floor = results["suites"].get("floor", {}).get("concurrent_s")
    floor_peak = results["memory"].get("floor", {}).get("tracemalloc_peak_per_run_kb")
    rows = []
    for key in _keys(results):
        suite = results["suites"][key]
        wall = suite.get("concurrent_s")
        if wall is None:
            continue
        mem = results["memory"].get(key, {})
        peak, rss = mem.get("tracemalloc_peak_per_run_kb"), mem.get("rss_delta_per_run_kb")
        ratio = ("" if key == "floor" or not floor_peak or peak is None
                 else f" ({peak / floor_peak:,.0f}×)")
        rows.append([results["names"][key], f"{wall:.3f}", f"{wall / ideal:.2f}×",
                     "" if key == "floor" or not floor else f"{wall / floor:.1f}×",
                     _cell(suite.get("concurrent_cpu_s"), "{:.3f}"), _cell(peak) + ratio,
                     _cell(rss), str(mem.get("runs", "–"))])
    return Table(
        f"{cfg['concurrent_runs']} concurrent runs of {cfg['concurrent_turns']} model turns "
        f"({cfg['concurrent_turns'] - 1} tool calls), {cfg['model_delay'] * 1e3:.0f} ms per "
        f"turn; ideal {ideal:.3f} s",
        ["framework", "wall s", "× ideal", "× floor", "CPU s", "peak KB/run (tracemalloc)",
         "RSS growth KB/run", "runs in memory test"], rows)


def parallel_table(results: dict[str, Any]) -> Table:
    cfg = results["config"]["keel"]
    ideal = cfg["tool_delay"]
    floor = results["suites"].get("floor", {}).get("parallel_s")
    rows = []
    for k, s in results["suites"].items():
        if "parallel_s" not in s:
            continue
        rows.append([results["names"][k], f"{s['parallel_s']:.3f}",
                     f"{s['parallel_s'] / ideal:.2f}×",
                     "" if k == "floor" or floor is None
                     else f"{(s['parallel_s'] - floor) * 1e3:+.1f}",
                     _cell(None if "parallel_zero_s" not in s else s["parallel_zero_s"] * 1e3,
                           "{:.2f}")])
    return Table(f"One turn calling {cfg['parallel_tools']} tools that each await "
                 f"{ideal * 1e3:.0f} ms (then a final answer turn); ideal {ideal:.3f} s; "
                 f"median of {cfg['parallel_repeats']} runs (interleaved for the floor and keel)",
                 ["framework", "wall s", "× ideal", "− floor, ms",
                  "same run, tools not waiting, ms"], rows)


def import_table(results: dict[str, Any]) -> Table:
    rows = [[k, f"`import {v['module']}`", f"{v['seconds']:.3f}"]
            for k, v in results["imports"].items() if k != "keel_top"]
    return Table("Import time, s (fresh interpreter; best of 5 for keel, of 3 for the others)",
                 ["framework", "statement", "seconds"], rows)


def import_top_table(results: dict[str, Any]) -> Table:
    rows = [[f"`{name.strip()}`", f"{sec * 1e3:.1f}"]
            for name, sec in results["imports"].get("keel_top", [])]
    return Table("Slowest imports under `python -X importtime -c 'import keel'` (cumulative, "
                 "start-up imports left out; -X importtime itself slows imports down)",
                 ["module", "ms"], rows)


def _tool_kind_rows(results: dict[str, Any], multi: list[int]) -> list[list[str]]:
    """Targets for the tool kinds: a def tool's run against the async tool's, and
    concurrent runs against the ideal, for each kind."""
    rows: list[list[str]] = []

    def one(label: str, value: float | None, ok: bool | None, unit: str) -> None:
        rows.append([label, _cell(value, unit), _verdict(ok), "", ""])

    for key in ("keel-def", "keel-inline"):
        ratio = sync_ratio(results, key)
        if ratio is not None:
            one(f"{results['names'][key]}: run ≤ {TARGET_SYNC_X}× the async tool's "
                f"({'/'.join(map(str, multi))} steps, worst)", ratio, ratio <= TARGET_SYNC_X,
                "{:.2f}×")
    cfg = results["config"]["keel"]
    ideal = cfg["concurrent_turns"] * cfg["model_delay"]
    for key in ("keel", "keel-def", "keel-inline"):
        wall = results["suites"].get(key, {}).get("concurrent_s")
        if key != "keel" and wall is None:
            continue
        kind = "" if key == "keel" else f" ({results['names'][key]})"
        one(f"{cfg['concurrent_runs']} concurrent runs ≤ {TARGET_CONCURRENT_X}× the "
            f"{ideal:.2f} s ideal{kind}", wall,
            None if wall is None else wall <= TARGET_CONCURRENT_X * ideal, "{:.3f} s")
    return rows


def targets_table(results: dict[str, Any]) -> Table:
    sizes = _sizes(results)
    multi = [n for n in sizes if n > 1]
    rows: list[list[str]] = []

    def worst(key: str, cpu: bool) -> float | None:
        values = [overhead_us(results, key, n, cpu) for n in multi]
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)

    def both(label: str, wall: float | None, cpu: float | None, limit: float,
             unit: str = "{:,.1f} µs") -> None:
        rows.append([label, _cell(wall, unit), _verdict(None if wall is None else wall <= limit),
                     _cell(cpu, unit), _verdict(None if cpu is None else cpu <= limit)])

    def one(label: str, value: float | None, ok: bool | None, unit: str) -> None:
        rows.append([label, _cell(value, unit), _verdict(ok), "", ""])

    for key, limit, label in (("keel", TARGET_US_MEMORY, "in-memory journal"),
                              ("keel-def", TARGET_US_MEMORY, "in-memory, def tool"),
                              ("keel-sqlite", TARGET_US_SQLITE, "SQLite journal")):
        if key not in results["suites"]:
            continue
        both(f"{label}: overhead ≤ {limit:.0f} µs/step ({'/'.join(map(str, multi))} steps, "
             "worst)", worst(key, False), worst(key, True), limit)
        if 1 in sizes:
            both(f"{label}: overhead ≤ {limit:.0f} µs/step at 1 step (includes the per-run "
                 "set-up)", overhead_us(results, key, 1), overhead_us(results, key, 1, True),
                 limit)
    if 10 in sizes and sizes[-1] > 10:
        flat: list[float | None] = []
        for cpu in (False, True):
            a = overhead_us(results, "keel", 10, cpu)
            b = overhead_us(results, "keel", sizes[-1], cpu)
            flat.append(None if a is None or b is None or a <= 0 else b / a)
        both(f"in-memory: flat, {sizes[-1]}-step overhead ≤ {TARGET_FLAT}× the 10-step one",
             flat[0], flat[1], TARGET_FLAT, "{:.2f}×")

    rows.extend(_tool_kind_rows(results, multi))
    cfg = results["config"]["keel"]
    keel = results["suites"].get("keel", {})
    mem = results["memory"].get("keel", {})
    for field, label in (("tracemalloc_peak_per_run_kb", "tracemalloc peak"),
                         ("rss_delta_per_run_kb", "RSS growth")):
        v = mem.get(field)
        one(f"memory per concurrent run ≤ {TARGET_KB_PER_RUN:.0f} KB ({label})", v,
            None if v is None else v <= TARGET_KB_PER_RUN, "{:,.1f} KB")
    par = keel.get("parallel_s")
    one(f"{cfg['parallel_tools']} parallel tools ≤ {TARGET_PARALLEL_X}× the "
        f"{cfg['tool_delay']:.2f} s ideal", par,
        None if par is None else par <= TARGET_PARALLEL_X * cfg["tool_delay"], "{:.3f} s")
    imp = results["imports"].get("keel", {}).get("seconds")
    one(f"`import keel` < {TARGET_IMPORT_S} s", imp,
        None if imp is None else imp < TARGET_IMPORT_S, "{:.3f} s")
    return Table("keel against its targets (step overheads judged on wall clock and on CPU "
                 "time; the rest on wall clock)",
                 ["target", "measured", "verdict", "measured (CPU)", "verdict (CPU)"], rows)


def all_tables(results: dict[str, Any]) -> list[Table]:
    return [targets_table(results), overhead_table(results), overhead_table(results, cpu=True),
            run_time_table(results), concurrent_table(results), parallel_table(results),
            import_table(results), import_top_table(results)]


def notes(results: dict[str, Any]) -> list[str]:
    out = [f"skipped {k}: {v}" for k, v in results.get("skipped", {}).items()]
    out += [f"error in {k}: {v}" for k, v in results.get("errors", {}).items()]
    return out


def render_text(results: dict[str, Any]) -> str:
    m = results["meta"]
    head = (f"{m['date']}  Python {m['python']}  {m['cores']} cores  load average "
            f"{m['load_start'][0]:.2f} at start, {m.get('load_end', (0,))[0]:.2f} at end  "
            f"total {m.get('total_s', 0):.0f} s\n")
    body = "\n".join(t.text() for t in all_tables(results))
    text = head + "\n" + body + "".join(f"\n{n}" for n in notes(results))
    if "durable" in results:
        from bench.report_durable import durable_text

        text += "\n\n" + durable_text(results)
    return text


def render_markdown(results: dict[str, Any]) -> str:
    from bench.report_text import document

    return document(results, all_tables(results), notes(results))
