"""A rollout's state in the run store, and the transitions an operator or the controller
makes on it.

The state is the setting ``rollout:NAME`` (a JSON document): the two versions, the steps,
the stage and its share, the status (``active``, ``paused``, ``completed``, ``rolled_back``),
why and by whom it last changed, and when its stage began. Every change is a compare-and-set
on the setting's version, so two operators (or an operator and the controller) can never
both change it from the same reading; the setting's history is the rollout's journal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, TypeAlias

from keel.core import SettingConflict
from keel.rollout._checks import check_name, check_percent
from keel.rollout._errors import RolloutError
from keel.store import RunStore, Setting

Status: TypeAlias = Literal["active", "paused", "completed", "rolled_back"]
STATUSES: tuple[Status, ...] = ("active", "paused", "completed", "rolled_back")
PREFIX = "rollout:"
_log = logging.getLogger("keel.rollout")


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState:
    """One version of a rollout's state. ``percent`` is the candidate's share of new
    conversations; ``stage`` indexes ``steps`` (the share it was advanced to);
    ``stage_since`` is when that stage began and ``at`` when this state was written (both
    on the rollout's clock); ``version`` is the setting's version (for compare-and-set)."""

    name: str
    current: str
    candidate: str
    steps: tuple[float, ...]
    stage: int
    percent: float
    status: Status
    reason: str | None = None
    by: str | None = None
    at: float = 0.0
    stage_since: float = 0.0
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "rolled_back")

    def candidate_share(self) -> float:
        """The share of new conversations the candidate gets now."""
        if self.status == "rolled_back":
            return 0.0
        if self.status == "completed":
            return 100.0
        return self.percent

    def to_value(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("version")
        out["steps"] = list(self.steps)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_value(), "version": self.version}

    @classmethod
    def of(cls, setting: Setting) -> RolloutState:
        v = setting.value
        status = v.get("status") if isinstance(v, dict) else None
        if status not in STATUSES:
            raise RolloutError(f"the setting {setting.key!r} (version {setting.version}) is not "
                               f"a rollout state (status {status!r}); it was written by "
                               "something else: start the rollout under another name")
        try:
            return cls(name=str(v["name"]), current=str(v["current"]),
                       candidate=str(v["candidate"]),
                       steps=tuple(float(s) for s in v["steps"]), stage=int(v["stage"]),
                       percent=float(v["percent"]), status=status, reason=v.get("reason"),
                       by=v.get("by"), at=float(v.get("at") or 0.0),
                       stage_since=float(v.get("stage_since") or 0.0),
                       version=setting.version)
        except (KeyError, TypeError, ValueError) as exc:
            raise RolloutError(f"the setting {setting.key!r} (version {setting.version}) is not "
                               f"a rollout state ({exc!r}); it was written by something else: "
                               "start the rollout under another name") from None


def check_steps(steps: object) -> tuple[float, ...]:
    """Rollout steps: increasing percentages in (0, 100], ending at 100."""
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        raise RolloutError(f"steps= is a list of increasing percentages ending at 100, e.g. "
                           f"(1, 10, 50, 100), not {steps!r:.80}")
    out = tuple(check_percent(f"steps[{i}]", s) for i, s in enumerate(steps))
    if out[0] <= 0:
        raise RolloutError(f"steps[0] is {out[0]:g}; every step is above 0 (a rollout at 0% "
                           "sends nothing to the candidate)")
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise RolloutError(f"steps= must increase (shares are cumulative): steps[{i}] = "
                               f"{out[i]:g} is not above steps[{i - 1}] = {out[i - 1]:g}; "
                               "e.g. (1, 10, 50, 100)")
    if out[-1] != 100:
        raise RolloutError(f"steps= must end at 100 (the candidate takes all traffic when "
                           f"done), not {out[-1]:g}; e.g. (1, 10, 50, 100)")
    return out


async def read_state(store: RunStore, name: str) -> RolloutState | None:
    """The newest state of rollout ``name``, or None if it was never started."""
    setting = await store.get_setting(PREFIX + check_name("rollout", name))
    return None if setting is None else RolloutState.of(setting)


async def must_read(store: RunStore, name: str) -> RolloutState:
    state = await read_state(store, name)
    if state is None:
        known = [s.key[len(PREFIX):] for s in await store.list_settings(PREFIX)]
        hint = f"the rollouts in this store are {', '.join(known)}" if known else \
            "this store has no rollouts (check --store / KEEL_STORE)"
        raise RolloutError(f"no rollout named {name!r}: {hint}")
    return state


async def history(store: RunStore, name: str, *, limit: int = 1000) -> list[RolloutState]:
    """Every state rollout ``name`` went through, oldest first (its journal)."""
    await must_read(store, name)
    return [RolloutState.of(s) for s in
            await store.setting_history(PREFIX + name, limit=limit)]


async def write(store: RunStore, state: RolloutState, *, expect_version: int) -> RolloutState:
    """Write ``state`` if the stored version is still ``expect_version``; a conflict is a
    :class:`RolloutError` saying someone changed the rollout since it was read."""
    try:
        setting = await store.put_setting(PREFIX + state.name, state.to_value(),
                                          expect_version=expect_version, by=state.by,
                                          reason=state.reason)
    except SettingConflict:
        raise RolloutError(f"rollout {state.name!r} changed since it was read (version "
                           f"{expect_version}): someone else advanced, paused or rolled it "
                           "back at the same time; read its status again and decide "
                           "again") from None
    _log.info("rollout %s: %s at %g%% (%s)", state.name, state.status, state.percent,
              state.reason or "")
    return RolloutState.of(setting)


def _expect(state: RolloutState, expect_version: int | None) -> None:
    if expect_version is not None and expect_version != state.version:
        raise RolloutError(f"rollout {state.name!r} is at version {state.version}, not "
                           f"{expect_version} as read: someone changed it since; read its "
                           "status again and decide again")


def advanced(state: RolloutState, *, now: float, by: str | None,
             reason: str | None) -> RolloutState:
    """``state`` moved to its next step (completed at 100%)."""
    if state.status == "completed":
        raise RolloutError(f"rollout {state.name!r} is completed: {state.candidate!r} serves "
                           "100% already; there is no step past 100")
    if state.status == "rolled_back":
        raise RolloutError(f"rollout {state.name!r} was rolled back ({state.reason}); start it "
                           "again (Rollout.start(restart=True)) to send traffic to "
                           f"{state.candidate!r} again")
    stage = min(state.stage + 1, len(state.steps) - 1)  # a rollout at 100% completes
    percent = state.steps[stage]
    return replace(state, stage=stage, percent=percent,
                   status="completed" if percent >= 100 else state.status,
                   reason=reason or f"advanced to {percent:g}%", by=by, at=now,
                   stage_since=now)


def rolled_back(state: RolloutState, *, now: float, by: str | None,
                reason: str | None) -> RolloutState:
    if state.status == "rolled_back":
        raise RolloutError(f"rollout {state.name!r} is already rolled back ({state.reason})")
    if state.status == "completed":
        raise RolloutError(
            f"rollout {state.name!r} is completed: {state.candidate!r} is the version in "
            f"service now. To go back, start a new rollout with current={state.candidate!r} "
            f"and candidate={state.current!r}")
    return replace(state, percent=0.0, status="rolled_back",
                   reason=reason or "rolled back by an operator", by=by, at=now)


def paused(state: RolloutState, *, now: float, by: str | None,
           reason: str | None) -> RolloutState:
    if state.status != "active":
        raise RolloutError(f"rollout {state.name!r} is {state.status}; only an active rollout "
                           "can be paused")
    return replace(state, status="paused", reason=reason or "paused", by=by, at=now)


def resumed(state: RolloutState, *, now: float, by: str | None,
            reason: str | None) -> RolloutState:
    if state.status != "paused":
        raise RolloutError(f"rollout {state.name!r} is {state.status}; only a paused rollout "
                           "can be resumed")
    return replace(state, status="active", reason=reason or "resumed", by=by, at=now,
                   stage_since=now)


TRANSITIONS = {"advance": advanced, "rollback": rolled_back, "pause": paused,
               "resume": resumed}
Action: TypeAlias = Literal["advance", "rollback", "pause", "resume"]


async def change(store: RunStore, name: str, action: Action, *, now: float,
                 by: str | None = None, reason: str | None = None,
                 expect_version: int | None = None) -> RolloutState:
    """Apply ``action`` (advance, rollback, pause, resume) to rollout ``name`` and return
    the new state. ``expect_version`` (the version the caller read) refuses the change if
    the rollout changed since; without it the change applies to the newest state (still a
    compare-and-set against a concurrent writer)."""
    state = await must_read(store, name)
    _expect(state, expect_version)
    new = TRANSITIONS[action](state, now=now, by=by, reason=reason)
    return await write(store, new, expect_version=state.version)


#: Public names (``keel.rollout``) of the store-level functions the CLI uses:
#: ``read_rollout`` raises a RolloutError naming the known rollouts for an unknown name.
read_rollout = must_read
rollout_history = history
change_rollout = change
