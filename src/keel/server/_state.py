"""What every request handler reaches: the server's store, keys, sessions, streams and
executor, and the dependencies that authenticate a request for one kind of action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer

from keel.guard import DataPolicy, SensitiveDataBlocked
from keel.server._auth import Action, Authenticator, Principal
from keel.server._errors import ApiError
from keel.server._events import Tails
from keel.server._executor import Executor
from keel.server._keys import KeyStore
from keel.store import RunRecord, RunStore


@dataclass(slots=True)
class ServerState:
    store: RunStore
    keys: KeyStore
    auth: Authenticator
    tails: Tails
    executor: Executor
    policy: DataPolicy
    token_ttl_s: int
    sync_timeout_s: float
    title: str

    def scrub(self, value: Any, record: RunRecord) -> Any:
        """``value`` (of ``record``'s run) as it may leave the server: scrubbed by the data
        policy for the ``exports`` destination, under the run's tenant and agent."""
        try:
            if isinstance(value, dict):
                return self.policy.scrub_export(value, record)
            return self.policy.scrub_export({"value": value}, record)["value"]
        except SensitiveDataBlocked as exc:
            raise ApiError(403, "blocked", f"not shown: {exc}") from None

    async def audit(self, who: Principal, action: str, target: str,
                    details: dict[str, Any] | None = None) -> None:
        await self.keys.audit(who=who.who, tenant=who.tenant, action=action, target=target,
                              details=details)


def state(request: Request) -> ServerState:
    return request.app.state.keel  # type: ignore[no-any-return]


#: documents bearer tokens in the OpenAPI schema; the Authenticator reads the header itself
_BEARER = HTTPBearer(auto_error=False, scheme_name="token",
                     description="a token from POST /v1/auth/token (the console's session "
                     "cookie works too)")


def allowed(action: Action) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the request's principal, if its role may do ``action``."""

    async def dependency(request: Request,
                         _: Annotated[Any, Security(_BEARER)] = None) -> Principal:
        return await state(request).auth.principal(request, action)

    dependency.__name__ = f"may_{action}"
    return dependency
