"""The personal-data policy as a guard on the guardrail seam: what the run stores and the model
sees is scrubbed for ``journal`` (the user's input, each tool's output), and the final answer
for ``answers`` and ``journal`` (it is stored too). A tool's arguments are never scrubbed: the
tool that needs the real value receives it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from keel.core import ConfigError
from keel.guard._data_policy import DataPolicy
from keel.guard._redaction import SensitiveDataBlocked
from keel.runtime import GuardDecision, GuardInput, Middleware, Place

#: ``tenant(inp) -> tenant | None``: the run's tenant, seen from a guard (e.g. from ``deps``).
GuardTenant = Callable[[GuardInput], "str | None"]

_DESTINATIONS: dict[str, tuple[str, ...]] = {
    "input": ("journal",), "tool_output": ("journal",), "output": ("answers", "journal")}


class DataGuard(Middleware):
    """Apply ``policy`` at the guardrail places: ``input`` and ``tool_output`` for the
    ``journal`` destination, ``output`` (the final answer) for ``answers`` then ``journal``.
    A masked or hashed value is a ``redact`` decision (the journal records the kinds, never the
    values); a blocked kind is a ``block``. The tenant rules that apply are the run's tenant's
    (``run(..., tenant=)``, seen as ``inp.tenant``); ``tenant(inp)``, when given, names the
    tenant instead (an override, e.g. from ``deps``)."""

    guard_concurrent = False
    guard_timeout = None  # computation only: no timer per check

    def __init__(self, policy: DataPolicy | None = None, *, tenant: GuardTenant | None = None,
                 places: Iterable[Place] = ("input", "tool_output", "output")) -> None:
        if policy is not None and not isinstance(policy, DataPolicy):
            raise ConfigError("DataGuard.policy", f"must be a keel.guard.DataPolicy, not "
                              f"{type(policy).__name__}")
        if tenant is not None and not callable(tenant):
            raise ConfigError("DataGuard.tenant", "must be a function of a GuardInput")
        chosen = frozenset(places)
        for place in chosen:
            if place not in _DESTINATIONS:
                raise ConfigError("DataGuard.places", f"{place!r}: one of "
                                  f"{', '.join(_DESTINATIONS)} (tool arguments are never "
                                  "scrubbed: the tool needs the real value)")
        if not chosen:
            raise ConfigError("DataGuard.places", "empty: the guard would never check")
        self.policy = policy or DataPolicy()
        self.guard_places = chosen
        self._tenant = tenant

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        scope = self.policy.scope(agent=inp.agent,
                                  tenant=inp.tenant if self._tenant is None else self._tenant(inp))
        text = inp.text
        destinations = _DESTINATIONS.get(inp.place, ())
        for destination in destinations:
            if not scope.untouched(text, destination):
                break
        else:
            return None  # the common case: the gate alone says nothing is there
        kinds: set[Any] = set()
        try:
            for destination in destinations:
                text, found = scope.scrub_found(text, destination, where=inp.place)
                kinds.update(found)
        except SensitiveDataBlocked as exc:
            return GuardDecision.block(str(exc), evidence={"kinds": list(exc.kinds)})
        if text == inp.text:
            return None
        return GuardDecision.redact(
            text, f"masked {', '.join(sorted(kinds))} ({' and '.join(destinations)} policy)",
            evidence={"kinds": sorted(kinds), "destinations": list(destinations)})
