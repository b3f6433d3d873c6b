"""The console's session: an API key exchanged for the same signed token the API uses, kept
in an ``HttpOnly`` cookie, with its CSRF companion cookie, renewed while the key stays active.

* ``keel_session``: the token (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https);
* ``keel_csrf``: ``csrf_token(secret, jti)``, readable by the console's scripts, which send it
  as ``X-CSRF-Token`` on every state-changing API call;
* the console's own form posts (login, logout) must come from the same origin (``Origin``,
  else ``Sec-Fetch-Site``);
* a page whose session has less than half its lifetime left gets a fresh token, if its key
  is still active (a revoked or rotated key's session ends at the next request).
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from keel.server._auth import CSRF_COOKIE, SESSION_COOKIE, Principal, csrf_token
from keel.server._state import state
from keel.server._tokens import issue_token

LOGIN_PATH = "/console/login"
#: where a customer signs in with the access token their service gave them
CHAT_LOGIN_PATH = "/chat/login"
#: a ``next`` the login follows: one of this site's own console or chat paths, nothing else
_NEXT = re.compile(r"/(console|chat)(/[A-Za-z0-9_.:@/-]*)?(\?[A-Za-z0-9_.:@=&%+-]*)?")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: ``value`` if it is a relative path of the console or the
    chat page (never another site: no scheme, no ``//``, no backslash), else the dashboard."""
    if value and _NEXT.fullmatch(value) and "//" not in value and ".." not in value:
        return value
    return "/console"


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the login form (the customers' one for the chat page), remembering the page
    asked for."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    form = CHAT_LOGIN_PATH if request.url.path.startswith("/chat") else LOGIN_PATH
    return RedirectResponse(f"{form}?next={quote(safe_next(target), safe='/')}",
                            status_code=303)


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def same_origin(request: Request) -> bool:
    """Whether a form post comes from this site. A browser's ``Sec-Fetch-Site`` says so
    (``Origin`` may be ``null``: the pages send no referrer); else an ``Origin``, when sent,
    must be ours. A client that sends neither (not a browser) passes."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin == _own_origin(request)


def set_session(request: Request, response: Response, token: str, jti: str) -> None:
    """Put the session token and its CSRF token in the response's cookies."""
    s = state(request)
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, token, max_age=s.token_ttl_s, path="/",
                        httponly=True, samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, csrf_token(s.auth.secret, jti), max_age=s.token_ttl_s,
                        path="/", httponly=False, samesite="strict", secure=secure)


def clear_session(response: Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")


async def start_session(request: Request, response: Response, key: object,
                        user: str | None = None) -> None:
    """Sign ``key`` (an active :class:`~keel.server.ApiKey`) in: a token in the cookies (a
    customer token for ``user``, when given)."""
    from keel.server._tokens import read_token

    s = state(request)
    token = issue_token(key, s.auth.secret, ttl_s=s.token_ttl_s,  # type: ignore[arg-type]
                        audience=s.auth.audience, user=user)
    claims = read_token(token, s.auth.secret, audience=s.auth.audience)
    set_session(request, response, token, claims.jti)


async def renew(request: Request, who: Principal, response: Response) -> None:
    """A fresh token when the session has less than half its lifetime left and its key is
    still active and not rotated (else nothing: the session ends when the token does)."""
    claims = who.claims
    if who.via != "cookie":
        return
    lifetime = max(1, claims.exp - claims.issued_at)
    if claims.exp - time.time() >= lifetime / 2:
        return
    s = state(request)
    try:
        key = await s.keys.get_key(claims.key_id, tenant=claims.tenant)
    except Exception:  # gone, or the key store failing: the page is served, not renewed
        return
    if not key.active or key.generation != claims.generation:
        return
    await start_session(request, response, key, user=claims.user)  # a customer stays one
