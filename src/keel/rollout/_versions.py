"""Named versions of one agent (or flow): ``Versions({"v1": agent_v1, "v2": agent_v2})``.

A version name stands for one content hash for ever: the first time a store sees a version
(:meth:`Versions.register`) it keeps what the version is made of under the setting
``version:AGENT:NAME``; later, a process whose ``"v1"`` has other tools, or is otherwise a
different agent, is refused with a :class:`RolloutError` naming the tools and the fix, so that
rolling back to ``"v1"`` always means the agent that ran as ``"v1"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.rollout._checks import check_name
from keel.rollout._errors import RolloutError
from keel.runtime import Agent, Flow, tool_fingerprint, version_digest
from keel.store import RunStore
from keel.tools import Tool

Servable = Agent[Any] | Flow[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionInfo:
    """What a version is: its name, the agent's name, its content hash (``version``), the
    model(s) and the tools (name -> digest of name, description, schema, risk, scopes)."""

    name: str
    agent: str
    kind: str
    version: str
    models: tuple[str, ...]
    tools: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "agent": self.agent, "kind": self.kind,
                "version": self.version, "models": list(self.models),
                "tools": dict(sorted(self.tools.items()))}


def _agents_of(runnable: Servable) -> tuple[Agent[Any], ...]:
    if isinstance(runnable, Agent):
        return (runnable,)
    return tuple(runnable.agents())


def _model(agent: Agent[Any]) -> str:
    return agent.model if isinstance(agent.model, str) else agent.model.name


def _tools(agents: tuple[Agent[Any], ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in agents:
        for t in a.config.tools:
            out[t.name] = _tool_digest(t)
    return out


def _tool_digest(tool: Tool) -> str:
    return version_digest(tool_fingerprint(tool))


def describe(name: str, runnable: Servable) -> VersionInfo:
    """The :class:`VersionInfo` of ``runnable`` registered as ``name``."""
    agents = _agents_of(runnable)
    if isinstance(runnable, Agent):
        version = runnable.version
    else:  # a flow: its kind, name and the versions of the agents it runs
        version = version_digest({"kind": runnable.kind, "name": runnable.name,
                          "agents": [a.version for a in agents]})
    return VersionInfo(name=name, agent=runnable.name,
                       kind="agent" if isinstance(runnable, Agent) else runnable.kind,
                       version=version, models=tuple(sorted({_model(a) for a in agents})),
                       tools=_tools(agents))


class Versions:
    """A registry of named versions of one agent or flow.

    ``Versions({"v1": agent_v1, "v2": agent_v2})`` (or ``Versions(v1=..., v2=...)``). Every
    version must be an :class:`~keel.Agent` or :class:`~keel.runtime.Flow` of the same name
    (a conversation started on one version may continue on another's runs).
    """

    def __init__(self, versions: Mapping[str, Servable] | None = None,
                 **more: Servable) -> None:
        given = {**(dict(versions) if versions is not None else {}), **more}
        if versions is not None and not isinstance(versions, Mapping):
            raise RolloutError("Versions() takes a mapping of version names to agents, e.g. "
                               "Versions({'v1': agent_v1, 'v2': agent_v2})")
        if not given:
            raise RolloutError("Versions() needs at least one version, e.g. "
                               "Versions({'v1': agent_v1})")
        self._items: dict[str, Servable] = {}
        self._info: dict[str, VersionInfo] = {}
        for name, runnable in given.items():
            check_name("version", name)
            if not isinstance(runnable, Agent | Flow):
                raise RolloutError(f"version {name!r} is a {type(runnable).__name__}; a "
                                   "version is a keel Agent or Flow")
            self._items[name] = runnable
            self._info[name] = describe(name, runnable)
        names = {r.name for r in self._items.values()}
        if len(names) > 1:
            raise RolloutError(f"the versions are of different agents ({', '.join(sorted(names))})"
                               "; every version must have the same name (it is the agent's "
                               "identity: runs, conversations and stats go by it)")
        self.agent: str = names.pop()

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> Servable:
        return self.get(name)

    def get(self, name: str) -> Servable:
        """The agent or flow registered as ``name``; an unknown name is a RolloutError."""
        if name not in self._items:
            raise RolloutError(f"unknown version {name!r}; the versions are "
                               f"{', '.join(sorted(self._items))} (add it to Versions(...))")
        return self._items[name]

    def info(self, name: str) -> VersionInfo:
        self.get(name)
        return self._info[name]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every version's hash, kind, models and tools, by name (JSON-able)."""
        return {n: i.to_dict() for n, i in sorted(self._info.items())}

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={i.version}" for n, i in self._info.items())
        return f"<Versions {self.agent}: {shown}>"

    async def register(self, store: RunStore, *, names: tuple[str, ...] | None = None,
                       by: str | None = None) -> None:
        """Keep each version in ``store`` (setting ``version:AGENT:NAME``) the first time
        it is seen; a version the store already knows must be the same agent. A version whose
        tools were removed, added or changed since it was registered, or whose content hash
        differs, raises :class:`RolloutError` naming them and the fix (register the changed
        agent under a new version name)."""
        from keel.core import SettingConflict

        for name in names if names is not None else tuple(self._items):
            info = self.info(name)
            key = f"version:{self.agent}:{name}"
            kept = await store.get_setting(key)
            if kept is None:
                try:
                    await store.put_setting(key, info.to_dict(), expect_version=0, by=by,
                                            reason="registered")
                    continue
                except SettingConflict:  # another worker registered it first: compare
                    kept = await store.get_setting(key)
                    assert kept is not None
            _compare(info, kept.value)


def _compare(info: VersionInfo, kept: Any) -> None:
    if not isinstance(kept, Mapping) or kept.get("version") == info.version:
        return
    was: Mapping[str, str] = kept.get("tools") or {}
    now = info.tools
    missing = sorted(set(was) - set(now))
    added = sorted(set(now) - set(was))
    changed = sorted(t for t in set(was) & set(now) if was[t] != now[t])
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("tools missing", missing), ("tools added", added),
              ("tools changed (schema, description or risk)", changed)) if names]
    what = "; ".join(parts) if parts else (
        f"its instructions, model or settings differ (registered {kept.get('version')}, "
        f"this one {info.version})")
    raise RolloutError(
        f"version {info.name!r} of {info.agent!r} is not the agent registered under that name: "
        f"{what}. A version name always means one agent: register this agent as a new "
        f"version (e.g. {info.name + '-2'!r}) and roll out to it, or restore the registered "
        "tools and settings.")
