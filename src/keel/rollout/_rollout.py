"""``Rollout``: a percentage of traffic to a candidate version, sticky per user or tenant,
advanced step by step while its gates hold, rolled back automatically when one breaks.

Workers call :meth:`Rollout.run` (or :meth:`Rollout.choose`); something calls
:meth:`Rollout.tick` now and then (a worker's loop, a cron job: any number of them, the
compare-and-set on the state lets one transition win). Operators use ``keel rollout``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from keel.core import SettingConflict
from keel.observe import FleetAlert, Notifier
from keel.rollout import _state
from keel.rollout._checks import check_name, check_seconds
from keel.rollout._errors import RolloutError
from keel.rollout._gates import (
    ArmStats,
    Breach,
    Gates,
    add_feedback,
    add_online_eval,
    add_run,
    judge,
)
from keel.rollout._hashing import in_share
from keel.rollout._state import Action, RolloutState, check_steps
from keel.rollout._versions import Versions
from keel.runtime import RunResult
from keel.store import RunFilter, RunRecord, RunStore

#: The run-metadata key a rollout tags its runs with: ``{"name", "version", "arm", "at"}``.
ROLLOUT_KEY = "rollout"
_MAX_CONVERSATIONS = 100_000
_PAGE = 1000
_log = logging.getLogger("keel.rollout")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """What one :meth:`Rollout.tick` saw and did: ``action`` is ``"rolled_back"``,
    ``"advanced"``, ``"waiting"`` (healthy, but the step interval or ``min_runs`` is not
    reached), ``"none"`` (paused, completed or rolled back) or ``"conflict"`` (another
    process changed the state first; ``state`` is the one it wrote)."""

    action: Literal["rolled_back", "advanced", "waiting", "none", "conflict"]
    state: RolloutState
    breaches: tuple[Breach, ...] = ()
    candidate: ArmStats | None = None
    current: ArmStats | None = None


def tag_of(run: RunRecord) -> dict[str, Any] | None:
    tag = run.metadata.get(ROLLOUT_KEY) if isinstance(run.metadata, dict) else None
    return tag if isinstance(tag, dict) else None


class Rollout:
    """Roll ``candidate`` out over ``current`` (both names in ``versions``).

    ``steps``: the candidate's cumulative shares, e.g. ``(1, 10, 50, 100)``; it moves to the
    next one after ``step_interval_s`` seconds at a step with ``min_runs`` runs on each arm
    in the last ``window_s`` seconds and no gate broken (:meth:`tick`). ``sticky``: whose
    hash picks the arm, ``"user"`` or ``"tenant"`` (a call without one uses the
    conversation, else chance). A conversation always continues on the version of its first
    run. ``alert``: a notifier (``async notify(alert)``, as ``keel.observe``'s and
    ``keel.guard``'s) told of every automatic rollback. ``ttl_s``: how long a worker trusts
    the state it read (an operator's change reaches every worker within it). ``clock``:
    the rollout's time (epoch seconds; inject one to simulate days in a test).
    """

    def __init__(self, name: str, versions: Versions, *, store: RunStore, current: str,
                 candidate: str, steps: Sequence[float] = (1, 10, 50, 100),
                 step_interval_s: float = 3600.0, sticky: Literal["user", "tenant"] = "user",
                 gates: Gates | None = None, window_s: float = 3600.0,
                 min_runs: int | None = None, alert: Notifier | None = None,
                 ttl_s: float = 2.0, clock: Callable[[], float] = time.time,
                 by: str = "keel.rollout") -> None:
        self.name = check_name("rollout", name)
        if not isinstance(versions, Versions):
            raise RolloutError("versions= is a keel.rollout.Versions({'v1': agent, ...})")
        if not isinstance(store, RunStore):
            raise RolloutError(f"store= is a keel RunStore (open_store(url)), not "
                               f"{type(store).__name__}")
        versions.get(current)
        versions.get(candidate)
        if current == candidate:
            raise RolloutError(f"current and candidate are both {current!r}; roll out a "
                               "different version (current is what serves now)")
        if versions.info(current).version == versions.info(candidate).version:
            raise RolloutError(f"{current!r} and {candidate!r} are the same agent (version "
                               f"{versions.info(current).version}); a rollout between them "
                               "changes nothing: change the candidate")
        if sticky not in ("user", "tenant"):
            raise RolloutError(f"sticky= is 'user' or 'tenant', not {sticky!r:.40}")
        if alert is not None and not callable(getattr(alert, "notify", None)):
            raise RolloutError("alert= is a notifier with async notify(alert) (e.g. "
                               "keel.guard.WebhookNotifier), or None")
        self.versions, self.store = versions, store
        self.current, self.candidate, self.sticky = current, candidate, sticky
        self.steps = check_steps(steps)
        self.step_interval_s = check_seconds("step_interval_s", step_interval_s, zero=True)
        self.window_s = check_seconds("window_s", window_s)
        self.ttl_s = check_seconds("ttl_s", ttl_s, zero=True)
        if gates is not None and not isinstance(gates, Gates):
            raise RolloutError("gates= is a keel.rollout.Gates(...)")
        gates = gates if gates is not None else Gates()
        #: The gates; ``min_runs=`` given here replaces theirs (it also bounds advancing).
        self.gates = gates if min_runs is None else replace(gates, min_runs=min_runs)
        self.min_runs = self.gates.min_runs
        self.alert, self.clock, self.by = alert, clock, by
        self._state: RolloutState | None = None
        self._read_at = -float("inf")
        self._conversations: OrderedDict[str, str] = OrderedDict()
        self._registered = False

    def __repr__(self) -> str:
        return f"<Rollout {self.name}: {self.current} -> {self.candidate}>"

    # ----------------------------------------------------------------------- the state

    async def start(self, *, restart: bool = False, by: str | None = None,
                    now: float | None = None) -> RolloutState:
        """Register both versions (:meth:`Versions.register`) and write the rollout's first
        state (the first step) unless it exists. Idempotent: every worker may call it. An
        active or paused rollout of another pair of versions under this name is a
        RolloutError; a finished one (completed, rolled back) of this pair stays finished
        unless ``restart``."""
        await self._register()
        when = self.clock() if now is None else now
        while True:
            state = await _state.read_state(self.store, self.name)
            same = state is not None and (state.current, state.candidate) == \
                (self.current, self.candidate)
            if state is not None and not state.finished and not same:
                raise RolloutError(
                    f"rollout {self.name!r} is {state.status}: {state.current!r} -> "
                    f"{state.candidate!r}; finish it or roll it back (keel rollout rollback "
                    f"{self.name}) before rolling out {self.candidate!r}")
            if state is not None and same and not (restart and state.finished):
                return self._keep(state)
            first = RolloutState(name=self.name, current=self.current,
                                 candidate=self.candidate, steps=self.steps, stage=0,
                                 percent=self.steps[0], status="active",
                                 reason=f"started at {self.steps[0]:g}%", by=by or self.by,
                                 at=when, stage_since=when)
            try:
                written = await self.store.put_setting(
                    _state.PREFIX + self.name, first.to_value(),
                    expect_version=0 if state is None else state.version,
                    by=first.by, reason=first.reason)
            except SettingConflict:
                continue  # another worker started it: read it again
            return self._keep(RolloutState.of(written))

    async def _register(self) -> None:
        if not self._registered:
            await self.versions.register(self.store, names=(self.current, self.candidate),
                                         by=self.by)
            self._registered = True

    def _keep(self, state: RolloutState) -> RolloutState:
        self._state, self._read_at = state, time.monotonic()
        return state

    async def state(self, *, fresh: bool = False) -> RolloutState:
        """The rollout's state, as read at most ``ttl_s`` seconds ago (``fresh``: now).
        A rollout never started is started (:meth:`start`)."""
        if not fresh and self._state is not None \
                and time.monotonic() - self._read_at < self.ttl_s:
            return self._state
        state = await _state.read_state(self.store, self.name)
        if state is None:
            return await self.start()
        return self._keep(state)

    # ---------------------------------------------------------------------- serving

    async def choose(self, *, user: str | None = None, tenant: str | None = None,
                     conversation: str | None = None) -> str:
        """The version (its name) that serves this call: the version of the conversation's
        first run if it has one; else the candidate for the sticky key's share (cumulative:
        a user in at 1% stays in at 10%), the current version otherwise."""
        return (await self._choose(user, tenant, conversation))[0]

    async def _choose(self, user: str | None, tenant: str | None,
                      conversation: str | None) -> tuple[str, RolloutState]:
        state = await self.state()
        if conversation is not None:
            kept = await self._conversation_version(conversation, tenant)
            if kept is not None:
                return kept, state
        key = user if self.sticky == "user" else tenant
        key = key if key is not None else conversation
        share = state.candidate_share()
        if key is None:
            picked = random.random() * 100 < share
        else:
            picked = in_share(f"rollout:{self.name}", key, share)
        version = state.candidate if picked else state.current
        self.versions.get(version)  # a state naming a version this worker lacks: say so
        return version, state

    async def _conversation_version(self, conversation: str, tenant: str | None) -> str | None:
        kept = self._conversations.get(conversation)
        if kept is not None:
            self._conversations.move_to_end(conversation)
            return kept
        runs = await self.store.list_runs(RunFilter(conversation=conversation, tenant=tenant,
                                                    agent=self.versions.agent, limit=1))
        if not runs:
            return None
        version = self._version_of(runs[0])
        if version not in self.versions:
            raise RolloutError(f"conversation {conversation!r} runs on version {version!r}, "
                               "which this worker does not have; add it to Versions(...) "
                               "(a conversation never changes version)")
        self._remember(conversation, version)
        return version

    def _version_of(self, run: RunRecord) -> str:
        """The version (name) that served ``run``: its rollout tag; for a run this rollout
        did not serve (it began before the rollout), the version whose hash it recorded,
        else the current version (what served before the rollout)."""
        tag = tag_of(run)
        if tag is not None and tag.get("name") == self.name:
            return str(tag.get("version"))
        recorded = run.metadata.get("version") if isinstance(run.metadata, dict) else None
        for name in self.versions:
            if self.versions.info(name).version == recorded:
                return name
        return self.current

    def _remember(self, conversation: str, version: str) -> None:
        self._conversations[conversation] = version
        if len(self._conversations) > _MAX_CONVERSATIONS:
            self._conversations.popitem(last=False)

    async def run(self, input: str, *, user: str | None = None, tenant: str | None = None,
                  conversation: str | None = None, **options: Any) -> RunResult[Any]:
        """Choose the version (:meth:`choose`) and run it. The run's metadata gets
        ``"rollout": {"name", "version", "arm", "at"}`` (``arm``: ``current`` or
        ``candidate``; ``at``: the rollout's clock) besides the agent's own ``"version"``
        hash. ``options`` are the agent's run options (``store`` defaults to the rollout's).
        """
        version, state = await self._choose(user, tenant, conversation)
        arm = "candidate" if version == state.candidate else "current"
        meta = dict(options.pop("metadata", None) or {})
        meta[ROLLOUT_KEY] = {"name": self.name, "version": version, "arm": arm,
                             "at": self.clock()}
        options.setdefault("store", self.store)
        if conversation is not None:
            self._remember(conversation, version)
        runnable = self.versions.get(version)
        return await runnable.run(input, user=user, tenant=tenant, conversation=conversation,
                                  metadata=meta, **options)

    # -------------------------------------------------------------------- the controller

    async def arms(self, state: RolloutState, now: float) -> tuple[ArmStats, ArmStats]:
        """The candidate's and the current version's runs in the window ending at ``now``."""
        start = now - self.window_s
        cand, cur = ArmStats(version=state.candidate), ArmStats(version=state.current)
        picked: dict[str, list[RunRecord]] = {state.candidate: [], state.current: []}
        offset = 0
        while True:
            page = await self.store.list_runs(RunFilter(agent=self.versions.agent,
                                                        limit=_PAGE, offset=offset))
            offset += len(page)
            passed = False
            for run in page:
                tag = tag_of(run)
                if tag is None or tag.get("name") != self.name:
                    continue
                at = tag.get("at")
                if not isinstance(at, int | float) or at > now:
                    continue
                if at < start:
                    passed = True
                    continue
                runs = picked.get(str(tag.get("version")))
                if runs is not None:
                    runs.append(run)
            if len(page) < _PAGE or passed:
                break
        for arm in (cand, cur):
            for run in picked[arm.version]:
                add_run(arm, run)
            await add_online_eval(self.gates, arm, picked[arm.version])
        await add_feedback(self.store, [(cand, picked[cand.version]),
                                        (cur, picked[cur.version])])
        return cand, cur

    async def tick(self, now: float | None = None) -> Tick:
        """Judge the gates and move the rollout: a broken gate rolls it back (percent 0,
        status ``rolled_back``, the reason naming the metric, both values and the bound;
        logged and sent to ``alert``); else, at an active step held for ``step_interval_s``
        with ``min_runs`` runs on each arm, it advances (completed at 100%)."""
        state = await self.state(fresh=True)
        if state.finished:
            return Tick(action="none", state=state)
        when = self.clock() if now is None else now
        cand, cur = await self.arms(state, when)
        breaches = tuple(judge(self.gates, cand, cur))
        if breaches:
            reason = "automatic rollback: " + "; ".join(str(b) for b in breaches)
            return await self._move(state, "rollback", when, reason, breaches, cand, cur)
        held = when - state.stage_since >= self.step_interval_s
        enough = cand.runs >= self.min_runs and cur.runs >= self.min_runs
        if state.status != "active" or not held or not enough:
            return Tick(action="none" if state.status != "active" else "waiting",
                        state=state, candidate=cand, current=cur)
        target = state.steps[min(state.stage + 1, len(state.steps) - 1)]
        reason = (f"advanced to {target:g}%: healthy for "
                  f"{when - state.stage_since:g}s with {cand.runs} candidate and {cur.runs} "
                  "current runs")
        return await self._move(state, "advance", when, reason, (), cand, cur)

    async def _move(self, state: RolloutState, action: Action, now: float, reason: str,
                    breaches: tuple[Breach, ...], cand: ArmStats, cur: ArmStats) -> Tick:
        new = _state.TRANSITIONS[action](state, now=now, by=self.by, reason=reason)
        try:
            written = await _state.write(self.store, new, expect_version=state.version)
        except RolloutError:
            return Tick(action="conflict", state=await self.state(fresh=True),
                        breaches=breaches, candidate=cand, current=cur)
        self._keep(written)
        if action == "rollback":
            _log.warning("rollout %s rolled back: %s", self.name, reason)
            await self._alert(written, breaches, now)
        return Tick(action="rolled_back" if action == "rollback" else "advanced",
                    state=written, breaches=breaches, candidate=cand, current=cur)

    async def _alert(self, state: RolloutState, breaches: tuple[Breach, ...],
                     now: float) -> None:
        if self.alert is None:
            return
        first = breaches[0]
        alert = FleetAlert(rule=f"rollout:{self.name}", reason=state.reason or "",
                           value=first.candidate, threshold=first.bound,
                           window_s=self.window_s, at=now,
                           evidence={"rollout": self.name, "current": state.current,
                                     "candidate": state.candidate,
                                     "breaches": [str(b) for b in breaches]})
        try:
            await self.alert.notify(alert)
        except Exception as exc:  # the rollback stands even if the alert cannot go out
            _log.warning("rollout %s: the rollback alert could not be sent: %r", self.name, exc)

    # ---------------------------------------------------------------- operator actions

    async def change(self, action: Action, *, by: str | None = None,
                     reason: str | None = None, expect_version: int | None = None
                     ) -> RolloutState:
        """``advance``, ``rollback``, ``pause`` or ``resume`` the rollout now (as ``keel
        rollout ...`` does); the change is a compare-and-set (see ``_state.change``)."""
        return self._keep(await _state.change(self.store, self.name, action,
                                              now=self.clock(), by=by or self.by,
                                              reason=reason, expect_version=expect_version))

    async def history(self) -> list[RolloutState]:
        """Every state the rollout went through, oldest first."""
        return await _state.history(self.store, self.name)
