"""What a tool sees of the run it is called from."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from keel.core._errors import MissingCredentials

if TYPE_CHECKING:
    from keel.core._credentials import Credential, CredentialSource


class RecordedSteps(Protocol):
    """Read access to the results a run has recorded in its journal, for a tool that works
    on an earlier step of the same run (keel.context's paging drill-down tools read a large
    result from it instead of calling its tool again)."""

    def recorded_results(self, kind: str) -> Iterator[tuple[str, Any]]:
        """``(step key, data as stored)`` of each recorded result of this ``kind`` (a
        tool's: ``{"content", "value", ...}``), in the order they were recorded."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Handed to a tool function that declares a parameter annotated ``ToolContext``.

    ``idempotency_key`` is stable across retries and resumes of the same step (run id + step
    key): pass it to the outside system so a repeated call is recognised and not applied twice.

    ``tenant`` and ``user`` say whose run it is (set with ``run(..., tenant=, user=)``; None
    otherwise): a tool that reads or writes per-tenant data scopes its query with them.

    ``credentials`` is set by the credential middleware (:class:`keel.guard.Credentials`);
    a tool calls :meth:`credential` rather than using it directly.

    ``steps`` reads what this run recorded (:class:`RecordedSteps`; set by the agent loop,
    None elsewhere): only this run's steps, never another run's.
    """

    run_id: str
    step_key: str
    agent: str
    idempotency_key: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    deps: Any = None
    attempt: int = 1
    credentials: CredentialSource | None = field(default=None, repr=False, compare=False)
    #: The run's tenant and user (``run(..., tenant=, user=)``); None when not given.
    tenant: str | None = None
    user: str | None = None
    steps: RecordedSteps | None = field(default=None, repr=False, compare=False)

    async def credential(self, name: str, *,
                         scopes: Iterable[str] | None = None) -> Credential:
        """A short-lived credential ``name`` for this call, limited to ``scopes`` (default:
        the tool's declared scopes; asking for more is refused). Use ``.reveal()`` on it
        where the value goes out; keel masks the value everywhere else."""
        if self.credentials is None:
            _no_provider(self, name)
        if isinstance(scopes, str):
            raise MissingCredentials("credential(scopes=...) takes a list of scopes, not "
                                     "one str")
        return await self.credentials(name, None if scopes is None else frozenset(scopes))

    def credential_sync(self, name: str, *, scopes: Iterable[str] | None = None,
                        timeout: float = 30.0) -> Credential:
        """:meth:`credential` for a plain ``def`` tool (it runs in a worker thread, and this
        waits up to ``timeout`` seconds for the event loop to fetch the credential). Not for
        ``async def`` tools: they ``await ctx.credential(...)``."""
        if self.credentials is None:
            _no_provider(self, name)
        loop = self.credentials.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise MissingCredentials("credential_sync() would block the event loop; an "
                                     "async tool uses `await ctx.credential(...)`")
        future = asyncio.run_coroutine_threadsafe(
            self.credential(name, scopes=scopes), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise MissingCredentials(f"credential {name!r} was not issued within "
                                     f"{timeout} s") from None


def _no_provider(ctx: ToolContext, name: str) -> NoReturn:
    raise MissingCredentials(
        f"the tool asked for credential {name!r} but agent {ctx.agent!r} has no "
        "credential provider; add keel.guard.Credentials(provider) to its middleware")
