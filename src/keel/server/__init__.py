"""L5: ``keel serve`` — the HTTP API under ``/v1`` (runs, live events over SSE, conversations,
approvals, escalations, stats, costs, health, metrics), API keys per tenant exchanged for
short-lived signed tokens with roles, the audit log, and the web console and chat page."""

from keel.server._app import App, create_app
from keel.server._keys import (
    ACTIONS,
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

__all__ = [
    "ACTIONS",
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
    "read_token",
]
