"""Feature flags kept in the run store: ``Flags(store)``.

A flag is the setting ``flag:NAME`` (written with compare-and-set; every version kept, so
``history`` shows who switched what, when and why). It is on for:

* nobody, when ``on=False``;
* the users in ``users`` and the tenants in ``tenants`` (allow-lists);
* a sticky ``percent`` of everyone else, by consistent hashing of the user id (or the tenant
  id when there is no user): the same user gets the same answer on every worker, and raising
  the share keeps everyone who was in (see :mod:`keel.rollout._hashing`).

``percent`` defaults to 100 when no allow-list is given and to 0 when one is (a flag for
``tenants=["acme"]`` is on for acme only). A call with neither user nor tenant gets the flag
only at 100%.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from keel.rollout._checks import check_ids, check_name, check_percent, check_seconds
from keel.rollout._errors import RolloutError
from keel.rollout._hashing import in_share
from keel.store import RunStore, Setting

PREFIX = "flag:"


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """A flag as stored: its name, whether it is on, the share and the allow-lists, and the
    setting's version (for compare-and-set) with who changed it last and why."""

    name: str
    on: bool
    percent: float
    tenants: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    version: int = 0
    updated_at: float = 0.0
    updated_by: str | None = None
    reason: str | None = None

    def enabled(self, *, user: str | None = None, tenant: str | None = None) -> bool:
        """Whether the flag is on for this user and tenant (see the module docstring)."""
        if not self.on:
            return False
        if (user is not None and user in self.users) or \
                (tenant is not None and tenant in self.tenants):
            return True
        key = user if user is not None else tenant
        if key is None:
            return self.percent >= 100
        return in_share(f"flag:{self.name}", key, self.percent)

    def to_value(self) -> dict[str, Any]:
        return {"on": self.on, "percent": self.percent, "tenants": list(self.tenants),
                "users": list(self.users)}

    @classmethod
    def of(cls, setting: Setting) -> Flag:
        v = setting.value if isinstance(setting.value, dict) else {}
        return cls(name=setting.key[len(PREFIX):], on=bool(v.get("on")),
                   percent=float(v.get("percent") or 0.0),
                   tenants=tuple(v.get("tenants") or ()), users=tuple(v.get("users") or ()),
                   version=setting.version, updated_at=setting.updated_at,
                   updated_by=setting.updated_by, reason=setting.reason)


class Flags:
    """Feature flags in ``store``. Reads are cached for ``ttl_s`` seconds per flag (so that
    a check on every request costs nothing), so a change reaches every worker within
    ``ttl_s``."""

    def __init__(self, store: RunStore, *, ttl_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(store, RunStore):
            raise RolloutError(f"Flags() needs a keel RunStore (e.g. open_store(url)), not "
                               f"{type(store).__name__}")
        self.store = store
        self.ttl_s = check_seconds("ttl_s", ttl_s, zero=True)
        self._clock = clock
        self._cache: dict[str, tuple[float, Flag | None]] = {}

    async def get(self, name: str, *, fresh: bool = False) -> Flag | None:
        """The flag ``name`` (None if it was never set); cached for ``ttl_s`` unless
        ``fresh``."""
        check_name("flag", name)
        now = self._clock()
        hit = self._cache.get(name)
        if not fresh and hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        setting = await self.store.get_setting(PREFIX + name)
        flag = None if setting is None else Flag.of(setting)
        self._cache[name] = (now, flag)
        return flag

    async def enabled(self, name: str, *, user: str | None = None,
                      tenant: str | None = None) -> bool:
        """Whether flag ``name`` is on for this user and tenant (an unknown flag is off)."""
        flag = await self.get(name)
        return flag is not None and flag.enabled(user=user, tenant=tenant)

    async def set(self, name: str, *, on: bool = True, percent: float | None = None,
                  tenants: Iterable[str] = (), users: Iterable[str] = (),
                  by: str | None = None, reason: str | None = None,
                  expect_version: int | None = None) -> Flag:
        """Create or change flag ``name`` and return it as stored. ``expect_version`` (the
        version you read) makes the change conditional: if someone changed the flag since,
        :class:`keel.SettingConflict` is raised and nothing changes. Without it the flag's
        newest version is read first (a write racing with another still conflicts rather
        than losing one of them)."""
        check_name("flag", name)
        if not isinstance(on, bool):
            raise RolloutError(f"on= is True or False, not {on!r:.40}")
        t, u = check_ids("tenants", tenants), check_ids("users", users)
        share = (0.0 if (t or u) else 100.0) if percent is None \
            else check_percent("percent", percent)
        if expect_version is None:
            kept = await self.store.get_setting(PREFIX + name)
            expect_version = 0 if kept is None else kept.version
        flag = Flag(name=name, on=on, percent=share, tenants=t, users=u)
        setting = await self.store.put_setting(PREFIX + name, flag.to_value(),
                                               expect_version=expect_version, by=by,
                                               reason=reason)
        stored = Flag.of(setting)
        self._cache[name] = (self._clock(), stored)
        return stored

    async def history(self, name: str, *, limit: int = 1000) -> list[Flag]:
        """Every version of flag ``name``, oldest first."""
        check_name("flag", name)
        return [Flag.of(s) for s in await self.store.setting_history(PREFIX + name,
                                                                     limit=limit)]

    async def list(self) -> list[Flag]:
        """Every flag's newest version, by name."""
        return [Flag.of(s) for s in await self.store.list_settings(PREFIX)]
