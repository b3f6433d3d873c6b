"""Counters, gauges and histograms cheap enough for every step.

prometheus_client's own instruments take a lock and check their state on every ``inc`` and
``observe`` (about 0.7 and 1.7 µs). In one process keel keeps its figures in plain slots
instead (one addition, or a bisect and an addition, on the event loop's thread) and hands
them to prometheus_client only when something scrapes, through one collector per registry.
In multi-process mode (``PROMETHEUS_MULTIPROC_DIR``) the values must live in
prometheus_client's shared files, so its own instruments are used there.

Concurrent writers on several threads may lose an increment (``+=`` is not atomic); keel
records from the event loop's thread, and a scrape only reads.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from keel.core import UserError


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket i: value <= bounds[i]
        self.sum += value


class _Family:
    """One metric's children by label values (``labels(*values)`` as prometheus_client)."""

    def __init__(self, kind: str, name: str, doc: str, labelnames: Sequence[str],
                 buckets: Sequence[float] = ()) -> None:
        self.kind, self.name, self.doc = kind, name, doc
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise UserError(f"{self.name} takes labels {self.labelnames}")
            with self._lock:
                child = self.children.get(values)
                if child is None:
                    child = _Buckets(self.bounds) if self.kind == "histogram" else _Value()
                    self.children[values] = child
        return child

    def family(self) -> Any:
        names = list(self.labelnames)
        if self.kind == "counter":
            out: Any = CounterMetricFamily(self.name, self.doc, labels=names)
        elif self.kind == "gauge":
            out = GaugeMetricFamily(self.name, self.doc, labels=names)
        else:
            out = HistogramMetricFamily(self.name, self.doc, labels=names)
        for values, child in list(self.children.items()):
            if self.kind == "histogram":
                total, cumulative = 0, []
                for bound, count in zip((*self.bounds, float("inf")), child.counts,
                                        strict=True):
                    total += count
                    cumulative.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
                out.add_metric(list(values), cumulative, child.sum)
            else:
                out.add_metric(list(values), child.value)
        return out


class _Collector:
    def __init__(self) -> None:
        self.families: list[_Family] = []

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        for family in self.families:
            yield family.family()


class Factory:
    """Makes the instruments of a registry: plain slots (``fast``) or prometheus_client's."""

    def __init__(self, registry: CollectorRegistry, *, fast: bool) -> None:
        self.registry = registry
        self.fast = fast
        self._collector = _Collector()
        if fast:
            registry.register(self._collector)

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> Any:
        if not self.fast:
            return Counter(name, doc, labels, registry=self.registry)
        return self._add(_Family("counter", name, doc, labels))

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> Any:
        if not self.fast:
            return Gauge(name, doc, labels, registry=self.registry, multiprocess_mode="livemax")
        return self._add(_Family("gauge", name, doc, labels))

    def histogram(self, name: str, doc: str, labels: Sequence[str],
                  buckets: Sequence[float]) -> Any:
        if not self.fast:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)
        return self._add(_Family("histogram", name, doc, labels, buckets))

    def _add(self, family: _Family) -> _Family:
        self._collector.families.append(family)
        return family

    def with_opentelemetry(self, meter: Any, instruments: Any) -> None:
        """Make every family of ``instruments`` also record into ``meter``'s instruments."""
        if not self.fast:
            from keel.core import ConfigError

            raise ConfigError("OpenTelemetry metrics", "are not available in prometheus "
                              "multi-process mode (PROMETHEUS_MULTIPROC_DIR is set)")
        families = self._collector.families
        for i, family in enumerate(families):
            if isinstance(family, _OtelFamily):
                continue
            tee = _OtelFamily(family, meter)
            families[i] = tee
            for attr, value in vars(instruments).items():
                if value is family:
                    setattr(instruments, attr, tee)


# ------------------------------------------------------------------- OpenTelemetry


class _TeeValue(_Value):
    """A counter or gauge that also records into an OpenTelemetry instrument."""

    __slots__ = ("attrs", "otel")

    def __init__(self, otel: Any, attrs: dict[str, str]) -> None:
        super().__init__()
        self.otel, self.attrs = otel, attrs

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount
        self.otel.add(amount, self.attrs)

    def set(self, value: float) -> None:
        self.value = float(value)
        self.otel.set(self.value, self.attrs)


class _TeeBuckets(_Buckets):
    __slots__ = ("attrs", "otel")

    def __init__(self, bounds: tuple[float, ...], otel: Any, attrs: dict[str, str]) -> None:
        super().__init__(bounds)
        self.otel, self.attrs = otel, attrs

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.otel.record(value, self.attrs)


class _OtelFamily(_Family):
    """A family whose new children also record into an OpenTelemetry instrument."""

    def __init__(self, base: _Family, meter: Any) -> None:
        super().__init__(base.kind, base.name, base.doc, base.labelnames, base.bounds)
        self.children = base.children  # what was recorded before stays
        name = "keel." + base.name.removeprefix("keel_")
        unit = "s" if name.endswith("_seconds") else "USD" if name.endswith("_usd") else "1"
        if base.kind == "counter":
            self.otel = meter.create_counter(name, unit=unit, description=base.doc)
        elif base.kind == "gauge":
            self.otel = meter.create_gauge(name, unit=unit, description=base.doc)
        else:
            self.otel = meter.create_histogram(
                name, unit=unit, description=base.doc,
                explicit_bucket_boundaries_advisory=list(base.bounds))

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None or not isinstance(child, _TeeValue | _TeeBuckets):
            if len(values) != len(self.labelnames):
                raise UserError(f"{self.name} takes labels {self.labelnames}")
            attrs = dict(zip(self.labelnames, values, strict=True))
            with self._lock:
                old = self.children.get(values)
                if self.kind == "histogram":
                    child = _TeeBuckets(self.bounds, self.otel, attrs)
                    if old is not None:
                        child.counts, child.sum = old.counts, old.sum
                else:
                    child = _TeeValue(self.otel, attrs)
                    if old is not None:
                        child.value = old.value
                self.children[values] = child
        return child
