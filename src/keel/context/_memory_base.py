"""Long-term memory: the record (:class:`MemoryItem`), the ranking formula (:class:`Ranking`)
and the backend seam (:class:`MemoryBackend`).

A memory belongs to one user of one tenant. Every public method of a backend takes
``tenant=`` and ``user=`` and every query a backend runs filters on both in the query itself:
nothing crosses users or tenants by accident. A run without a tenant keeps its memories under
the empty tenant (a tenant id is never empty, so the two never meet).

A backend embeds text with an :class:`keel.models.Embedder` (WordLlama by default, offline)
and stores each vector with its item. The first time it is opened it records the embedder's
name and the vector width; opened later with an embedder of another width or name it refuses
(a :class:`keel.StoreError` saying so) unless ``reembed=True``, which re-embeds every stored
item with the new embedder first. Scores are never computed between vectors of two models.

Ranking (:class:`Ranking`), for the items of the user that have not expired::

    score = w_sim * max(0, cosine(query, item))
          + w_rec * 0.5 ** (age / half_life)        # age: now - updated_at, in seconds
          + w_imp * importance                      # 0..1, given when remembered

with the defaults ``w_sim=0.7, w_rec=0.15, w_imp=0.15, half_life=30 days`` (the three-part
score of Park et al., "Generative Agents", 2023, weighted towards relevance). Items whose
cosine is below ``min_similarity`` (default -1: none) are not returned at all.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

from keel.core import ConfigError, StoreError, UserError
from keel.models import Embedder
from keel.store import MAX_ID_CHARS, check_id

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
    Floats = npt.NDArray[np.float64]

MemoryKind = Literal["fact", "episode"]
KINDS: tuple[str, ...] = get_args(MemoryKind)
#: The longest memory text (characters) a backend takes unless given ``max_chars=``.
MAX_TEXT_CHARS = 4_000
#: The most items one search returns.
MAX_K = 100
#: The version of the memory tables' layout, stored with them.
MEMORY_SCHEMA_VERSION = 1
#: The stored tenant of a run that has none.
NO_TENANT = ""

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryItem:
    """One remembered thing: a ``fact`` (a lasting statement about the user) or an
    ``episode`` (what happened in a run). Times are epoch seconds of the backend's clock;
    ``expires_at`` is None for an item without a TTL."""

    id: str
    tenant: str | None
    user: str
    kind: MemoryKind
    text: str
    importance: float
    created_at: float
    updated_at: float
    expires_at: float | None = None
    source_run: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryHit:
    """A search result: the item, its score and the two parts of it that depend on the
    query and the time (cosine ``similarity``, ``recency`` in 0..1)."""

    item: MemoryItem
    score: float
    similarity: float
    recency: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranking:
    """How search results are scored (see the module docstring for the formula)."""

    similarity: float = 0.7
    recency: float = 0.15
    importance: float = 0.15
    half_life: float = 30 * 86_400.0
    min_similarity: float = -1.0

    def __post_init__(self) -> None:
        for name in ("similarity", "recency", "importance"):
            value = getattr(self, name)
            if not _real(value) or value < 0:
                raise ConfigError(f"Ranking.{name}", f"must be a weight >= 0, not {value!r}")
        if self.similarity + self.recency + self.importance <= 0:
            raise ConfigError("Ranking", "at least one weight must be above 0")
        if not _real(self.half_life) or self.half_life <= 0:
            raise ConfigError("Ranking.half_life", f"must be seconds > 0, not "
                                                   f"{self.half_life!r}")
        if not _real(self.min_similarity) or not -1 <= self.min_similarity <= 1:
            raise ConfigError("Ranking.min_similarity", f"must be a cosine in -1..1, not "
                                                        f"{self.min_similarity!r}")

    def score(self, sims: Floats, updated: Floats, importance: Floats,
              now: float) -> tuple[Floats, Floats]:
        """(scores, recency) for candidates with cosines ``sims``, update times
        ``updated`` and importances ``importance`` at time ``now``."""
        import numpy as np

        age = np.maximum(now - updated, 0.0)
        recency = np.power(0.5, age / self.half_life)
        scores = (self.similarity * np.maximum(sims, 0.0) + self.recency * recency
                  + self.importance * importance)
        return scores, recency


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    """What a backend's ``_similarities`` returns: the ids of the user's live items (of the
    kinds asked for) with their cosine to the query, update times and importances."""

    ids: Sequence[str]
    sims: Floats
    updated: Floats
    importance: Floats


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def memory_id(*parts: str) -> str:
    """A stable item id derived from ``parts`` (e.g. a run's idempotency key)."""
    return "m-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:30]


# --------------------------------------------------------------------------- validation


def check_tenant(tenant: object) -> str:
    """The stored tenant: ``tenant`` checked (None is the empty tenant)."""
    return NO_TENANT if tenant is None else check_id("tenant", tenant)


def check_user(user: object) -> str:
    if user is None:
        raise UserError("user= is required: memories belong to a user (a run started with "
                        "run(..., user='alice') has one).")
    return check_id("user", user)


def check_text(text: object, max_chars: int, what: str = "text") -> str:
    if not isinstance(text, str):
        raise UserError(f"{what}= must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise UserError(f"{what}= is empty; there is nothing to remember or look up.")
    if len(text) > max_chars:
        raise UserError(f"{what}= is {len(text):,} characters long; at most {max_chars:,} "
                        "(remember a short statement, or raise max_chars=).")
    if "\x00" in text:
        raise UserError(f"{what}= holds a NUL character.")
    return text


def check_importance(value: object) -> float:
    if not _real(value) or not 0 <= float(value) <= 1:  # type: ignore[arg-type]
        raise UserError(f"importance= must be a number from 0 to 1, not {value!r}.")
    return float(value)  # type: ignore[arg-type]


def check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if not _real(ttl) or float(ttl) <= 0:  # type: ignore[arg-type]
        raise UserError(f"ttl= must be seconds > 0 (or None: no expiry), not {ttl!r}.")
    return float(ttl)  # type: ignore[arg-type]


def check_kind(kind: object) -> MemoryKind:
    if kind not in KINDS:
        raise UserError(f"kind= must be one of {', '.join(map(repr, KINDS))}, not {kind!r}.")
    return kind  # type: ignore[return-value]


def check_kinds(kinds: Collection[str] | None) -> tuple[MemoryKind, ...] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = (kinds,)
    return tuple(sorted({check_kind(k) for k in kinds}))


def check_k(k: object) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise UserError(f"k= must be a whole number from 1 to {MAX_K}, not {k!r}.")
    return k


def check_item_id(item_id: object) -> str:
    if not isinstance(item_id, str) or not item_id or len(item_id) > MAX_ID_CHARS \
            or not item_id.isprintable():
        raise UserError(f"a memory id is a printable string of 1 to {MAX_ID_CHARS} "
                        f"characters, not {item_id!r:.80}.")
    return item_id


def embedder_name(embedder: Embedder) -> str:
    """What a backend records of the embedder: its ``name`` attribute, or its class."""
    name = getattr(embedder, "name", None)
    if isinstance(name, str) and name:
        return name
    kind = type(embedder)
    return f"{kind.__module__}.{kind.__qualname__}"


# ------------------------------------------------------------------------------ the seam


class MemoryBackend(ABC):
    """Where memories live. The public methods (``remember``, ``update``, ``forget``,
    ``forget_user``, ``get``, ``items``, ``search``, ``purge_expired``, ``close``) validate,
    embed and rank here, once for every backend; a backend implements the storage
    primitives (the ``_``-methods), each filtering on tenant and user in its own query.

    ``embedder`` defaults to :class:`keel.models.WordLlamaEmbedder`; ``clock`` (epoch
    seconds) decides TTL expiry and recency, injectable for tests; ``ranking`` weighs the
    search score. Use ``async with`` or call :meth:`close`; a closed backend refuses every
    call with a :class:`keel.StoreError`."""

    def __init__(self, *, embedder: Embedder | None = None, clock: Clock = time.time,
                 ranking: Ranking | None = None, reembed: bool = False,
                 max_chars: int = MAX_TEXT_CHARS) -> None:
        if embedder is None:
            from keel.models import WordLlamaEmbedder

            embedder = WordLlamaEmbedder()
        if not isinstance(embedder, Embedder):
            raise ConfigError("embedder", f"must have embed(texts) -> vectors, not "
                                          f"{type(embedder).__name__}")
        if not callable(clock):
            raise ConfigError("clock", "must be a function returning epoch seconds")
        if ranking is not None and not isinstance(ranking, Ranking):
            raise ConfigError("ranking", f"must be a keel.context.Ranking, not "
                                         f"{type(ranking).__name__}")
        if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 1:
            raise ConfigError("max_chars", f"must be a whole number > 0, not {max_chars!r}")
        self.embedder = embedder
        self.clock = clock
        self.ranking = ranking or Ranking()
        self.reembed = reembed
        self.max_chars = max_chars
        self.dim: int | None = None
        self._opened = False
        self._closed = False

    # ---- the storage primitives a backend implements

    @abstractmethod
    async def _open(self) -> tuple[str, int] | None:
        """Create what is missing; the stored (embedder name, dim), None when new."""

    @abstractmethod
    async def _set_meta(self, name: str, dim: int) -> None: ...

    @abstractmethod
    async def _insert(self, item: MemoryItem, vector: Vectors) -> MemoryItem:
        """Store ``item``; if the user already has an item with its id, return that one."""

    @abstractmethod
    async def _get(self, tenant: str, user: str, item_id: str) -> MemoryItem | None: ...

    @abstractmethod
    async def _replace(self, item: MemoryItem, vector: Vectors | None) -> None:
        """Overwrite the user's item ``item.id`` (and its vector unless None)."""

    @abstractmethod
    async def _delete(self, tenant: str, user: str, item_id: str | None) -> int:
        """Delete one item of the user (``item_id``) or all of them (None); the count."""

    @abstractmethod
    async def _list(self, tenant: str, user: str, now: float | None) -> list[MemoryItem]:
        """The user's items, oldest first; only live ones at ``now`` unless it is None."""

    @abstractmethod
    async def _similarities(self, tenant: str, user: str, query: Vectors, now: float,
                            kinds: tuple[str, ...] | None) -> Candidates: ...

    @abstractmethod
    async def _fetch(self, tenant: str, user: str, ids: Sequence[str]) -> list[MemoryItem]:
        """The user's items with these ids (any order)."""

    @abstractmethod
    async def _all_texts(self) -> list[tuple[str, str, str, str]]:
        """(tenant, user, id, text) of every stored item, for a re-embed."""

    @abstractmethod
    async def _set_vectors(self, rows: Sequence[tuple[str, str, str]],
                           vectors: Vectors) -> None:
        """Give the items (tenant, user, id) these vectors, in order."""

    @abstractmethod
    async def _purge(self, now: float) -> int: ...

    @abstractmethod
    async def _close(self) -> None: ...

    # ---- the public API, the same for every backend

    async def open(self) -> Self:
        """Open (create what is missing) and check the stored embedder; idempotent."""
        self._check_open()
        if self._opened:
            return self
        try:
            await self._check_embedder(await self._open())
        except BaseException:
            await self._close()  # nothing is left open by a refused open
            raise
        self._opened = True
        return self

    async def _check_embedder(self, stored: tuple[str, int] | None) -> None:
        name = embedder_name(self.embedder)
        dim = self._embed(["dimension probe"], check_dim=False).shape[1]
        if stored is None:
            await self._set_meta(name, dim)
        elif stored != (name, dim):
            if not self.reembed:
                raise StoreError(
                    f"this memory store was embedded with {stored[0]} ({stored[1]} "
                    f"dimensions), not {name} ({dim} dimensions): scores between the two "
                    "would be wrong. Use the same embedder, or open it with reembed=True "
                    "to re-embed every stored item with the new one.")
            self.dim = dim
            await self._reembed()
            await self._set_meta(name, dim)
        self.dim = dim

    async def _reembed(self) -> None:
        rows = await self._all_texts()
        for start in range(0, len(rows), 512):
            chunk = rows[start:start + 512]
            vectors = self._embed([r[3] for r in chunk])
            await self._set_vectors([(t, u, i) for t, u, i, _ in chunk], vectors)

    async def remember(self, text: str, *, user: str, tenant: str | None = None,
                       kind: MemoryKind = "fact", importance: float = 0.5,
                       ttl: float | None = None, source_run: str | None = None,
                       item_id: str | None = None) -> MemoryItem:
        """Store ``text`` for the user; returns the item. ``ttl`` (seconds) makes it expire.
        ``item_id`` makes the call idempotent: remembering the same id again returns the
        item already stored (the ``remember`` tool passes one derived from the call)."""
        check_tenant(tenant)
        u = check_user(user)
        text = check_text(text, self.max_chars)
        kind = check_kind(kind)
        importance, ttl = check_importance(importance), check_ttl(ttl)
        if source_run is not None:
            check_item_id(source_run)
        item_id = "m-" + uuid.uuid4().hex if item_id is None else check_item_id(item_id)
        await self.open()
        now = self.clock()
        item = MemoryItem(id=item_id, tenant=tenant, user=u, kind=kind, text=text,
                          importance=importance, created_at=now, updated_at=now,
                          expires_at=None if ttl is None else now + ttl,
                          source_run=source_run)
        return await self._insert(item, self._embed([text]))

    async def update(self, item_id: str, *, user: str, tenant: str | None = None,
                     text: str | None = None, importance: float | None = None,
                     ttl: float | EllipsisType | None = ...) -> MemoryItem:
        """Change the user's item: its text (re-embedded), importance or TTL (seconds from
        now; None removes the expiry; left out: unchanged). Raises :class:`keel.StoreError`
        if the user has no such live item."""
        t, u = check_tenant(tenant), check_user(user)
        item_id = check_item_id(item_id)
        new_text = None if text is None else check_text(text, self.max_chars)
        new_importance = None if importance is None else check_importance(importance)
        new_ttl = ttl if isinstance(ttl, EllipsisType) else check_ttl(ttl)
        await self.open()
        now = self.clock()
        item = await self._get(t, u, item_id)
        if item is None or (item.expires_at is not None and item.expires_at <= now):
            raise StoreError(f"no memory {item_id!r} for this user (it was forgotten, has "
                             "expired or never existed).")
        changes: dict[str, Any] = {"updated_at": now}
        if new_text is not None:
            changes["text"] = new_text
        if new_importance is not None:
            changes["importance"] = new_importance
        if not isinstance(new_ttl, EllipsisType):
            changes["expires_at"] = None if new_ttl is None else now + new_ttl
        updated = replace(item, **changes)
        await self._replace(updated, None if new_text is None else self._embed([new_text]))
        return updated

    async def forget(self, item_id: str, *, user: str, tenant: str | None = None) -> bool:
        """Delete the user's item ``item_id`` (its row, not a mark); whether there was one."""
        t, u = check_tenant(tenant), check_user(user)
        item_id = check_item_id(item_id)
        await self.open()
        return await self._delete(t, u, item_id) > 0

    async def forget_user(self, *, user: str, tenant: str | None = None) -> int:
        """Delete every item of the user (a data-protection request); how many there were."""
        t, u = check_tenant(tenant), check_user(user)
        await self.open()
        return await self._delete(t, u, None)

    async def get(self, item_id: str, *, user: str,
                  tenant: str | None = None) -> MemoryItem | None:
        """The user's live item ``item_id``, or None."""
        t, u = check_tenant(tenant), check_user(user)
        item_id = check_item_id(item_id)
        await self.open()
        item = await self._get(t, u, item_id)
        if item is None or (item.expires_at is not None and item.expires_at <= self.clock()):
            return None
        return item

    async def items(self, *, user: str, tenant: str | None = None,
                    include_expired: bool = False) -> list[MemoryItem]:
        """The user's items, oldest first (live ones unless ``include_expired``)."""
        t, u = check_tenant(tenant), check_user(user)
        await self.open()
        return await self._list(t, u, None if include_expired else self.clock())

    async def search(self, query: str, *, user: str, tenant: str | None = None, k: int = 5,
                     kinds: Collection[MemoryKind] | None = None) -> list[MemoryHit]:
        """The user's ``k`` best live items for ``query``, best first (see :class:`Ranking`).
        An empty list when the user (or tenant) has none."""
        t, u = check_tenant(tenant), check_user(user)
        query = check_text(query, self.max_chars, "query")
        k, wanted = check_k(k), check_kinds(kinds)
        await self.open()
        import numpy as np

        now = self.clock()
        found = await self._similarities(t, u, self._embed([query])[0], now, wanted)
        if not len(found.ids):
            return []
        sims = np.nan_to_num(found.sims, nan=0.0)
        scores, recency = self.ranking.score(sims, found.updated, found.importance, now)
        keep = np.flatnonzero(sims >= self.ranking.min_similarity)
        if len(keep) > k:  # the k best in O(n), then only those sorted
            keep = keep[np.argpartition(-scores[keep], k - 1)[:k]]
        order = keep[np.argsort(-scores[keep], kind="stable")]
        chosen = [found.ids[i] for i in order]
        by_id = {item.id: item for item in await self._fetch(t, u, chosen)}
        return [MemoryHit(item=by_id[found.ids[i]], score=float(scores[i]),
                          similarity=float(sims[i]), recency=float(recency[i]))
                for i in order if found.ids[i] in by_id]

    async def purge_expired(self) -> int:
        """Delete the rows of every expired item (searches skip them anyway); the count."""
        await self.open()
        return await self._purge(self.clock())

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ---- helpers

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"this {type(self).__name__} is closed; open a new one.")

    def _embed(self, texts: Sequence[str], *, check_dim: bool = True) -> Vectors:
        """Unit-length float32 rows for ``texts`` (a zero vector stays zero)."""
        self._check_open()
        import numpy as np

        try:
            raw = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"the embedder {embedder_name(self.embedder)} returned "
                             f"something that is not vectors ({exc})") from exc
        if raw.ndim != 2 or raw.shape[0] != len(texts) or raw.shape[1] < 1:
            raise StoreError(f"the embedder {embedder_name(self.embedder)} returned shape "
                             f"{raw.shape} for {len(texts)} texts; it must return one row "
                             "per text")
        if check_dim and self.dim is not None and raw.shape[1] != self.dim:
            raise StoreError(f"the embedder {embedder_name(self.embedder)} now returns "
                             f"{raw.shape[1]} dimensions, not the {self.dim} this store "
                             "holds; reopen with reembed=True to re-embed the items.")
        if not np.isfinite(raw).all():
            raise StoreError(f"the embedder {embedder_name(self.embedder)} returned NaN or "
                             "infinite values")
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        out: Vectors = (raw / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        return out


def stored_tenant(tenant: str) -> str | None:
    """The tenant of an item as the API shows it (the empty tenant is None)."""
    return None if tenant == NO_TENANT else tenant


def item_from_row(row: Sequence[Any]) -> MemoryItem:
    """A MemoryItem from ``(id, tenant, user, kind, text, importance, created_at,
    updated_at, expires_at, source_run)``: the column order every SQL backend selects."""
    return MemoryItem(id=row[0], tenant=stored_tenant(row[1]), user=row[2], kind=row[3],
                      text=row[4], importance=float(row[5]), created_at=float(row[6]),
                      updated_at=float(row[7]),
                      expires_at=None if row[8] is None else float(row[8]),
                      source_run=row[9])


ITEM_COLUMNS = ("id, tenant, user_id, kind, text, importance, created_at, updated_at, "
                "expires_at, source_run")
