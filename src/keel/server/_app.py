"""The app object ``keel serve MODULE:APP`` loads, and the ASGI application it builds.

    from keel.server import App
    app = App(agents=[support, refunds], store="postgresql://...")

``App`` lists what the server exposes (agents and flows, by name) and how it runs them; its
:meth:`App.asgi` builds the FastAPI application (the API under ``/v1``, the console under
``/console``, the chat page under ``/chat``). Configuration errors are raised when the app
is built or started, never on the first request.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from keel.core import ConfigError
from keel.guard import DataPolicy
from keel.runtime import default_store_url, register_engine
from keel.server._auth import Authenticator, RateLimits
from keel.server._errors import error_response, install_handlers
from keel.server._events import Tails
from keel.server._executor import Executor, Mode
from keel.server._keys import KeyStore
from keel.server._offloop import off_loop
from keel.server._state import ServerState
from keel.store import RunStore, open_store

_log = logging.getLogger("keel.server")
SECRET_ENV = "KEEL_SERVER_SECRET"
#: the largest request body the API reads (bytes); run inputs are capped lower by schema
MAX_BODY_BYTES = 1_000_000
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; "
                                "connect-src 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'"),
}


class App:
    """What a keel server exposes and how.

    ``agents``: the agents and flows clients may start, by their ``name`` (unique).
    ``store``: the run store (a URL or a store; default ``KEEL_STORE`` or
    ``.keel/runs.db``); API keys and the audit log live in the same database.
    ``execute``: ``"server"`` runs them in this process; ``"workers"`` leaves them to
    ``keel worker`` processes sharing the store. ``token_ttl_s``: how long a token lasts
    (at most an hour). ``rate_per_s`` / ``burst``: each key's request rate.
    ``cors_origins``: browser origins other than the server's own allowed to call the API.
    ``data_policy``: what leaves the server (runs and journals are scrubbed for the
    ``exports`` destination). ``grace_s``: on shutdown, how long in-flight runs may finish
    before they are handed back to the store for other workers. ``chat_agents``: the
    agents and flows customers may chat with (``/chat``, ``/v1/chat``; default: all).
    """

    def __init__(self, agents: Sequence[Any] = (), *, store: str | RunStore | None = None,
                 execute: Mode = "server", token_ttl_s: int = 600,
                 rate_per_s: float = 50.0, burst: int = 100,
                 cors_origins: Sequence[str] = (), data_policy: DataPolicy | None = None,
                 grace_s: float = 10.0, sync_timeout_s: float = 30.0,
                 title: str = "keel", secret: bytes | None = None,
                 chat_agents: Sequence[str] | None = None) -> None:
        names: dict[str, Any] = {}
        for agent in agents:
            name = getattr(agent, "name", None)
            if not isinstance(name, str) or not hasattr(agent, "run"):
                raise ConfigError("agents", f"{agent!r} is not a keel Agent or Flow")
            if name in names:
                raise ConfigError("agents", f"two agents are named {name!r}; names must be "
                                  "unique (clients start runs by name)")
            names[name] = agent
        if execute not in ("server", "workers"):
            raise ConfigError("execute", f"must be 'server' or 'workers', not {execute!r}")
        if not isinstance(token_ttl_s, int) or not 30 <= token_ttl_s <= 3600:
            raise ConfigError("token_ttl_s", "must be a whole number of seconds from 30 to "
                              "3600 (tokens are short-lived)")
        for origin in cors_origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ConfigError("cors_origins", f"{origin!r}: name each origin "
                                  "(https://host:port); '*' is not allowed with credentials")
        if chat_agents is not None:
            if isinstance(chat_agents, str):
                raise ConfigError("chat_agents", "must be a list of agent names, not one "
                                  "string")
            unknown = sorted(set(chat_agents) - set(names))
            if unknown:
                raise ConfigError("chat_agents", f"{unknown} are not among the agents "
                                  f"{sorted(names)}")
        self.chat_agents = None if chat_agents is None else frozenset(chat_agents)
        env_secret = os.environ.get(SECRET_ENV)
        if secret is None and env_secret:
            if len(env_secret) < 32:
                raise ConfigError(SECRET_ENV, "must be at least 32 characters")
            secret = env_secret.encode()
        self.agents = names
        self.store = store
        self.execute: Mode = execute
        self.token_ttl_s = token_ttl_s
        self.rate_per_s, self.burst = rate_per_s, burst
        self.cors_origins = tuple(cors_origins)
        self.data_policy = data_policy or DataPolicy()
        self.grace_s = grace_s
        self.sync_timeout_s = sync_timeout_s
        self.title = title
        self.secret = secret

    def asgi(self) -> FastAPI:
        """The FastAPI application (build it once per server process)."""
        return create_app(self)


def _store_url(store: str | RunStore | None) -> str:
    if isinstance(store, RunStore):
        target = getattr(store, "target", None) or getattr(store, "path", None) \
            or getattr(store, "url", None)
        if target is None:
            raise ConfigError("store", "the server keeps API keys in the run store's "
                              "database; pass a store URL (SQLite path or postgresql://)")
        return str(target)
    return store or default_store_url()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    spec: App = app.state.spec
    opened = spec.store if isinstance(spec.store, RunStore) else open_store(
        _store_url(spec.store))
    store = off_loop(opened)
    keys = KeyStore(_store_url(spec.store))
    try:
        await store.list_runs()  # a bad URL or an unreadable store fails at start-up
        secret = spec.secret or await keys.signing_secret()
        tails = Tails(store, lambda value, record: value)
        state = ServerState(
            store=store, keys=keys,
            auth=Authenticator(keys, secret, audience="keel",
                               limits=RateLimits(spec.rate_per_s, spec.burst)),
            tails=tails, executor=Executor(store, spec.agents, tails, mode=spec.execute,
                                           grace_s=spec.grace_s),
            policy=spec.data_policy, token_ttl_s=spec.token_ttl_s,
            sync_timeout_s=spec.sync_timeout_s, title=spec.title)
        tails.scrub = state.scrub
        app.state.keel = state
        await state.executor.open()
        yield
        await state.executor.close()
        await tails.close()
    finally:
        await keys.close()
        if store is not spec.store:
            await store.close()


def create_app(spec: App) -> FastAPI:
    from keel.server._api_chat import router as chat
    from keel.server._api_feedback import router as feedback
    from keel.server._api_flows import router as flows
    from keel.server._api_humans import router as humans
    from keel.server._api_ops import router as ops
    from keel.server._api_runs import router as runs
    from keel.server._console import STATIC_DIR
    from keel.server._console import router as console

    app = FastAPI(title=f"{spec.title} API", version="1", lifespan=_lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.spec = spec
    # A decision or cancel of a Temporal run signals its workflow (imported only then).
    register_engine("temporal", "keel.temporal:notify_decided")
    install_handlers(app)
    for router in (runs, feedback, humans, ops, flows, chat):
        app.include_router(router)
    app.include_router(console)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    if spec.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(spec.cors_origins),
                           allow_credentials=True, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID",
                                          "X-CSRF-Token"])

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error_response(413, "too_large", f"the body is over {MAX_BODY_BYTES:,} "
                                  "bytes")
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security",
                                        "max-age=31536000; includeSubDomains")
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


class BodyLimit:
    """Refuse a request body over ``limit`` bytes as it streams in (a chunked body has no
    Content-Length to check up front)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen, refused = 0, False

        async def limited() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now; the app sees the client go away
                    refused = True
                    await error_response(413, "too_large", f"the body is over "
                                         f"{self.limit:,} bytes")(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not refused:
                raise


class _TooLarge(Exception):
    pass
