"""Who is calling: API keys exchanged for short-lived tokens, roles, rate limits, the
console's session cookie and its CSRF check.

* ``POST /v1/auth/token`` takes an API key (``Authorization: Bearer keel_...``) and returns
  a signed token (minutes) that every other call carries as ``Authorization: Bearer``.
  A token names its key; a revoked or rotated key's tokens are refused at once, because
  each request checks that the key is still active.
* The console signs in with a key too; its session is the same token in an ``HttpOnly``,
  ``SameSite=Strict`` cookie, renewed while the key stays active. A state-changing request
  made with the cookie must carry ``X-CSRF-Token``, an HMAC of the token's id that the page
  reads from a second cookie: another site can make the browser send the cookie, never read
  it.
* Each key has its own rate limit (requests per second with a burst); key exchanges have
  one per client address, so keys cannot be guessed quickly.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from aiolimiter import AsyncLimiter
from fastapi import Request

from keel.server._errors import ApiError
from keel.server._keys import AuthError, KeyStore, allows
from keel.server._tokens import Claims, read_token

Action = Literal["read", "run", "decide", "admin", "chat"]
SESSION_COOKIE = "keel_session"
CSRF_COOKIE = "keel_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LIMITERS_KEPT = 10_000
#: verified tokens remembered per process (their signature is not checked again)
_TOKENS_KEPT = 10_000
#: the clock skew a token's expiry is allowed (as read_token's leeway)
_LEEWAY_S = 5


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: its key, tenant and role, and how it authenticated."""

    key_id: str
    tenant: str
    role: str
    via: Literal["bearer", "cookie"]
    claims: Claims
    name: str = ""

    @property
    def user(self) -> str | None:
        """The end user of a customer token (None for a key's own token)."""
        return self.claims.user

    @property
    def who(self) -> str:
        """How the audit log and decisions name the caller: the key's name (a person's, for
        a reviewer's own key) and its id; a customer by their user id and the minting key."""
        if self.claims.user is not None:
            return f"customer {self.claims.user} (via key {self.key_id})"
        return f"{self.name} (key {self.key_id})" if self.name else f"key {self.key_id}"


def csrf_token(secret: bytes, jti: str) -> str:
    return hmac.new(secret, f"csrf:{jti}".encode(), hashlib.sha256).hexdigest()


class RateLimits:
    """One token bucket per key (or per client address, for key exchanges)."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self._limiters: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def check(self, who: str) -> None:
        """Count one request of ``who``; a 429 with ``Retry-After`` when over the limit."""
        if self.per_second <= 0:
            return
        limiter = self._limiters.get(who)
        if limiter is None:
            limiter = AsyncLimiter(self.burst, self.burst / self.per_second)
            self._limiters[who] = limiter
            if len(self._limiters) > _LIMITERS_KEPT:
                self._limiters.popitem(last=False)
        else:
            self._limiters.move_to_end(who)
        if not limiter.has_capacity():
            raise ApiError(429, "rate_limited", "too many requests for this key; slow down",
                           headers={"Retry-After": str(max(1, round(1 / self.per_second)))})
        await limiter.acquire()  # has capacity: returns at once (a refused request never waits)


class Authenticator:
    """Turns a request's credentials into a :class:`Principal`, or refuses it."""

    def __init__(self, keys: KeyStore, secret: bytes, *, audience: str,
                 limits: RateLimits) -> None:
        self.keys = keys
        self.secret = secret
        self.audience = audience
        self.limits = limits
        self._names: dict[str, str] = {}
        self._verified: OrderedDict[str, Claims] = OrderedDict()

    async def principal(self, request: Request, action: Action | None) -> Principal:
        """The caller, if its token stands and its role may do ``action`` (None: any role;
        the caller checks)."""
        token, via = self._credentials(request)
        try:
            claims = self._read(token)
        except AuthError as exc:
            raise ApiError(401, "unauthorized", str(exc),
                           headers={"WWW-Authenticate": "Bearer"}) from None
        if not await self.keys.is_active(claims.key_id, claims.generation):
            raise ApiError(401, "unauthorized", "the token's API key was revoked or rotated; "
                           "exchange a current key for a new token",
                           headers={"WWW-Authenticate": "Bearer"})
        if via == "cookie" and request.method not in _SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, csrf_token(self.secret, claims.jti)):
                raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token for this session")
        # each customer of a key has a bucket of their own: one busy customer does not slow
        # the others (nor the key's own calls)
        await self.limits.check(f"key:{claims.key_id}" + (f":user:{claims.user}"
                                                          if claims.user is not None else ""))
        if action is not None and not allows(claims.role, action):
            raise ApiError(403, "forbidden", f"role {claims.role!r} may not {action} here")
        name = self._names.get(claims.key_id)
        if name is None:  # a key's name never changes: one look per key and process
            name = self._names[claims.key_id] = (await self.keys.get_key(claims.key_id)).name
        request.state.principal = Principal(claims.key_id, claims.tenant, claims.role, via,
                                            claims, name)
        return request.state.principal  # type: ignore[no-any-return]

    def _read(self, token: str) -> Claims:
        """The token's claims: its signature and claims checked once per process (a client
        sends the same token for minutes), its expiry on every request. Whether its key is
        still active is the caller's check, every time."""
        claims = self._verified.get(token)
        if claims is None:
            claims = read_token(token, self.secret, audience=self.audience)
            self._verified[token] = claims
            if len(self._verified) > _TOKENS_KEPT:
                self._verified.popitem(last=False)
        elif claims.exp + _LEEWAY_S < time.time():
            del self._verified[token]
            return read_token(token, self.secret, audience=self.audience)  # says "expired"
        return claims

    @staticmethod
    def _credentials(request: Request) -> tuple[str, Literal["bearer", "cookie"]]:
        header = request.headers.get("authorization")
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(401, "unauthorized", "use Authorization: Bearer TOKEN",
                               headers={"WWW-Authenticate": "Bearer"})
            return value.strip(), "bearer"
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return cookie, "cookie"
        raise ApiError(401, "unauthorized", "no credentials: exchange an API key at "
                       "POST /v1/auth/token and send Authorization: Bearer TOKEN",
                       headers={"WWW-Authenticate": "Bearer"})

    async def key_from(self, request: Request, plaintext: str | None) -> object:
        """The active key a token exchange presents; refused keys all get the same 401."""
        client = request.client.host if request.client else "?"
        await self.limits.check(f"addr:{client}")
        if not plaintext:
            raise ApiError(401, "unauthorized", "send the API key as Authorization: Bearer "
                           "KEY", headers={"WWW-Authenticate": "Bearer"})
        try:
            return await self.keys.verify(plaintext)
        except AuthError as exc:
            raise ApiError(401, "unauthorized", str(exc),
                           headers={"WWW-Authenticate": "Bearer"}) from None

