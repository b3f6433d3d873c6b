"""The rollout proof (issue 16): simulated runs across two worker processes sharing one
SQLite store, on a simulated clock: 10,000 runs in the default suite (20-60 s on a shared
machine). The candidate is healthy at 1% and degrades
(escalates most conversations) once it reaches 10%:

* the rollout advances 1% -> 10% while healthy, and rolls back automatically within the
  window after the breach, naming the metric;
* no conversation (and so no user in a conversation) switches version, although its turns
  go to either worker;
* every run records the version that served it (the name and the content hash);
* after the rollback, no new conversation starts on the candidate in either process within
  well under a minute (the workers' state TTL is 2 s); the figure is printed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tests.rollout._sim import SimConfig, SimResult, drive, versions


async def test_ten_thousand_runs_two_workers_advance_then_roll_back(tmp_path: Path) -> None:
    cfg = SimConfig()
    check(cfg, await drive(str(tmp_path / "runs.db"), cfg))


def check(cfg: SimConfig, result: SimResult) -> None:
    runs = result.runs
    assert len(runs) == cfg.runs
    tags = {r.run_id: r.metadata["rollout"] for r in runs}

    # 1. advanced 1 -> 10 while healthy, then rolled back on the escalation gate
    moves = [(t.action, t.state.percent) for _, t, _ in result.ticks]
    assert moves == [("advanced", 10.0), ("rolled_back", 0.0)], moves
    (_, advanced, _), (_, back, back_wall) = result.ticks
    assert "healthy" in (advanced.state.reason or "")
    assert [b.metric for b in back.breaches] == ["escalation_rate"]
    assert "escalation_rate: candidate" in (back.state.reason or "")
    before_10 = [r for r in runs if tags[r.run_id]["version"] == "v2"
                 and tags[r.run_id]["at"] <= advanced.state.at]
    assert len(before_10) >= cfg.min_runs
    assert all(r.status == "completed" for r in before_10)  # healthy at 1%

    # 2. rolled back within the window after the breach began
    escalated = [tags[r.run_id]["at"] for r in runs
                 if r.status == "suspended" and tags[r.run_id]["version"] == "v2"]
    breach_at = min(escalated)
    assert breach_at >= advanced.state.at
    assert 0 <= back.state.at - breach_at <= cfg.window_s

    # 3. no conversation switches version; turns were served by both workers
    by_conversation: dict[str | None, set[str]] = defaultdict(set)
    workers_of: dict[str | None, set[int]] = defaultdict(set)
    for r in runs:
        by_conversation[r.conversation].add(tags[r.run_id]["version"])
        workers_of[r.conversation].add(r.metadata["worker"])
    assert None not in by_conversation
    assert all(len(v) == 1 for v in by_conversation.values())
    assert len({r.metadata["worker"] for r in runs}) == cfg.workers
    assert sum(len(w) > 1 for w in workers_of.values()) > cfg.runs // 100  # the other worker
    on_candidate = [c for c, v in by_conversation.items() if v == {"v2"}]
    assert on_candidate  # and some of them kept going after the rollback:
    assert any(tags[r.run_id]["version"] == "v2" and r.metadata["turn"] > 1
               and r.created_at > back_wall for r in runs)

    # 4. every run records the version that served it
    hashes = {n: versions([False]).info(n).version for n in ("v1", "v2")}
    assert all(r.metadata["version"] == hashes[tags[r.run_id]["version"]] for r in runs)

    # 5. rollback latency: new conversations on the candidate after the rollback
    late = [r.created_at - back_wall for r in runs if r.metadata["turn"] == 1
            and tags[r.run_id]["version"] == "v2" and r.created_at > back_wall]
    latency = max(late, default=0.0)
    after = [r for r in runs if r.metadata["turn"] == 1 and r.created_at > back_wall + latency]
    assert len(after) > cfg.runs // 20  # traffic went on: the figure is not for want of new runs
    assert latency < 60
    print(f"\nrollout proof: {cfg.runs} runs, {cfg.workers} workers, "
          f"{result.wall_s:.1f} s wall ({cfg.runs / result.wall_s:.0f} runs/s); "
          f"advanced at batch {result.ticks[0][0]}, rolled back at batch {result.ticks[1][0]} "
          f"({back.state.at - breach_at:.0f} simulated s after the breach); last new "
          f"conversation on the candidate {latency:.2f} s after the rollback "
          f"({len(late)} such runs, state TTL {cfg.ttl_s:g} s)")
