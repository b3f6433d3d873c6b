"""``open_bus(url)``: an event bus from a URL.

* ``memory://`` - a :class:`MemoryBus` (one process);
* ``redis://host:port/db?stream=keel:events&maxlen=1000000`` (also ``rediss://``) - a
  :class:`RedisBus`; any other query parameter goes to redis-py as it is;
* ``nats://host:port?stream=KEEL_EVENTS&prefix=keel.events`` (also ``tls://``) - a
  :class:`NatsBus`.

``max_event_bytes`` may be given for each. No connection opens until the bus is used (or
entered with ``async with``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keel.core import ConfigError
from keel.events._bus import EventBus, MemoryBus
from keel.events._nats import NatsBus
from keel.events._redis import RedisBus

_EXAMPLES = ("memory://, redis://127.0.0.1:6379/0?stream=keel:events or "
             "nats://127.0.0.1:4222?stream=KEEL_EVENTS")


def _whole(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 12:
        raise ConfigError(name, f"must be a whole number, not {value[:40]!r}")
    return int(value)


def _split(url: str) -> tuple[Any, list[tuple[str, str]]]:
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise ConfigError("url", f"an event bus URL is a string such as {_EXAMPLES}, not "
                          f"{str(url)[:80]!r}")
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        _ = parts.port  # raises for a port that is not a number
    except ValueError as exc:
        raise ConfigError("url", f"{url[:80]!r} is not a valid URL ({exc}); use {_EXAMPLES}") \
            from None
    return parts, query


def open_bus(url: str, *, max_event_bytes: int | None = None) -> EventBus:
    """An event bus for ``url`` (see the module docstring). ConfigError names the fix for a
    URL that is not one; a UserError names the extra to install when its client is missing."""
    parts, query = _split(url)
    limit: dict[str, Any] = {} if max_event_bytes is None else \
        {"max_event_bytes": max_event_bytes}
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or query:
            raise ConfigError("url", f"the memory bus takes no host or options: use memory://, "
                              f"not {url[:80]!r}")
        return MemoryBus(**limit)
    if scheme in ("redis", "rediss"):
        options: dict[str, Any] = dict(limit)
        rest: list[tuple[str, str]] = []
        for key, value in query:
            if key == "stream":
                options["stream"] = value
            elif key == "maxlen":
                options["maxlen"] = None if value in ("", "none") else _whole("maxlen", value)
            else:
                rest.append((key, value))
        if not parts.hostname:
            raise ConfigError("url", f"a Redis URL names a host: redis://HOST:PORT/DB, not "
                              f"{url[:80]!r}")
        return RedisBus(urlunsplit(parts._replace(query=urlencode(rest))), **options)
    if scheme in ("nats", "tls"):
        options = dict(limit)
        for key, value in query:
            if key not in ("stream", "prefix"):
                raise ConfigError("url", f"a NATS bus URL takes ?stream= and ?prefix=, not "
                                  f"{key[:40]!r}")
            options[key] = value
        if not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError("url", f"a NATS URL is nats://HOST:PORT, not {url[:80]!r}")
        return NatsBus(urlunsplit(parts._replace(query="", path="")), **options)
    raise ConfigError("url", f"no event bus for the scheme {parts.scheme[:20]!r} in "
                      f"{url[:80]!r}; use {_EXAMPLES}")
