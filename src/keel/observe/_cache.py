"""An exact-match cache of model responses, as middleware on the model seam.

:class:`ModelCache` answers a model request from the cache when the same model was asked the
same thing before: the same messages, the same tools and the same settings, for the same
tenant, within the entry's time to live. It caches only requests whose settings are
deterministic (``temperature=0``, or a ``seed`` in ``ModelSettings.extra``) unless built with
``always=True``.

A hit is still the model step of the run: the middleware runs inside the journal step, so
the cached response is journaled like any other (replay and resume read it back exactly and
never consult the cache). It is marked in ``ModelResponse.provider_details``:

* ``"cache": "hit"`` (or ``"miss"`` for a request the cache looked up and then stored,
  never set for a request it did not consider), ``"cache_kind": "exact"`` (or
  ``"semantic"``), ``"cache_age_s"``: how old the entry was, and ``"cache_saved"``: the
  usage of the original call (what the hit saved);
* its ``usage`` is zero (no request, no tokens, no cost), so a hit costs nothing in the run's
  budget or in the run record's usage totals.

Entries are JSON text with their own expiry and a bounded size (``max_entry_bytes``); an
entry that is too large, malformed or nested too deeply is a miss, never an error. Secrets in
a response's text and tool arguments are masked before the entry is written, as in the
journal. A cache store that fails (Redis down, SQLite locked) makes every lookup a miss with
one warning (logger ``keel.observe``); the run never fails because of its cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from keel.core import (
    ConfigError,
    Message,
    ModelResponse,
    ModelSettings,
    StoreError,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
    UserError,
    canonical_json,
    redact_text,
)
from keel.observe._cache_stores import CacheStore, MemoryCacheStore
from keel.runtime import Middleware, ModelNext, ModelRequestInput, RunEndInput, RunStartInput

_log = logging.getLogger("keel.observe")

#: ``tenant_of(inp) -> tenant id or None`` (None: the shared, tenant-less space).
TenantOf = Callable[[ModelRequestInput], "str | None"]
_MAX_TENANT = 256
_MAX_RUNS = 100_000
_VERSION = 1


def deterministic(settings: ModelSettings) -> bool:
    """Whether a request with ``settings`` is meant to give the same answer each time:
    ``temperature`` is 0, or ``extra`` holds a ``seed``."""
    return settings.temperature == 0 or settings.extra.get("seed") is not None


def _chunk(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def request_header(model: str, tools: Sequence[ToolSpec], settings: ModelSettings) -> str:
    """What besides the messages identifies a request: the model, the tools as the model sees
    them, and the settings that change the answer (not ``timeout``)."""
    return canonical_json([
        model, [[t.name, t.description, t.parameters] for t in tools],
        [settings.temperature, settings.max_tokens, settings.parallel_tool_calls,
         settings.extra]])


def _hasher(header: str) -> Any:
    h = hashlib.blake2b(digest_size=32, person=b"keel-cache-v1")
    _chunk(h, header)
    return h


def _feed(h: Any, messages: Sequence[Message]) -> None:
    """Every part of every message, each field length-prefixed, so no two requests share an
    encoding."""
    fields: list[str] = []
    for m in messages:
        fields.append(m.role)
        for p in m.parts:
            if type(p) is TextPart:
                fields += ("t", p.text)
            elif type(p) is ToolCallPart:
                fields += ("c", p.call_id, p.tool_name, p.arguments)
            else:
                fields += ("r", p.call_id, p.tool_name, p.content,  # type: ignore[union-attr]
                           "1" if p.is_error else "0")  # type: ignore[union-attr]
    if fields:
        h.update("".join(f"{len(f)}:{f}" for f in fields).encode("utf-8", "surrogatepass"))


def cache_key(header: str, messages: Sequence[Message]) -> str:
    """A 256-bit digest of a request: ``header`` (from :func:`request_header`), then the
    messages."""
    h = _hasher(header)
    _feed(h, messages)
    return str(h.hexdigest())


class _Prefixes:
    """The digest state of each run's conversation so far, so a turn hashes only the
    messages that are new since the last turn (a run's history only grows). A prefix is
    reused only when every message in it is the very same (immutable) object, so a list
    rebuilt or changed by another middleware is hashed again in full."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self.slots: dict[tuple[str, int], tuple[str, tuple[Message, ...], Any]] = {}

    def key(self, run_id: str, header: str, messages: Sequence[Message]) -> str:
        slot = (run_id, id(messages))
        state = self.slots.get(slot)
        if state is not None and state[0] == header and len(state[1]) <= len(messages) \
                and all(map(operator.is_, state[1], messages)):
            h = state[2].copy()
            _feed(h, messages[len(state[1]):])
        else:
            h = _hasher(header)
            _feed(h, messages)
        if len(self.slots) >= self.limit and slot not in self.slots:
            del self.slots[next(iter(self.slots))]
        self.slots[slot] = (header, tuple(messages), h)
        return str(h.hexdigest())

    def forget(self, run_id: str) -> None:
        for slot in [s for s in self.slots if s[0] == run_id]:
            del self.slots[slot]


def encode_entry(response: ModelResponse, *, now: float, ttl: float) -> str:
    """The stored form of a response: JSON text, secrets masked as in the journal."""
    data = response.to_dict()
    for part in data["parts"]:
        if "text" in part:
            part["text"] = redact_text(part["text"])
        elif "arguments" in part:
            part["arguments"] = redact_text(part["arguments"])
    details = data.get("provider_details")
    if isinstance(details, dict):  # a hit's own marks are not part of the answer
        data["provider_details"] = {k: v for k, v in details.items()
                                    if not k.startswith("cache")} or None
    return json.dumps({"v": _VERSION, "created_at": now, "expires_at": now + ttl,
                       "response": data}, ensure_ascii=False, separators=(",", ":"))


def decode_entry(text: str | None, *, now: float, max_bytes: int) -> tuple[ModelResponse,
                                                                          float] | None:
    """A stored entry's response and age, or None when it is absent, expired, too large or
    not an entry this version wrote (anything hostile or corrupt is a miss)."""
    if text is None or len(text) > max_bytes or len(text.encode("utf-8",
                                                                "surrogatepass")) > max_bytes:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        expires, created = float(data["expires_at"]), float(data["created_at"])
        if not (math.isfinite(expires) and math.isfinite(created)) or expires <= now:
            return None
        response = ModelResponse.from_dict(data["response"])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return response, max(0.0, now - created)


def mark_hit(response: ModelResponse, *, kind: str, age: float) -> ModelResponse:
    """``response`` as a cache hit: zero usage, marked for traces and stats."""
    details = dict(response.provider_details or {})
    details.update({"cache": "hit", "cache_kind": kind, "cache_age_s": round(age, 3),
                    "cache_saved": response.usage.to_dict()})
    return replace(response, usage=Usage(), provider_details=details)


def mark_miss(response: ModelResponse, *, kind: str) -> ModelResponse:
    details = dict(response.provider_details or {})
    details.update({"cache": "miss", "cache_kind": kind})
    return replace(response, provider_details=details)


def check_ttl(name: str, ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (
            0 < ttl < math.inf):
        raise ConfigError(name, f"must be a number of seconds > 0, not {ttl!r}")
    return float(ttl)


class TenantMap:
    """The tenant of each live run, from ``RunStartInput.tenant`` when the runtime sets it;
    :meth:`of` reads ``ModelRequestInput.tenant`` first (either field, once it exists)."""

    def __init__(self, tenant_of: TenantOf | None, part: str) -> None:
        if tenant_of is not None and not callable(tenant_of):
            raise ConfigError(f"{part}.tenant_of", "must be a function of a ModelRequestInput "
                                                   "returning a tenant id or None")
        self.tenant_of = tenant_of
        self.part = part
        self.runs: dict[str, str] = {}

    def start(self, inp: RunStartInput) -> None:
        tenant = getattr(inp, "tenant", None)
        if isinstance(tenant, str) and tenant:
            if len(self.runs) >= _MAX_RUNS:  # runs that never ended (a crash): forget
                del self.runs[next(iter(self.runs))]
            self.runs[inp.run_id] = tenant

    def end(self, inp: RunEndInput) -> None:
        self.runs.pop(inp.run_id, None)

    def of(self, inp: ModelRequestInput) -> str:
        if self.tenant_of is not None:
            tenant = self.tenant_of(inp)
        else:
            tenant = getattr(inp, "tenant", None) or self.runs.get(inp.run_id)
        if tenant is None:
            return ""
        if not isinstance(tenant, str) or len(tenant) > _MAX_TENANT:
            raise UserError(f"{self.part}.tenant_of returned {type(tenant).__name__} "
                            f"{str(tenant)[:40]!r}: a tenant id must be a string of at most "
                            f"{_MAX_TENANT} characters (or None)")
        return tenant


class ModelCache(Middleware):
    """Answer a repeated model request from the cache (see the module docstring).

    ``store``: a :class:`CacheStore` (default: a fresh in-memory store for this middleware;
    ``SQLiteCacheStore(path)`` or ``RedisCacheStore(url)`` to share entries across
    processes). ``ttl``: seconds an entry stays valid. ``always``: cache every request, not
    only those with deterministic settings. ``tenant_of(inp)``: the tenant whose space a
    request is looked up in (default: the run's tenant once the runtime carries one, else a
    shared space). ``max_entry_bytes``: larger responses are not cached. ``clock``: seconds
    since the epoch (tests pass their own).

    Place it in an agent's ``middleware``: it then sits inside the default retry and circuit
    breaker, so a hit costs only the breaker's check, and the output guards still screen a
    cached answer (they run after the model step, hit or not).
    """

    def __init__(self, store: CacheStore | None = None, *, ttl: float = 3600.0,
                 always: bool = False, tenant_of: TenantOf | None = None,
                 max_entry_bytes: int = 256 * 1024,
                 clock: Callable[[], float] = time.time) -> None:
        if store is not None and not isinstance(store, CacheStore):
            raise ConfigError("ModelCache.store", f"expected a CacheStore (get/set/clear), "
                                                  f"got {type(store).__name__}")
        if not isinstance(always, bool):
            raise ConfigError("ModelCache.always", "must be True or False")
        if isinstance(max_entry_bytes, bool) or not isinstance(max_entry_bytes, int) \
                or max_entry_bytes < 1024:
            raise ConfigError("ModelCache.max_entry_bytes", f"must be a whole number >= 1024, "
                                                            f"not {max_entry_bytes!r}")
        if not callable(clock):
            raise ConfigError("ModelCache.clock", "must be a function returning seconds")
        self.store: CacheStore = store if store is not None else MemoryCacheStore()
        self.ttl = check_ttl("ModelCache.ttl", ttl)
        self.always = always
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        self.tenants = TenantMap(tenant_of, "ModelCache")
        #: Counts since this middleware was made: hits, misses, stored, skipped (not
        #: deterministic), too_large, errors (the store failed).
        self.stats: dict[str, int] = dict.fromkeys(
            ("hits", "misses", "stored", "skipped", "too_large", "errors"), 0)
        self._warned = False
        self._prefixes = _Prefixes()
        self._header: tuple[str, object, object, str] | None = None

    def __repr__(self) -> str:
        return f"ModelCache({self.store!r}, ttl={self.ttl:g}, always={self.always})"

    async def on_run_start(self, inp: RunStartInput) -> None:
        self.tenants.start(inp)

    async def on_run_end(self, inp: RunEndInput) -> None:
        self.tenants.end(inp)
        self._prefixes.forget(inp.run_id)

    def _key(self, inp: ModelRequestInput) -> str:
        name, memo = inp.model.name, self._header
        if memo is not None and memo[0] == name and memo[1] is inp.tools \
                and memo[2] is inp.settings:
            header = memo[3]  # the agent's tools and settings: the same objects every turn
        else:
            header = request_header(name, inp.tools, inp.settings)
            self._header = (name, inp.tools, inp.settings, header)
        return self._prefixes.key(inp.run_id, header, inp.messages)

    def _failed(self, exc: StoreError) -> None:
        self.stats["errors"] += 1
        if not self._warned:
            self._warned = True
            _log.warning("model cache %r failed, answering from the model instead (warned "
                         "once): %s", self.store, exc)

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        if not (self.always or deterministic(inp.settings)):
            self.stats["skipped"] += 1
            return await next(inp)
        tenant = self.tenants.of(inp)
        key = self._key(inp)
        try:
            text = await self.store.get(tenant, key)
        except StoreError as exc:
            self._failed(exc)
            text = None
        found = decode_entry(text, now=self.clock(), max_bytes=self.max_entry_bytes)
        if found is not None:
            self.stats["hits"] += 1
            return mark_hit(found[0], kind="exact", age=found[1])
        self.stats["misses"] += 1
        response = await next(inp)
        entry = encode_entry(response, now=self.clock(), ttl=self.ttl)
        if len(entry.encode("utf-8", "surrogatepass")) > self.max_entry_bytes:
            self.stats["too_large"] += 1
        else:
            try:
                await self.store.set(tenant, key, entry, ttl=self.ttl)
                self.stats["stored"] += 1
            except StoreError as exc:
                self._failed(exc)
        return mark_miss(response, kind="exact")
