"""L5: ``keel serve`` — the HTTP API under ``/v1`` (runs, live events over SSE, conversations,
approvals, escalations, stats, costs, health, metrics), API keys per tenant exchanged for
short-lived signed tokens with roles, the audit log, and the web console and chat page."""
