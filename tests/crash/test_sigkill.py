"""SIGKILL a real process at many points of a multi-step run, resume it in a new process, and
count every tool's side effects in the outside system and every step's executions.

Stores: every kill point runs on SQLite in all three durability modes, and on Postgres (a
fresh schema per test, dropped afterwards) in the default mode, ``balanced``; on Postgres the
other two modes run the representative subset ``PG_POINTS`` (keeps tests/crash well under two
minutes). Kills of the resumes too, kills from outside at random moments and the lease
takeover run on both stores. Children are forked from a pre-imported fork server
(``_forkserver``); the lease test runs them as fresh interpreters instead.

What is proved, per kill point:
* effects happen exactly once (``reserve`` deduped by its idempotency key, ``charge``
  reconciled), or the run stops with UnknownOutcome having run ``notify`` at most once;
* the journal only grows, and no step whose result was committed before the kill executes
  again (model requests and tool bodies are counted per step key);
* the loss window of each durability mode: ``always`` loses nothing that finished;
  ``balanced`` at most the last model response; ``batched`` at most ``batch_size``
  idempotent steps, which the resumed run executes again (with the same effects);
* a SIGKILLed process's lease does not hold the resume up (dead-holder takeover), and of
  two processes resuming the killed run at once, one takes it over and the other is refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel.core import RunNotFound
from keel.store import open_store
from tests.crash._forkserver import HERE, Finished, ForkServer
from tests.crash._harness import Harness, Snapshot, check_journal_only_grew, reexecuted

pytestmark = pytest.mark.slow  # the crash matrix: each case forks and SIGKILLs real processes

RUN = "run-1"
M = [f"orders/turn:{n}/model" for n in range(5)]
STOCK, RESERVE = "orders/turn:0/tool:stock#0", "orders/turn:1/tool:reserve#0"
CHARGE, NOTIFY = "orders/turn:2/tool:charge#0", "orders/turn:3/tool:notify#0"
KEYS = [M[0], STOCK, M[1], RESERVE, M[2], CHARGE, M[3], NOTIFY]  # results, in order

# kill point -> what resume must do: "completes", or "unknown" (an UnknownOutcome at notify)
POINTS = {
    **{f"model:{n}": "completes" for n in range(5)},
    "tool:stock:before": "completes",
    "tool:stock:after": "completes",
    "tool:reserve:before": "completes",
    "tool:reserve:after": "completes",  # idempotent: re-run with the same key, deduped outside
    "tool:charge:before": "completes",  # reconcile: not charged -> charge now, once
    "tool:charge:after": "completes",  # reconcile: already charged -> take that result
    "tool:notify:before": "unknown",  # intent, no result, no reconcile: never re-run blindly
    "tool:notify:after": "unknown",
    **{f"append:{k}:result": "completes" for k in KEYS},
    f"append:{CHARGE}:intent": "completes",
    f"append:{NOTIFY}:intent": "unknown",
}
MODES = {"always": "always", "balanced": "balanced", "batched": "batched:3"}
BATCH = 3
IDEMPOTENT = {*M, STOCK, RESERVE}
# (mode, kill point) -> the steps that had finished but were not yet committed: the loss
# window the Durability docstring describes, seen from this agent. Anything not listed: none.
LOST = {
    # balanced: the model response rides along with the next record; a read-only tool does
    # not flush it first, so a crash inside the stock check loses turn 0's response.
    ("balanced", "tool:stock:before"): {M[0]},
    ("balanced", "tool:stock:after"): {M[0]},
    # batched (3): M0 and the stock check wait for a third record; the reservation's result
    # waits for the next flush (turn 2's response, then the charge's intent flushes both).
    ("batched", "tool:stock:before"): {M[0]},
    ("batched", "tool:stock:after"): {M[0]},
    ("batched", "model:1"): {M[0], STOCK},
    ("batched", "model:2"): {RESERVE},
}
# Postgres runs the whole matrix in the default mode and these points in the other modes.
PG_POINTS = {"model:1", "model:2", "tool:stock:after", "tool:charge:after",
             "tool:notify:after", f"append:{RESERVE}:result"}


def _cases() -> list[object]:
    cases: list[object] = []
    for store in ("sqlite", "postgres"):
        for mode in MODES:
            for kill, expected in POINTS.items():
                if store == "postgres" and mode != "balanced" and kill not in PG_POINTS:
                    continue
                cases.append(pytest.param(store, mode, kill, expected,
                                          id=f"{store}-{mode}-{kill}"))
    return cases


@pytest.fixture
def orders(forker: ForkServer, store_url: str, tmp_path: Path) -> Harness:
    return Harness(forker, store_url, tmp_path, "crash_agent", RUN)


@pytest.mark.parametrize(("store_url", "mode", "kill", "expected"), _cases(),
                         indirect=["store_url"])
async def test_sigkill_then_resume_never_repeats_an_effect(
        orders: Harness, mode: str, kill: str, expected: str) -> None:
    crashed = orders.child("run", RUN, kill=kill, KEEL_CRASH_DURABILITY=MODES[mode])
    assert crashed.killed, crashed.stderr
    before = await orders.snapshot()
    assert before.status == "running"  # a killed process cannot mark its run; resume takes it

    resumed = orders.child("resume", RUN, KEEL_CRASH_DURABILITY=MODES[mode])
    after = await orders.snapshot()
    check_journal_only_grew(before, after)
    if expected == "completes":
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.reply()["output"] == "Order placed."
        assert after.effect_count("reserve") == 1
        assert after.effect_count("charge") == 1
        assert after.effect_count("notify") == 1
        assert after.status == "completed"
        assert [k for k, p in after.entries() if p == "result"] == [*KEYS, M[4]]
    else:
        assert resumed.returncode == 3, resumed.stderr
        assert resumed.reply()["step_key"] == NOTIFY
        assert after.effect_count("reserve") == 1 and after.effect_count("charge") == 1
        assert after.effect_count("notify") == (1 if kill.endswith(":after") else 0)
        assert after.status == "failed"
    _check_steps(mode, kill, before, after)


def _check_steps(mode: str, kill: str, before: Snapshot, after: Snapshot) -> None:
    """No committed step executes again; the steps executed again are exactly the ones that
    were interrupted or lost, and what was lost is within the mode's window."""
    again = reexecuted(before, after)
    assert not again & before.results(), f"committed steps executed again: {again}"
    lost, interrupted = before.lost(), before.in_flight()
    assert lost <= again, f"lost steps {lost} were not executed again ({again})"
    assert again <= lost | interrupted, f"{again - lost - interrupted} executed again"
    assert all(after.starts[k] - before.starts[k] == 1 for k in again), after.starts
    if mode == "always":
        assert not lost, f"'always' lost finished steps: {lost}"
    elif mode == "balanced":
        assert lost <= set(M) and len(lost) <= 1, lost
    else:
        assert lost <= IDEMPOTENT and len(lost) <= BATCH, lost
    assert lost == LOST.get((mode, kill), set())


# kills of the run and then of its resumes, and how many times each tool body ran in the end
KILLED_AGAIN = {
    "charge-before-twice": (("tool:charge:before", "tool:charge:before"),
                            {CHARGE: 3, RESERVE: 1}),
    "charge-before-then-after": (("tool:charge:before", "tool:charge:after"),
                                 {CHARGE: 2}),
    "reserve-after-twice": (("tool:reserve:after", "tool:reserve:after"), {RESERVE: 3}),
    "charge-reconciled-then-next-model": (("tool:charge:after", "model:3"), {CHARGE: 1}),
    "intent-then-effect": ((f"append:{CHARGE}:intent", "tool:charge:after"), {CHARGE: 1}),
    "model-twice": (("model:1", "model:1", "model:1"), {STOCK: 1, M[1]: 4}),
}


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize(("kills", "runs"), list(KILLED_AGAIN.values()), ids=list(KILLED_AGAIN))
async def test_killed_again_while_resuming(orders: Harness, kills: tuple[str, ...],
                                           runs: dict[str, int]) -> None:
    """Each resume can die too (and take over the lease of the one before): the effects
    still happen once, and no committed step runs again."""
    snapshots: list[Snapshot] = []
    for n, kill in enumerate(kills):
        crashed = orders.child("run" if n == 0 else "resume", RUN, kill=kill)
        assert crashed.killed, crashed.stderr
        snapshots.append(await orders.snapshot())
    resumed = orders.child("resume", RUN)
    assert resumed.returncode == 0, resumed.stderr
    after = await orders.snapshot()
    assert after.status == "completed"
    assert [after.effect_count(t) for t in ("reserve", "charge", "notify")] == [1, 1, 1]
    for before in snapshots:
        check_journal_only_grew(before, after)
        assert not reexecuted(before, after) & before.results()
    assert {k: after.starts[k] for k in runs} == runs


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_kill_at_random_moments_from_outside(forker: ForkServer, store_url: str,
                                                   tmp_path: Path) -> None:
    """The parent kills the child whenever its journal has grown, at several depths."""
    for depth in (1, 3, 5, 7):
        run_dir = tmp_path / f"depth{depth}"
        run_dir.mkdir()
        h = Harness(forker, store_url, run_dir, "crash_agent", f"r{depth}")
        child = h.spawn("run", h.run_id, KEEL_CRASH_SLOW="1")
        async with open_store(store_url) as store:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if len(await store.read_journal(h.run_id)) >= depth:
                        break
                except RunNotFound:
                    pass
                await asyncio.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        crashed = forker.wait(child)
        assert crashed.killed, crashed.stdout  # the kill landed before the run ended
        before = await h.snapshot()
        resumed = h.child("resume", h.run_id)
        after = await h.snapshot()
        check_journal_only_grew(before, after)
        assert not reexecuted(before, after) & before.results()
        if resumed.returncode == 3:  # killed inside notify: never sent twice, run stops
            assert after.effect_count("notify") <= 1
        else:
            assert resumed.returncode == 0, resumed.stderr
            assert [after.effect_count(t) for t in ("reserve", "charge", "notify")] == [1, 1, 1]


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_the_lease_of_a_killed_process_is_taken_over_at_once(store_url: str,
                                                             tmp_path: Path) -> None:
    """The killed process still holds the run's lease for the next 15 s, but it is dead (same
    host, no such pid): the resume takes the lease over at once. Both processes are fresh
    interpreters here (``python crash_agent.py``), not forks of the fork server."""
    h = Harness(None, store_url, tmp_path, "crash_agent", RUN)
    pid, crashed = _fresh(h, "run", kill="model:2")
    assert crashed.killed, crashed.stderr
    before = await h.snapshot()
    assert before.record is not None and before.status == "running"
    owner, expires = before.record.lease_owner, before.record.lease_expires_at
    assert owner is not None and owner.split(":")[1] == str(pid), owner
    assert expires is not None and expires > time.time() + 5, "the dead lease looks expired"

    started = time.time()
    _, resumed = _fresh(h, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.reply()["output"] == "Order placed."
    assert time.time() < expires, "the resume waited for the dead process's lease to expire"
    assert time.time() - started < 10
    after = await h.snapshot()
    assert after.status == "completed"
    assert after.record is not None and after.record.lease_owner is None
    assert [after.effect_count(t) for t in ("reserve", "charge", "notify")] == [1, 1, 1]
    assert not reexecuted(before, after) & before.results()


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_two_processes_resume_the_killed_run_at_once(orders: Harness) -> None:
    """Both see the dead holder; one takes the lease over, the other is refused (or finds
    the run finished): every effect still happens once."""
    for kill in ("tool:reserve:after", "tool:charge:after"):
        orders.run_id = f"race-{kill.split(':')[1]}"
        assert orders.child("run", orders.run_id, kill=kill).killed
        before = await orders.snapshot()
        racers = [orders.spawn("resume", orders.run_id) for _ in range(2)]
        assert orders.forker is not None
        ends = [orders.forker.wait(racer) for racer in racers]
        assert sorted(e.returncode for e in ends) == [0, 5], [e.stderr for e in ends]
        refused = next(e for e in ends if e.returncode == 5).reply()
        assert refused["error"] in ("RunLeased", "StoreError"), refused
        after = await orders.snapshot()
        assert after.status == "completed"
        assert not reexecuted(before, after) & before.results()
    effects = (await orders.snapshot()).effects
    assert sorted(t for t, _, _ in effects) == ["charge", "charge", "notify", "notify",
                                                "reserve", "reserve"]
    assert len({(t, i) for t, i, _ in effects}) == 6, "an effect happened twice"


def _fresh(h: Harness, command: str, kill: str = "none") -> tuple[int, Finished]:
    """Run the child as a fresh interpreter; its pid and how it ended."""
    proc = subprocess.Popen([sys.executable, str(HERE / "crash_agent.py"), command, h.run_id],
                            env=h.env(kill), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=120)
    return proc.pid, Finished(proc.returncode, out, err)


async def test_a_run_resumed_in_a_forked_child_holds_its_own_lease(
        forker: ForkServer, tmp_path: Path) -> None:
    h = Harness(forker, f"sqlite:///{tmp_path / 'runs.db'}", tmp_path, "crash_agent", RUN)
    assert h.child("run", RUN, kill="model:1").killed
    resumed = h.child("resume", RUN)
    assert resumed.returncode == 0, resumed.stderr
