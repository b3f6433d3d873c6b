"""RunContext: what orchestration code uses for side effects, so runs resume and replay."""

from __future__ import annotations

import inspect
import json
import random as _random
import time
import uuid as _uuid
from collections.abc import Callable
from typing import Any

from keel.core import UserError, stable_hash
from keel.runtime._journal import Journal


class RunContext:
    """Handle on a running run. Every side effect goes through :meth:`step`; time, ids and
    random numbers through :meth:`now`, :meth:`uuid` and :meth:`random`, so that a resumed or
    replayed run sees the same values as the original."""

    __slots__ = ("_counters", "deps", "journal", "scopes")

    def __init__(self, journal: Journal, *, deps: Any = None,
                 scopes: frozenset[str] = frozenset()) -> None:
        self.journal = journal
        self.deps = deps
        self.scopes = scopes
        self._counters: dict[str, int] = {}

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def agent(self) -> str:
        return self.journal.agent

    def _auto_key(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0)
        self._counters[prefix] = n + 1
        return f"{self.journal.agent}/{prefix}#{n}"

    async def step(self, key: str, fn: Callable[[], Any], *, kind: str = "call",
                   name: str | None = None, input: Any = None,
                   idempotent: bool = True) -> Any:
        """Run ``fn`` (sync or async, returning a JSON-able value) once for this run.

        On resume the recorded value is returned instead of calling ``fn`` again. ``input``
        (JSON-able) is hashed to detect a journal that no longer matches the code.
        """

        async def run() -> Any:
            out = fn()
            if inspect.isawaitable(out):
                out = await out
            try:  # fail now, not on replay, if the value is not JSON-able
                json.dumps(out)
            except (TypeError, ValueError) as exc:
                raise UserError(
                    f"step {key!r} returned {type(out).__name__}, which is not JSON-able; "
                    "return plain data (dicts, lists, str, numbers) from ctx.step") from exc
            return out

        value, _ = await self.journal.step(
            key, kind, name or key.rsplit("/", 1)[-1], run, input_hash=stable_hash(input),
            intent=input, idempotent=idempotent, budgeted=False)
        return value

    async def now(self) -> float:
        """Seconds since the epoch, recorded once per call site and replayed."""
        return float(await self.step(self._auto_key("clock"), time.time, kind="clock",
                                     name="now"))

    async def uuid(self) -> str:
        return str(await self.step(self._auto_key("uuid"), lambda: str(_uuid.uuid4()),
                                   kind="uuid", name="uuid4"))

    async def random(self) -> float:
        return float(await self.step(self._auto_key("random"), _random.random, kind="random",
                                     name="random"))
