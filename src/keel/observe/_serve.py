"""The ``/metrics`` endpoint: Prometheus text over HTTP, one process or many.

With ``PROMETHEUS_MULTIPROC_DIR`` set (to an empty directory, the same for every worker
process, before any of them starts), prometheus_client keeps each process's values in files
there and the endpoint serves their sum (gauges: the largest value among live processes);
see docs/observability.md.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.core import ConfigError

if TYPE_CHECKING:  # imported when used, not with keel
    from prometheus_client import CollectorRegistry

_log = logging.getLogger("keel.observe")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The multi-process directory, or None; raises ConfigError if it is set but unusable."""
    path = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(MULTIPROC_ENV, f"{path!r} is not a directory: create it (empty) "
                          "before the worker processes start, or unset it")
    return path


def scrape_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """What to serve: ``registry`` if given; else, in multi-process mode, a registry that
    collects every process's files; else prometheus_client's global registry."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if registry is not None:
        return registry
    if multiprocess_dir() is None:
        return REGISTRY

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int, host: str = "127.0.0.1", *,
                  registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread (``port=0``: a free port, see
    :attr:`MetricsServer.port`). Loopback by default: metrics name agents, tools and
    tenants, so expose them on purpose (``host="0.0.0.0"``)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("metrics port", f"must be a whole number from 0 to 65535, not "
                          f"{port!r}")
    if not isinstance(host, str) or not host:
        raise ConfigError("metrics host", f"must be an address to listen on, not {host!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError("metrics host", f"must be an IP address or localhost, not "
                              f"{host!r}") from None
    from prometheus_client import start_http_server

    target = scrape_registry(registry)
    try:
        server, thread = start_http_server(port, addr=host, registry=target)
    except OSError as exc:
        raise ConfigError("metrics port", f"cannot listen on {host}:{port} ({exc}); pick "
                          "another port") from exc
    bound = server.server_address[1]
    _log.info("metrics served on http://%s:%s/metrics", host, bound,
              extra={"metrics_port": bound})
    return MetricsServer(host=host, port=int(bound), _server=server, _thread=thread)


def mark_process_dead(pid: int | None = None) -> None:
    """In multi-process mode, drop a finished process's live gauges (call it when a worker
    process exits; ``keel worker`` does)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid() if pid is None else pid)  # type: ignore[no-untyped-call]
