"""Configuring where traces go: an SDK tracer provider with an exporter (the ``otel`` extra).

:func:`setup_tracing` builds an OpenTelemetry SDK ``TracerProvider`` exporting in the
background (a batch processor: a run never waits for the collector) and, by default, makes
it the global provider that :class:`~keel.observe.Tracing` uses. An unreachable collector
drops spans with one warning (on ``keel.observe``) until it answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.core import ConfigError, UserError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

EXPORTERS = ("otlp", "console")
_log = logging.getLogger("keel.observe")
_OTLP_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def setup_tracing(exporter: str = "otlp", *, endpoint: str | None = None,
                  service_name: str = "keel", headers: Mapping[str, str] | None = None,
                  timeout: float = 5.0, set_global: bool = True) -> TracerProvider:
    """An SDK tracer provider sending keel's spans to ``exporter``: ``"otlp"`` (OTLP over
    HTTP/protobuf to ``endpoint``, default ``http://127.0.0.1:4318/v1/traces``; a URL
    without a path gets ``/v1/traces``) or ``"console"`` (stdout). ``timeout``: seconds per
    export attempt (exports run in a background thread). ``set_global``: make it
    OpenTelemetry's global provider (as it can be set only once per process, pass False
    and give it to ``Tracing(tracer_provider=...)`` to keep it local).

    Needs ``pip install 'keel-agents[otel]'``."""
    if exporter not in EXPORTERS:
        raise ConfigError("setup_tracing.exporter", f"unknown exporter {exporter!r}; use one "
                          f"of {', '.join(EXPORTERS)} (or build your own SDK TracerProvider "
                          "and pass it to Tracing(tracer_provider=...))")
    if not isinstance(service_name, str) or not service_name.strip():
        raise ConfigError("setup_tracing.service_name", "must be a non-empty string")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise ConfigError("setup_tracing.timeout", f"expected seconds in (0, 300], got "
                          f"{timeout!r}")
    url = _endpoint(endpoint) if exporter == "otlp" else None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise UserError("setup_tracing() needs the OpenTelemetry SDK: pip install "
                        "'keel-agents[otel]'") from exc
    if url is not None:
        inner: SpanExporter = _otlp(url, dict(headers or {}), float(timeout))
        out: Any = DroppingExporter(inner, url)
    else:
        out = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(out, export_timeout_millis=timeout * 1000))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def _endpoint(endpoint: str | None) -> str:
    if endpoint is None:
        return "http://127.0.0.1:4318/v1/traces"
    if not isinstance(endpoint, str):
        raise ConfigError("setup_tracing.endpoint", f"expected a URL string, got "
                          f"{type(endpoint).__name__}")
    try:
        parts = urlsplit(endpoint.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError("setup_tracing.endpoint", f"{endpoint!r} is not a valid URL "
                          f"({exc}); e.g. http://127.0.0.1:4318/v1/traces") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("setup_tracing.endpoint", f"{endpoint!r} is not an http(s) URL of "
                          "an OTLP/HTTP collector; e.g. http://127.0.0.1:4318/v1/traces (the "
                          "OTLP/gRPC port 4317 is not supported)")
    if port == 4317:
        raise ConfigError("setup_tracing.endpoint", f"{endpoint!r} is the OTLP/gRPC port; "
                          "keel sends OTLP over HTTP: use port 4318 (…/v1/traces)")
    path = parts.path if parts.path not in ("", "/") else "/v1/traces"
    return parts._replace(path=path).geturl()


def _otlp(url: str, headers: dict[str, str], timeout: float) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise UserError("setup_tracing('otlp') needs the OTLP exporter: pip install "
                        "'keel-agents[otel]'") from exc
    return OTLPSpanExporter(endpoint=url, headers=headers or None, timeout=timeout)


class _Hush(logging.Filter):
    """Drops the OTLP exporter's own failure messages: DroppingExporter says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.ERROR


class DroppingExporter:
    """Wraps an exporter so that a collector that is down costs one warning: the batch is
    dropped, and the next warning comes only after an export succeeded again. (A span
    exporter by its methods; the SDK is imported only when one is made.)"""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self.down = False
        self.dropped = 0
        self._lock = threading.Lock()
        otlp = logging.getLogger(_OTLP_LOGGER)
        if not any(isinstance(f, _Hush) for f in otlp.filters):
            otlp.addFilter(_Hush())

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter must never raise into the SDK's thread
            result, why = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        else:
            why = "the export failed"
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.down = False
                return result
            self.dropped += len(spans)
            first, self.down = not self.down, True
        if first:
            _log.warning("keel.observe: the trace collector at %s did not take %d spans (%s); "
                         "spans are dropped until it answers. Check that the collector runs "
                         "and listens there (setup_tracing(endpoint=...)).", self.where,
                         len(spans), why)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))
