"""The deviation checks: pure functions of a run's counts, the baseline and the policy.

Each returns a :class:`Finding` (what was seen, and the evidence: numbers, tool names and
hashes, never the content of a call) or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.guard._monitor_policy import Deviation, MonitorPolicy
from keel.guard._monitor_state import Baseline
from keel.guard._monitor_stats import RunStats, ToolStats


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    deviation: Deviation
    tool: str
    reason: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


def warm(baseline: Baseline, policy: MonitorPolicy) -> bool:
    return baseline.runs >= policy.warmup_runs


def new_tool(tool: str, baseline: Baseline, policy: MonitorPolicy) -> Finding | None:
    if not warm(baseline, policy) or baseline.uses(tool):
        return None
    return Finding(deviation="new_tool", tool=tool,
                   reason=f"{tool} was never used in {baseline.runs} earlier runs of this agent",
                   evidence={"tool": tool, "baseline_runs": baseline.runs,
                             "known_tools": sorted(baseline.tools())})


def burst(tool: str, t: ToolStats, now: float, baseline: Baseline,
          policy: MonitorPolicy) -> Finding | None:
    recent = t.recent
    while recent and recent[0] <= now - policy.burst_window:
        recent.popleft()
    n = len(recent)
    limit = policy.burst_calls
    usual = baseline.tool_max(tool, "calls") if warm(baseline, policy) else None
    if usual is not None:
        limit = min(limit, max(policy.burst_floor, int(policy.burst_factor * usual)))
    if n <= limit:
        return None
    return Finding(deviation="burst", tool=tool,
                   reason=f"{n} calls to {tool} within {policy.burst_window:g}s "
                          f"(limit {limit})",
                   evidence={"tool": tool, "calls": n, "window_s": policy.burst_window,
                             "limit": limit, "baseline_max_calls_per_run": usual})


def loop(tool: str, signature: str, stats: RunStats, policy: MonitorPolicy) -> Finding | None:
    n = stats.repeats.get(signature, 0)
    if n < policy.loop_repeats:
        return None
    return Finding(deviation="loop", tool=tool,
                   reason=f"the same call to {tool} was made {n} times in this run",
                   evidence={"tool": tool, "repeats": n, "limit": policy.loop_repeats,
                             "arguments_hash": signature.rpartition("\x00")[2]})


def volume(tool: str, t: ToolStats, baseline: Baseline,
           policy: MonitorPolicy) -> Finding | None:
    limit_b, limit_r = policy.max_bytes, policy.max_records
    mean_b = mean_r = None
    if warm(baseline, policy) and baseline.uses(tool):
        mean_b = baseline.tool_mean(tool, "bytes")
        mean_r = baseline.tool_mean(tool, "records")
        rel_b = max(policy.volume_floor_bytes, int(policy.volume_factor * mean_b))
        rel_r = max(policy.volume_floor_records, int(policy.volume_factor * mean_r))
        limit_b = rel_b if limit_b is None else min(limit_b, rel_b)
        limit_r = rel_r if limit_r is None else min(limit_r, rel_r)
    over_b = limit_b is not None and t.bytes > limit_b
    over_r = limit_r is not None and t.records > limit_r
    if not (over_b or over_r):
        return None
    what = (f"{t.records} records" if over_r else f"{t.bytes} bytes")
    return Finding(deviation="volume", tool=tool,
                   reason=f"this run read {what} from {tool} (limit "
                          f"{limit_r if over_r else limit_b})",
                   evidence={"tool": tool, "bytes": t.bytes, "records": t.records,
                             "limit_bytes": limit_b, "limit_records": limit_r,
                             "baseline_mean_bytes": mean_b,
                             "baseline_mean_records": mean_r})


def cost(stats: RunStats, baseline: Baseline, policy: MonitorPolicy) -> Finding | None:
    limit = policy.max_cost_usd
    mean = None
    if warm(baseline, policy):
        mean = baseline.mean("cost")
        rel = max(policy.cost_floor_usd, policy.cost_factor * mean)
        limit = rel if limit is None else min(limit, rel)
    if limit is None or stats.cost <= limit:
        return None
    return Finding(deviation="cost", tool="",
                   reason=f"this run has cost ${stats.cost:.4f} (limit ${limit:.4f})",
                   evidence={"cost_usd": round(stats.cost, 6), "limit_usd": round(limit, 6),
                             "baseline_mean_usd": None if mean is None else round(mean, 6)})


def errors(tool: str, stats: RunStats, baseline: Baseline,
           policy: MonitorPolicy) -> Finding | None:
    if not warm(baseline, policy):
        return None
    n = stats.errors
    limit = max(policy.errors_floor, policy.errors_factor * baseline.mean("errors"))
    if n <= limit:
        return None
    return Finding(deviation="errors", tool=tool,
                   reason=f"{n} failed tool calls in this run (limit {limit:g})",
                   evidence={"errors": n, "limit": limit,
                             "baseline_mean_errors": round(baseline.mean("errors"), 4)})


def latency(tool: str, seconds: float, baseline: Baseline,
            policy: MonitorPolicy) -> Finding | None:
    if not warm(baseline, policy) or not baseline.uses(tool):
        return None
    mean = baseline.latency_mean(tool)
    limit = max(policy.latency_floor, policy.latency_factor * mean)
    if seconds <= limit:
        return None
    return Finding(deviation="latency", tool=tool,
                   reason=f"a call to {tool} took {seconds:.1f}s (limit {limit:.1f}s)",
                   evidence={"tool": tool, "seconds": round(seconds, 3),
                             "limit_s": round(limit, 3), "baseline_mean_s": round(mean, 3)})


__all__ = ["Finding", "burst", "cost", "errors", "latency", "loop", "new_tool", "volume",
           "warm"]
