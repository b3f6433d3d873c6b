"""The notifier seam: where the behavioural monitor's alerts go.

A notifier is anything with ``async notify(alert)``. :class:`LogNotifier` writes a warning
on the ``keel.monitor`` logger (structured fields in ``extra``); :class:`WebhookNotifier`
POSTs the alert as JSON over httpx. An alert carries the evidence (counts, sizes, tool
names, hashes), never the content of a call or its result.

Alerts are best effort: a webhook that is down or slow is logged and does not fail the run
it reports on (the action the monitor took, throttling or escalating, does not depend on
the alert arriving).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from keel.core import ConfigError

if TYPE_CHECKING:  # httpx is imported when a webhook is sent, not when keel is imported
    import httpx

_log = logging.getLogger("keel.monitor")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One deviation the monitor saw, and what it did about it."""

    deviation: str
    actions: tuple[str, ...]
    reason: str
    agent: str
    run_id: str
    step_key: str | None = None
    tool: str | None = None
    tenant: str | None = None
    at: float = 0.0
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"deviation": self.deviation, "actions": list(self.actions),
                "reason": self.reason, "agent": self.agent, "tenant": self.tenant,
                "run_id": self.run_id, "step_key": self.step_key, "tool": self.tool,
                "at": self.at, "evidence": dict(self.evidence)}


@runtime_checkable
class Notifier(Protocol):
    """Receives the monitor's alerts."""

    async def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """Alerts as warnings on a logger (default ``keel.monitor``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or _log

    def __repr__(self) -> str:
        return f"LogNotifier({self.logger.name!r})"

    async def notify(self, alert: Alert) -> None:
        self.logger.warning("monitor: %s in run %s (%s): %s", alert.deviation, alert.run_id,
                            ", ".join(alert.actions) or "no action", alert.reason,
                            extra={"monitor_alert": alert.to_dict()})


class WebhookNotifier:
    """POSTs each alert as JSON to ``url`` (``{"alert": {...}}``).

    ``headers`` are sent with every request (an auth token); ``timeout`` bounds each POST.
    A failed POST (unreachable, timed out, a non-2xx answer) is logged on ``keel.monitor``
    and not raised. ``client`` lets tests or apps share an ``httpx.AsyncClient``.
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 timeout: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            raise ConfigError("url", f"expected an http:// or https:// URL, not {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not 0 < timeout < float("inf"):
            raise ConfigError("timeout", f"must be a number of seconds > 0, not {timeout!r}")
        if headers is not None and not all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in headers.items()):
            raise ConfigError("headers", "must map header names to string values")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = float(timeout)
        self._client = client
        #: how many alerts could not be delivered (for health checks)
        self.failures = 0

    def __repr__(self) -> str:
        parts = urlsplit(self.url)  # never the query string or a password: they carry tokens
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return f"WebhookNotifier('{parts.scheme}://{host}{parts.path}')"

    async def notify(self, alert: Alert) -> None:
        import httpx  # here, not at import: keel does not load httpx until it is needed

        body = {"alert": alert.to_dict()}
        try:
            if self._client is not None:
                resp = await self._client.post(self.url, json=body, headers=self.headers,
                                               timeout=self.timeout)
            else:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    resp = await client.post(self.url, json=body, headers=self.headers)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            self.failures += 1
            _log.warning("monitor: webhook %r did not take the alert (%s: %s)", self,
                         type(exc).__name__, exc, extra={"monitor_alert": alert.to_dict()})


__all__ = ["Alert", "LogNotifier", "Notifier", "WebhookNotifier"]
