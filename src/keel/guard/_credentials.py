"""The credential middleware: tools get short-lived, scoped credentials per call, and their
values stay out of everything keel writes.

``Credentials(provider)`` in an agent's middleware gives each tool call a context whose
``await ctx.credential("stripe")`` asks ``provider`` for a credential limited to the tool's
declared scopes, for this run and tool. The credential is cached (per run, tool, name and
scopes) until ``refresh_before`` seconds before it expires, then fetched again; concurrent
calls share one fetch. Every issued value is registered with keel's secret masking, and the
tool's result is scrubbed before the model, the journal or a log sees it, so a tool that
returns the value, or raises with it in the message, leaks nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from keel.core import (
    ConfigError,
    Credential,
    CredentialProvider,
    Escalate,
    Handoff,
    MissingCredentials,
    redact,
    redact_text,
)
from keel.runtime import Middleware, RunEndInput, ToolCallInput, ToolNext
from keel.tools import ToolFailure, ToolResult

_Key = tuple[str, str, str, frozenset[str]]  # run id, tool, credential name, scopes


class Credentials(Middleware):
    """Hands tools credentials from ``provider`` (a :class:`keel.core.CredentialProvider`).

    ``refresh_before``: seconds before expiry at which a cached credential is fetched anew
    (a call never gets one that expires sooner). ``max_cached``: how many credentials are
    kept (least recently used first out; a run's are dropped when it ends). ``clock`` is
    for tests."""

    def __init__(self, provider: CredentialProvider, *, refresh_before: float = 60.0,
                 max_cached: int = 1024, clock: Callable[[], float] = time.time) -> None:
        if not callable(getattr(provider, "get", None)):
            raise ConfigError("Credentials.provider", f"{provider!r} is not a credential "
                              "provider: it needs an async get(name, *, scopes, run_id, tool)")
        if isinstance(refresh_before, bool) or not isinstance(refresh_before, int | float) \
                or not 0 <= refresh_before < 86_400:
            raise ConfigError("Credentials.refresh_before", "must be seconds from 0 to "
                              f"86400, not {refresh_before!r}")
        if isinstance(max_cached, bool) or not isinstance(max_cached, int) or max_cached < 1:
            raise ConfigError("Credentials.max_cached", f"must be 1 or more, not {max_cached!r}")
        self.provider = provider
        self.refresh_before = float(refresh_before)
        self.max_cached = max_cached
        self.clock = clock
        self._cache: OrderedDict[_Key, Credential] = OrderedDict()
        self._pending: dict[_Key, asyncio.Future[Credential]] = {}
        #: How many credentials the provider issued (for tests and metrics).
        self.issued = 0

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        tool = inp.tool
        declared = tool.meta.scopes

        async def fetch(name: str, scopes: frozenset[str] | None) -> Credential:
            wanted = declared if scopes is None else scopes
            extra = sorted(wanted - declared)
            if extra:
                raise MissingCredentials(
                    f"{tool.name} asked for credential {name!r} with scope(s) "
                    f"{', '.join(extra)} it does not declare; declare them on the tool "
                    f"(@tool(scopes=[...])) or ask for fewer")
            return await self.get(name, scopes=wanted, run_id=inp.run_id, tool=tool.name)

        ctx = replace(inp.ctx, credentials=_Source(fetch, asyncio.get_running_loop()))
        try:
            result = await next(replace(inp, ctx=ctx))
        except (Escalate, Handoff) as exc:  # their reason becomes the model's observation
            exc.reason = redact_text(exc.reason)
            raise
        return scrubbed(result)

    async def get(self, name: str, *, scopes: frozenset[str], run_id: str,
                  tool: str) -> Credential:
        """A credential from the cache, or a fresh one from the provider."""
        if not isinstance(name, str) or not name:
            raise MissingCredentials(f"name the credential to fetch, not {name!r}")
        key = (run_id, tool, name, scopes)
        cached = self._cache.get(key)
        if cached is not None and cached.expires_in(self.clock()) > self.refresh_before:
            self._cache.move_to_end(key)
            return cached
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Credential] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            credential = await self._fetch(name, scopes, run_id, tool)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(credential)
            self._cache[key] = credential
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
            return credential
        finally:
            del self._pending[key]

    async def _fetch(self, name: str, scopes: frozenset[str], run_id: str,
                     tool: str) -> Credential:
        credential = await self.provider.get(name, scopes=scopes, run_id=run_id, tool=tool)
        if not isinstance(credential, Credential):
            raise MissingCredentials(f"the credential provider returned "
                                     f"{type(credential).__name__} for {name!r}, not a "
                                     "keel Credential")
        self.issued += 1
        if credential.expires_in(self.clock()) <= 0:
            raise MissingCredentials(f"the credential provider returned an expired "
                                     f"credential for {name!r}")
        return credential

    async def on_run_end(self, inp: RunEndInput) -> None:
        for key in [k for k in self._cache if k[0] == inp.run_id]:
            del self._cache[key]


class _Source:
    """A call's credential source: ``fetch`` and the loop it runs on."""

    __slots__ = ("fetch", "loop")

    def __init__(self, fetch: Callable[[str, frozenset[str] | None], Awaitable[Credential]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.fetch = fetch
        self.loop = loop

    def __call__(self, name: str, scopes: frozenset[str] | None, /) -> Awaitable[Credential]:
        return self.fetch(name, scopes)


def scrubbed(result: ToolResult) -> ToolResult:
    """``result`` with registered secret values (and key-shaped strings) masked in what the
    model sees and what is journaled."""
    content = redact_text(result.content)
    value: Any = result.value
    if isinstance(value, str):
        value = redact_text(value)
    elif isinstance(value, dict | list):
        value = redact(value)
    failure = result.failure
    if failure is not None:
        failure = ToolFailure(error_type=failure.error_type,
                              message=redact_text(failure.message), retryable=failure.retryable,
                              hint=None if failure.hint is None else redact_text(failure.hint),
                              transient=failure.transient)
    if content is result.content and value is result.value and failure is result.failure:
        return result
    return replace(result, content=content, value=value, failure=failure)
