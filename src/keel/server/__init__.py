"""L5: ``keel serve`` — the HTTP API under ``/v1`` (runs, live events over SSE, conversations,
approvals, escalations, stats, costs, health, metrics), API keys per tenant exchanged for
short-lived signed tokens with roles, the audit log, and the web console and chat page."""

from typing import TYPE_CHECKING, Any

from keel.server._keys import (
    ACTIONS,
    CUSTOMER,
    ROLES,
    Action,
    ApiKey,
    AuditEntry,
    AuthError,
    KeyNotFound,
    KeyRevoked,
    KeyStore,
    Role,
    allows,
    check_role,
)
from keel.server._tokens import MAX_TTL_S, Claims, check_token, issue_token, read_token

if TYPE_CHECKING:
    from keel.server._app import App, create_app
    from keel.server._mcp import mcp_server, serve_stdio


def __getattr__(name: str) -> Any:
    """``App`` and ``create_app`` need FastAPI (the ``server`` extra), ``mcp_server`` and
    ``serve_stdio`` the mcp package (the ``mcp`` extra); keys, tokens and roles (``keel
    keys``) need neither, so those parts are imported when first named."""
    if name in ("App", "create_app"):
        from keel.server import _app

        return getattr(_app, name)
    if name in ("mcp_server", "serve_stdio"):  # needs the mcp package (the ``mcp`` extra)
        try:
            from keel.server import _mcp
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("mcp"):
                raise
            raise ImportError(f"keel.server.{name} needs the mcp package: pip install "
                              "'keel-agents[mcp]'", name=exc.name) from None
        return getattr(_mcp, name)
    raise AttributeError(f"module 'keel.server' has no attribute {name!r}")


__all__ = [
    "ACTIONS",
    "CUSTOMER",
    "MAX_TTL_S",
    "ROLES",
    "Action",
    "ApiKey",
    "App",
    "AuditEntry",
    "AuthError",
    "Claims",
    "KeyNotFound",
    "KeyRevoked",
    "KeyStore",
    "Role",
    "allows",
    "check_role",
    "check_token",
    "create_app",
    "issue_token",
    "mcp_server",
    "read_token",
    "serve_stdio",
]
