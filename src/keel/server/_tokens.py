"""Short-lived signed tokens (JWT, HS256) that an API key is exchanged for.

A token names its key (``sub``), the key's tenant, role and generation (``gen``, which a
rotation bumps), the audience (``aud``, default ``keel``), when it was issued and when it
expires (``iat``, ``exp``: at most :data:`MAX_TTL_S` later) and a unique id (``jti``).
:func:`read_token` accepts only HS256 tokens signed with the secret, for the audience, not
expired (``leeway_s`` of clock skew allowed), with every claim present and well typed;
anything else is an :class:`~keel.server.AuthError` that never quotes the token.

A *customer token* (``user=``) has the role ``customer`` and a ``user`` claim: the end user
it was minted for by its key (an operator's or admin's), whose own conversations it may use
(see :mod:`keel.server._keys`). Any other token has no ``user`` claim.

A signature proves the token was issued, not that its key still stands: :func:`check_token`
also asks the key store, so that the tokens of a revoked or rotated key are refused at once.
The secret is the caller's (e.g. from ``KEEL_SERVER_SECRET``, at least 32 bytes) or the one
kept in the key store (:meth:`KeyStore.signing_secret`), shared by every server process.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from keel.core import UserError
from keel.server._keys import CUSTOMER, ROLES, ApiKey, AuthError, KeyStore, TokenRole

#: The longest a token may live (seconds).
MAX_TTL_S = 3600
#: The shortest signing secret accepted (bytes); HS256 wants at least its digest size.
MIN_SECRET_BYTES = 32
_ALGORITHM = "HS256"
_CLAIMS = ("sub", "tenant", "role", "gen", "aud", "iat", "exp", "jti")
_MAX_TOKEN_CHARS = 4096
_KEY_ID = re.compile(r"[0-9a-f]{16}")
#: a customer's user id: as a run's user id (printable, no slashes or spaces)
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,199}")
#: the roles that may mint customer tokens
_MINTERS = frozenset({"operator", "admin"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """What a valid token says: its key, the key's tenant and role, when it expires (epoch
    seconds), its id, the key's generation when it was issued and when it was issued."""

    key_id: str
    tenant: str
    role: TokenRole
    exp: int
    jti: str
    generation: int = 1
    issued_at: int = 0
    #: the end user of a customer token (None for any other)
    user: str | None = None


def _need_pyjwt() -> None:
    """PyJWT is imported on first use (``keel keys`` works without it); say the extra."""
    try:
        import jwt  # noqa: F401
    except ImportError as exc:
        raise UserError("keel's tokens need PyJWT: pip install 'keel-agents[server]'.") from exc


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise UserError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes "
                        "(KeyStore.signing_secret() gives one; or set a long random "
                        "KEEL_SERVER_SECRET).")
    return secret


def _check_audience(audience: object) -> str:
    if not isinstance(audience, str) or not audience or len(audience) > 200:
        raise UserError(f"audience= must be a non-empty string, not {audience!r:.40}.")
    return audience


def check_user(user: object) -> str:
    """``user`` if it is a valid end-user id (1-200 letters, digits and ``_.:@+-``, starting
    with a letter or digit), else a :class:`~keel.UserError` saying so."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise UserError(f"user= must be 1-200 letters, digits or _.:@+- (starting with a "
                        f"letter or digit), not {user!r:.40}.")
    return user


def issue_token(key: ApiKey, secret: bytes, *, ttl_s: int = 600, audience: str = "keel",
                now: float | None = None, user: str | None = None) -> str:
    """A token for ``key`` (which must be active) signed with ``secret``, valid for
    ``ttl_s`` seconds (1 to :data:`MAX_TTL_S`) from ``now`` (default: the clock). With
    ``user``: a customer token for that end user (the key must be an operator's or an
    admin's), which may only chat (see :mod:`keel.server._keys`)."""
    if not isinstance(key, ApiKey):
        raise UserError(f"issue_token needs an ApiKey (from KeyStore.verify), not "
                        f"{type(key).__name__}.")
    if not key.active:
        raise AuthError("API key refused: it was revoked; ask an admin for a new one.",
                        reason="revoked")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise UserError(f"ttl_s= must be whole seconds from 1 to {MAX_TTL_S} (tokens are "
                        f"short-lived: exchange the key again), not {ttl_s!r}.")
    _need_pyjwt()
    import jwt

    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": key.key_id, "tenant": key.tenant, "role": key.role, "gen": key.generation,
        "aud": _check_audience(audience), "iat": issued, "exp": issued + ttl_s,
        "jti": secrets.token_urlsafe(16)}
    if user is not None:
        if key.role not in _MINTERS:
            raise AuthError(f"a {key.role} key may not mint customer tokens (an operator's "
                            "or admin's may).", reason="claims")
        claims.update(role=CUSTOMER, user=check_user(user))
    return jwt.encode(claims, _check_secret(secret), algorithm=_ALGORITHM)


def read_token(token: str, secret: bytes, *, audience: str = "keel",
               leeway_s: int = 5) -> Claims:
    """The claims of ``token`` if it is valid (see the module); an
    :class:`~keel.server.AuthError` otherwise."""
    secret, audience = _check_secret(secret), _check_audience(audience)
    if isinstance(leeway_s, bool) or not isinstance(leeway_s, int | float) \
            or not 0 <= leeway_s <= 300:
        raise UserError(f"leeway_s= must be seconds from 0 to 300, not {leeway_s!r}.")
    _need_pyjwt()
    import jwt
    from jwt import exceptions as jwt_errors

    if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS:
        raise AuthError("not a keel token.", reason="malformed")
    try:
        payload = jwt.decode(token, secret, algorithms=[_ALGORITHM], audience=audience,
                             leeway=leeway_s,
                             options={"require": list(_CLAIMS), "strict_aud": True})
    except jwt.ExpiredSignatureError:
        raise AuthError("the token expired; exchange the API key for a new one.",
                        reason="expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError("the token is for another audience.", reason="audience") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the token's signature is not valid (signed with another secret, "
                        "or changed).", reason="signature") from None
    except (jwt_errors.MissingRequiredClaimError, jwt_errors.ImmatureSignatureError,
            jwt_errors.InvalidIssuedAtError, jwt_errors.InvalidSubjectError,
            jwt_errors.InvalidJTIError):
        raise AuthError("the token's claims are not valid.", reason="claims") from None
    except jwt.PyJWTError:  # undecodable, another algorithm (none included), bad header
        raise AuthError("not a keel token.", reason="malformed") from None
    return _claims(payload)


def _claims(payload: dict[str, Any]) -> Claims:
    sub, tenant, role = payload.get("sub"), payload.get("tenant"), payload.get("role")
    gen, exp, iat, jti = (payload.get("gen"), payload.get("exp"), payload.get("iat"),
                          payload.get("jti"))
    user = payload.get("user")
    ints = (gen, exp, iat)
    if not (isinstance(sub, str) and _KEY_ID.fullmatch(sub) and isinstance(tenant, str)
            and tenant.strip() and tenant.isprintable() and isinstance(role, str)
            and ((role in ROLES and user is None)
                 or (role == CUSTOMER and isinstance(user, str) and _USER.fullmatch(user)))
            and isinstance(jti, str) and jti
            and all(isinstance(v, int) and not isinstance(v, bool) for v in ints)):
        raise AuthError("the token's claims are not valid.", reason="claims")
    return Claims(key_id=sub, tenant=tenant, role=role, exp=exp,  # type: ignore[arg-type]
                  jti=jti, generation=gen, issued_at=iat, user=user)  # type: ignore[arg-type]


async def check_token(token: str, keys: KeyStore, *, secret: bytes | None = None,
                      audience: str = "keel", leeway_s: int = 5) -> Claims:
    """:func:`read_token`, then the key store: the token's key must exist, be active and
    not rotated since the token was issued. ``secret`` defaults to the store's."""
    claims = read_token(token, secret if secret is not None else await keys.signing_secret(),
                        audience=audience, leeway_s=leeway_s)
    if not await keys.is_active(claims.key_id, claims.generation):
        raise AuthError("the token's API key was revoked or rotated; exchange a current key "
                        "for a new token.", reason="revoked")
    return claims
