"""An opt-in semantic cache for single-turn questions: a new question whose embedding is close
enough to one already answered gets that answer.

Only a *single-turn* request is considered: system messages and exactly one user message, no
earlier answers or tool results. Everything else must match exactly (the model, the tools,
the settings, the system messages, the tenant); only the user's text is compared by meaning,
by the cosine similarity of its embedding (WordLlama, shipped with the ``embed`` extra, by
default; any :class:`~keel.models.Embedder`), after lower-casing it and keeping its words.
Two more rules keep a near miss from answering the wrong question: the numbers in both
questions must be the same (``order 42`` is not ``order 43``, however close the sentences),
and only a text answer is stored, never a tool call (whose arguments came from the question).

A hit is marked as the exact cache marks it (``provider_details["cache"] == "hit"``,
``"cache_kind": "semantic"``, plus ``"cache_similarity"``), with zero usage, and journaled
as the run's model step. Entries live in this process, per tenant and request context, up
to ``max_entries`` in all (oldest dropped first), each for ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.core import ConfigError, Message, ModelResponse, UserError, redact_text
from keel.models import Embedder, WordLlamaEmbedder
from keel.observe._cache import (
    TenantMap,
    TenantOf,
    check_ttl,
    mark_hit,
    mark_miss,
    request_header,
)
from keel.runtime import Middleware, ModelNext, ModelRequestInput, RunEndInput, RunStartInput

_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
_WORDS = re.compile(r"\w+")


def _normal(text: str) -> str:
    """The question as compared: lower case, its words only (case and punctuation do not
    move WordLlama's vectors in a useful direction)."""
    return " ".join(_WORDS.findall(text.lower()))


def single_turn_question(messages: list[Message] | tuple[Message, ...] | Any) -> str | None:
    """The user's text when ``messages`` are system messages and one user message (text
    only), else None."""
    question: str | None = None
    for m in messages:
        if m.role == "system":
            continue
        if m.role != "user" or question is not None or m.tool_results or m.tool_calls:
            return None
        question = m.text
    return question


@dataclass(slots=True)
class _Entry:
    vector: Any
    numbers: tuple[str, ...]
    response: ModelResponse
    created_at: float
    expires_at: float


class _Bucket:
    """The entries of one tenant and request context, their vectors and expiry times in
    arrays that grow by doubling, so a lookup is one matrix product over the bucket."""

    __slots__ = ("entries", "expires", "kinds", "n", "numbers", "vectors")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.vectors: Any = None
        self.expires: Any = None
        self.numbers: Any = None  # per entry, the id of its numbers (in ``kinds``)
        self.kinds: dict[tuple[str, ...], int] = {}
        self.n = 0

    def add(self, entry: _Entry) -> None:
        import numpy as np

        if self.vectors is not None and self.vectors.shape[1] != entry.vector.shape[0]:
            raise UserError(f"the embedder's vectors changed width ({self.vectors.shape[1]} "
                            f"then {entry.vector.shape[0]}); an Embedder must return one "
                            "fixed width")
        if self.vectors is None or self.n == len(self.vectors):
            cap = max(8, 2 * self.n)
            vectors = np.zeros((cap, entry.vector.shape[0]), dtype=np.float32)
            expires = np.full(cap, -np.inf)
            numbers = np.full(cap, -1, dtype=np.int64)
            if self.n:
                vectors[:self.n] = self.vectors[:self.n]
                expires[:self.n] = self.expires[:self.n]
                numbers[:self.n] = self.numbers[:self.n]
            self.vectors, self.expires, self.numbers = vectors, expires, numbers
        self.vectors[self.n] = entry.vector
        self.expires[self.n] = entry.expires_at
        self.numbers[self.n] = self.kinds.setdefault(entry.numbers, len(self.kinds))
        self.entries.append(entry)
        self.n += 1

    def keep(self, index: Any) -> int:
        """Keep only the entries at ``index`` (in order); returns how many were dropped."""
        dropped = self.n - len(index)
        if dropped:
            self.entries = [self.entries[i] for i in index.tolist()]
            self.vectors[:len(index)] = self.vectors[index]
            self.expires[:len(index)] = self.expires[index]
            self.numbers[:len(index)] = self.numbers[index]
            self.n = len(index)
        return dropped

    def purge(self, now: float) -> int:
        import numpy as np

        if self.n == 0:
            return 0
        return self.keep(np.nonzero(self.expires[:self.n] > now)[0])

    def drop_oldest(self, k: int) -> int:
        import numpy as np

        return self.keep(np.arange(min(k, self.n), self.n))

    def best(self, vector: Any, threshold: float, numbers: tuple[str, ...],
             now: float) -> tuple[_Entry, float] | None:
        import numpy as np

        if self.n == 0:
            return None
        if self.vectors.shape[1] != vector.shape[0]:
            raise UserError(f"the embedder's vectors changed width ({self.vectors.shape[1]} "
                            f"then {vector.shape[0]}); an Embedder must return one fixed width")
        kind = self.kinds.get(numbers)
        if kind is None:  # no entry has these numbers
            return None
        n = self.n
        scores = self.vectors[:n] @ vector
        scores[(self.numbers[:n] != kind) | (self.expires[:n] <= now)] = -np.inf
        i = int(np.argmax(scores))
        if not scores[i] >= threshold:
            return None
        return self.entries[i], float(scores[i])


class SemanticCache(Middleware):
    """Answer a single-turn question from a similar one answered before (see the module
    docstring). ``threshold``: the cosine similarity a hit needs (0 < threshold <= 1; 0.95
    by default, high on purpose). ``embedder``: any Embedder (default: WordLlama, loaded
    from the installed package on first use, never downloaded). ``max_question_chars``:
    longer questions are not cached, nor longer answers than ``max_answer_chars``. Opt-in:
    it is not part of :func:`keel.defaults`."""

    def __init__(self, threshold: float = 0.95, *, embedder: Embedder | None = None,
                 ttl: float = 3600.0, max_entries: int = 10_000,
                 max_question_chars: int = 2_000, max_answer_chars: int = 100_000,
                 tenant_of: TenantOf | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
                0 < threshold <= 1):
            raise ConfigError("SemanticCache.threshold", f"must be in (0, 1], not "
                                                         f"{threshold!r}")
        if embedder is not None and not isinstance(embedder, Embedder):
            raise ConfigError("SemanticCache.embedder", f"expected an Embedder (a method "
                                                        f"embed(texts)), got "
                                                        f"{type(embedder).__name__}")
        for name, value in (("max_entries", max_entries),
                            ("max_question_chars", max_question_chars),
                            ("max_answer_chars", max_answer_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SemanticCache.{name}", f"must be a whole number >= 1, "
                                                           f"not {value!r}")
        self.threshold = float(threshold)
        self.embedder: Embedder = embedder if embedder is not None else WordLlamaEmbedder()
        self.ttl = check_ttl("SemanticCache.ttl", ttl)
        self.max_entries = max_entries
        self.max_question_chars = max_question_chars
        self.max_answer_chars = max_answer_chars
        self.clock = clock
        self.tenants = TenantMap(tenant_of, "SemanticCache")
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._size = 0
        self.stats: dict[str, int] = dict.fromkeys(("hits", "misses", "stored", "skipped"), 0)

    def __repr__(self) -> str:
        return f"SemanticCache(threshold={self.threshold:g}, embedder={self.embedder!r})"

    async def on_run_start(self, inp: RunStartInput) -> None:
        self.tenants.start(inp)

    async def on_run_end(self, inp: RunEndInput) -> None:
        self.tenants.end(inp)

    def _vector(self, text: str) -> Any:
        import numpy as np

        out = np.asarray(self.embedder.embed([text]), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != 1 or not np.isfinite(out).all():
            raise UserError(f"embedder {self.embedder!r} returned shape {out.shape} (or "
                            "non-finite values) for one text; it must return one finite row")
        row = out[0]
        norm = float(np.linalg.norm(row))
        return (row / norm if norm > 0 else row).astype(np.float32)

    def _bucket(self, inp: ModelRequestInput) -> tuple[str, str]:
        system = [m.text for m in inp.messages if m.role == "system"]
        header = request_header(inp.model.name, inp.tools, inp.settings)
        digest = hashlib.blake2b(f"{header}\x00{system!r}".encode("utf-8", "surrogatepass"),
                                 digest_size=24).hexdigest()
        return self.tenants.of(inp), digest

    def _lookup(self, bucket: tuple[str, str], vector: Any, numbers: tuple[str, ...],
                now: float) -> tuple[_Entry, float] | None:
        found = self._buckets.get(bucket)
        return None if found is None else found.best(vector, self.threshold, numbers, now)

    def _store(self, bucket: tuple[str, str], entry: _Entry, now: float) -> None:
        found = self._buckets.get(bucket)
        if found is None:
            found = self._buckets[bucket] = _Bucket()
        self._size -= found.purge(now)
        found.add(entry)
        self._buckets.move_to_end(bucket)
        self._size += 1
        if self._size > self.max_entries:  # down to 90% at once, oldest contexts first
            target = self.max_entries - self.max_entries // 10
            while self._size > target and self._buckets:
                oldest_key = next(iter(self._buckets))
                oldest = self._buckets[oldest_key]
                self._size -= oldest.drop_oldest(self._size - target)
                if oldest.n == 0:
                    del self._buckets[oldest_key]

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        question = single_turn_question(inp.messages)
        if question is None or not question.strip() or len(question) > \
                self.max_question_chars:
            self.stats["skipped"] += 1
            return await next(inp)
        bucket = self._bucket(inp)
        vector = self._vector(_normal(question))
        numbers = tuple(_NUMBERS.findall(question))
        now = self.clock()
        found = self._lookup(bucket, vector, numbers, now)
        if found is not None:
            self.stats["hits"] += 1
            entry, score = found
            hit = mark_hit(entry.response, kind="semantic", age=now - entry.created_at)
            assert hit.provider_details is not None
            hit.provider_details["cache_similarity"] = round(score, 4)
            return hit
        self.stats["misses"] += 1
        response = await next(inp)
        if not response.tool_calls and response.text and len(response.text) <= \
                self.max_answer_chars:
            masked = ModelResponse.from_dict(_masked(response.to_dict()))
            self._store(bucket, _Entry(vector=vector, numbers=numbers, response=masked,
                                       created_at=now, expires_at=now + self.ttl), now)
            self.stats["stored"] += 1
        return mark_miss(response, kind="semantic")


def _masked(data: dict[str, Any]) -> dict[str, Any]:
    for part in data["parts"]:
        if "text" in part:
            part["text"] = redact_text(part["text"])
    details = data.get("provider_details")
    if isinstance(details, dict):
        data["provider_details"] = {k: v for k, v in details.items()
                                    if not k.startswith("cache")} or None
    return data
