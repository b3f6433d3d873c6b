"""Credentials for tools: a value that is never shown, and the provider seam that issues it.

A tool asks its context for a credential (``await ctx.credential("stripe")``); the
credential middleware (:class:`keel.guard.Credentials`) asks a :class:`CredentialProvider`
for a short-lived one scoped to the call, caches it until shortly before it expires, and
registers its value with keel's secret masking (:func:`keel.core.mask_secret`), so that the
value never reaches a prompt, a journal record, a log line or an export, even if the tool
returns it or raises with it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, runtime_checkable

from keel.core._errors import ConfigError, UserError
from keel.core._redact import MIN_SECRET_CHARS, REDACTED, mask_secret

__all__ = ["Credential", "CredentialProvider", "CredentialSource"]


class Credential:
    """A secret value with its name, scopes and expiry. ``repr``, ``str``, JSON and
    :func:`keel.core.to_jsonable` show everything but the value; :meth:`reveal` returns it
    (hand it to the outside system, nowhere else). Making one registers the value with
    keel's secret masking."""

    __slots__ = ("__value", "expires_at", "name", "scopes")

    def __init__(self, value: str, *, name: str = "", expires_at: float | None = None,
                 scopes: Iterable[str] = ()) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
            raise ConfigError("Credential.value", f"must be text of at least "
                              f"{MIN_SECRET_CHARS} characters (shorter values cannot be "
                              "masked reliably wherever they appear)")
        if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(
                expires_at, int | float) or not math.isfinite(expires_at)):
            raise ConfigError("Credential.expires_at", "must be a Unix time in seconds "
                              f"(time.time() + ttl) or None, not {expires_at!r}")
        if isinstance(scopes, str):
            raise ConfigError("Credential.scopes", "pass a list of scopes, not one str")
        mask_secret(value, expires_at=expires_at)
        self.__value = value
        self.name = str(name)
        self.expires_at = None if expires_at is None else float(expires_at)
        self.scopes = frozenset(scopes)

    def reveal(self) -> str:
        """The secret value: pass it to the system it is for, never to a model or a log."""
        return self.__value

    def expires_in(self, now: float) -> float:
        """Seconds until expiry at ``now`` (infinite for a credential without expiry)."""
        return math.inf if self.expires_at is None else self.expires_at - now

    def __repr__(self) -> str:
        return (f"Credential(name={self.name!r}, scopes={sorted(self.scopes)!r}, "
                f"expires_at={self.expires_at!r}, value={REDACTED!r})")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __reduce__(self) -> Any:  # pickling would write the value out
        raise UserError("a Credential cannot be pickled or copied (its secret would be "
                        "written out); pass it, or fetch a new one")


@runtime_checkable
class CredentialProvider(Protocol):
    """Issues credentials: ``get`` returns a short-lived :class:`Credential` for ``name``
    limited to ``scopes``, for one call of ``tool`` in run ``run_id`` (a vault, an STS, an
    OAuth token exchange ...). Raise to refuse; the tool's call then fails with the error."""

    async def get(self, name: str, *, scopes: frozenset[str], run_id: str,
                  tool: str) -> Credential: ...


class CredentialSource(Protocol):
    """What a tool's context holds to fetch credentials: ``await source(name, scopes)``, bound
    by the credential middleware to the run and the tool (``scopes=None``: the tool's
    declared scopes); ``loop`` is the event loop it runs on (for plain ``def`` tools, which
    run in worker threads)."""

    loop: asyncio.AbstractEventLoop

    def __call__(self, name: str, scopes: frozenset[str] | None, /) -> Awaitable[Credential]:
        ...
