"""``MemoryConformance``: the tests every long-term memory backend (``keel.context``'s
:class:`~keel.context.MemoryBackend`) must pass.

Subclass it and provide a ``memory_at`` fixture: a function ``memory_at(**options)`` that
returns a new, unopened backend on this test's storage (fresh and empty for each test), with
``options`` (``clock=``, ``embedder=``, ``reembed=``) passed to the backend. Two backends
made by it in one test see the same storage, unless the class sets ``persistent = False``
(an in-memory backend), which skips the tests that reopen the storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keel.context import MemoryBackend
from keel.core import StoreError, UserError
from keel.models import WordLlamaEmbedder
from keel.testing._store_conformance_tenants import HOSTILE_IDS

__all__ = ["Clock", "MemoryConformance"]

_T0 = 1_750_000_000.0
DAY = 86_400.0

MemoryAt = Callable[..., MemoryBackend]


class Clock:
    """A clock a test moves by hand (epoch seconds)."""

    def __init__(self, now: float = _T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_FACTS = ("The user prefers email to phone calls.", "The user's dog is called Rex.",
          "The user lives in Lyon, France.", "The user's order 1234 arrived damaged.")


async def _opened(memory_at: MemoryAt, **options: Any) -> MemoryBackend:
    return await memory_at(**options).open()


class MemoryConformance:
    """Round trips, ranking, tenant and user isolation, TTL, update, forget, bad input,
    closing and a changed embedder."""

    persistent = True

    async def test_remember_and_get_round_trip(self, memory_at: MemoryAt) -> None:
        clock = Clock()
        memory = await _opened(memory_at, clock=clock)
        item = await memory.remember("The user likes tea.", user="alice", tenant="acme",
                                     kind="fact", importance=0.8, ttl=DAY,
                                     source_run="run-1")
        assert (item.tenant, item.user, item.kind, item.text) == (
            "acme", "alice", "fact", "The user likes tea.")
        assert (item.importance, item.created_at, item.updated_at) == (0.8, _T0, _T0)
        assert (item.expires_at, item.source_run) == (_T0 + DAY, "run-1")
        assert await memory.get(item.id, user="alice", tenant="acme") == item
        episode = await memory.remember("Asked about tea.", user="alice", tenant="acme",
                                        kind="episode")
        assert {i.id for i in await memory.items(user="alice", tenant="acme")} == {
            item.id, episode.id}
        assert episode.expires_at is None and episode.importance == 0.5
        await memory.close()

    async def test_search_ranks_the_relevant_item_first(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        for fact in _FACTS:
            await memory.remember(fact, user="alice")
        hits = await memory.search("What is my pet's name?", user="alice", k=3)
        assert hits[0].item.text == "The user's dog is called Rex."
        assert len(hits) == 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(0 <= h.recency <= 1 and -1 <= h.similarity <= 1 for h in hits)
        broken = await memory.search("my package was broken", user="alice", k=1)
        assert [h.item.text for h in broken] == ["The user's order 1234 arrived damaged."]
        assert await memory.search("anything", user="nobody") == []
        assert await memory.search("anything", user="alice", tenant="unknown") == []
        await memory.close()

    async def test_recency_and_importance_break_ties(self, memory_at: MemoryAt) -> None:
        clock = Clock()
        memory = await _opened(memory_at, clock=clock)
        old = await memory.remember("The user likes green tea.", user="u")
        clock.advance(60 * DAY)
        new = await memory.remember("The user likes green tea.", user="u")
        hits = await memory.search("green tea", user="u", k=2)
        assert [h.item.id for h in hits] == [new.id, old.id]
        assert hits[0].recency == 1.0 and hits[1].recency == 0.25
        keen = await memory.remember("The user likes green tea.", user="u", importance=1.0)
        low = await memory.remember("The user likes green tea.", user="u", importance=0.0)
        ids = [h.item.id for h in await memory.search("green tea", user="u", k=4)]
        assert ids.index(keen.id) < ids.index(low.id)
        await memory.close()

    async def test_kinds_filter(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        fact = await memory.remember("The user likes tea.", user="u")
        episode = await memory.remember("The user asked about tea.", user="u", kind="episode")
        assert [h.item.id for h in await memory.search("tea", user="u", kinds=["fact"])] == [
            fact.id]
        assert [h.item.id for h in await memory.search("tea", user="u",
                                                       kinds=["episode"])] == [episode.id]
        await memory.close()

    async def test_users_and_tenants_never_see_each_other(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        owners: list[tuple[str | None, str]] = [("acme", "alice"), ("globex", "alice"),
                                                ("acme", "bob"), (None, "alice")]
        owners += [(hostile, hostile[::-1]) for hostile in HOSTILE_IDS]
        ids = {}
        for tenant, user in owners:
            item = await memory.remember(f"The user's secret word is {user}-{tenant}.",
                                         user=user, tenant=tenant, item_id="same-id")
            ids[(tenant, user)] = item
        for tenant, user in owners:
            mine = ids[(tenant, user)]
            hits = await memory.search("secret word", user=user, tenant=tenant, k=10)
            assert [h.item for h in hits] == [mine], (tenant, user)
            assert await memory.items(user=user, tenant=tenant) == [mine]
            assert await memory.get("same-id", user=user, tenant=tenant) == mine
        assert await memory.forget("same-id", user="alice", tenant="acme")
        assert await memory.get("same-id", user="alice", tenant="acme") is None
        assert await memory.get("same-id", user="alice", tenant="globex") is not None
        assert await memory.get("same-id", user="alice") is not None
        assert await memory.forget_user(user="bob", tenant="globex") == 0
        assert await memory.get("same-id", user="bob", tenant="acme") is not None
        await memory.close()

    async def test_ttl_expiry_is_honoured_in_every_query(self, memory_at: MemoryAt) -> None:
        clock = Clock()
        memory = await _opened(memory_at, clock=clock)
        brief = await memory.remember("The user is travelling this week.", user="u", ttl=DAY)
        lasting = await memory.remember("The user is travelling with a dog.", user="u")
        assert {h.item.id for h in await memory.search("travelling", user="u")} == {
            brief.id, lasting.id}
        clock.advance(DAY)  # expires_at is exclusive: at that instant it is gone
        assert [h.item.id for h in await memory.search("travelling", user="u")] == [
            lasting.id]
        assert await memory.get(brief.id, user="u") is None
        assert [i.id for i in await memory.items(user="u")] == [lasting.id]
        assert {i.id for i in await memory.items(user="u", include_expired=True)} == {
            brief.id, lasting.id}
        with _raises(StoreError):
            await memory.update(brief.id, user="u", importance=1.0)
        assert await memory.purge_expired() == 1
        assert [i.id for i in await memory.items(user="u", include_expired=True)] == [
            lasting.id]
        await memory.close()

    async def test_update_changes_text_importance_and_ttl(self, memory_at: MemoryAt) -> None:
        clock = Clock()
        memory = await _opened(memory_at, clock=clock)
        item = await memory.remember("The user's dog is called Rex.", user="u", ttl=DAY)
        clock.advance(10)
        updated = await memory.update(item.id, user="u", text="The user lives in Lyon.",
                                      importance=0.9)
        assert (updated.text, updated.importance, updated.updated_at) == (
            "The user lives in Lyon.", 0.9, _T0 + 10)
        assert updated.created_at == _T0 and updated.expires_at == _T0 + DAY
        assert await memory.get(item.id, user="u") == updated
        hits = await memory.search("Where do I live?", user="u")
        assert hits[0].item == updated
        forever = await memory.update(item.id, user="u", ttl=None)
        assert forever.expires_at is None
        soon = await memory.update(item.id, user="u", ttl=5)
        assert soon.expires_at == _T0 + 15
        with _raises(StoreError):
            await memory.update(item.id, user="someone-else", text="x")
        with _raises(StoreError):
            await memory.update("no-such-id", user="u", text="x")
        assert (await memory.get(item.id, user="u")) == soon
        await memory.close()

    async def test_forget_removes_the_rows(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        one = await memory.remember("The user likes tea.", user="u", tenant="t")
        await memory.remember("The user likes coffee.", user="u", tenant="t", ttl=1)
        other = await memory.remember("The user likes tea.", user="v", tenant="t")
        assert await memory.forget(one.id, user="u", tenant="t") is True
        assert await memory.forget(one.id, user="u", tenant="t") is False
        assert [i.text for i in await memory.items(user="u", tenant="t",
                                                   include_expired=True)] == [
            "The user likes coffee."]
        assert await memory.forget_user(user="u", tenant="t") == 1
        assert await memory.items(user="u", tenant="t", include_expired=True) == []
        assert await memory.search("tea", user="u", tenant="t") == []
        assert await memory.items(user="v", tenant="t") == [other]
        await memory.close()

    async def test_remember_with_an_id_is_idempotent(self, memory_at: MemoryAt) -> None:
        clock = Clock()
        memory = await _opened(memory_at, clock=clock)
        first = await memory.remember("The user likes tea.", user="u", item_id="call-1")
        clock.advance(5)
        again = await memory.remember("The user likes tea!", user="u", item_id="call-1")
        assert again == first
        assert len(await memory.items(user="u")) == 1
        await memory.close()

    async def test_bad_input_is_refused_and_nothing_stored(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        bad: list[dict[str, Any]] = [
            {"text": ""}, {"text": "   \n"}, {"text": "x" * (memory.max_chars + 1)},
            {"text": "nul\x00byte"}, {"text": 42}, {"text": None},
            {"user": ""}, {"user": None}, {"user": "bob\nroot"}, {"user": "x" * 201},
            {"tenant": ""}, {"tenant": "a\x1b[31m"}, {"tenant": 7},
            {"importance": 1.5}, {"importance": -0.1}, {"importance": float("nan")},
            {"importance": True}, {"importance": "high"},
            {"ttl": 0}, {"ttl": -5}, {"ttl": float("inf")}, {"ttl": "1d"},
            {"kind": "secret"}, {"item_id": ""}, {"item_id": "a\nb"}, {"item_id": "i" * 201},
            {"source_run": "r\x00"},
        ]
        for change in bad:
            args: dict[str, Any] = {"text": "The user likes tea.", "user": "u", **change}
            text = args.pop("text")
            with _raises(UserError):
                await memory.remember(text, **args)
        assert await memory.items(user="u", include_expired=True) == []
        cases: list[tuple[Any, Any]] = [("", 5), ("x" * (memory.max_chars + 1), 5),
                                        ("tea", 0), ("tea", 101), ("tea", True), ("tea", 2.5),
                                        (None, 5), (b"tea", 5)]
        for query, k in cases:
            with _raises(UserError):
                await memory.search(query, user="u", k=k)
        with _raises(UserError):
            await memory.search("tea", user="u", kinds=["secret"])  # type: ignore[list-item]
        with _raises(UserError):
            await memory.forget("", user="u")
        with _raises(UserError):
            await memory.forget_user(user="")
        await memory.close()

    async def test_a_closed_backend_refuses_every_call(self, memory_at: MemoryAt) -> None:
        memory = await _opened(memory_at)
        await memory.remember("The user likes tea.", user="u")
        await memory.close()
        await memory.close()  # closing twice is fine
        for call in (memory.remember("x", user="u"), memory.search("x", user="u"),
                     memory.items(user="u"), memory.forget("i", user="u"),
                     memory.forget_user(user="u"), memory.get("i", user="u"),
                     memory.update("i", user="u", text="y"), memory.purge_expired(),
                     memory.open()):
            with _raises(StoreError, "closed"):
                await call

    async def test_memories_persist_across_opens(self, memory_at: MemoryAt) -> None:
        if not self.persistent:
            return
        first = await _opened(memory_at)
        item = await first.remember("The user's dog is called Rex.", user="u", tenant="t")
        await first.close()
        second = await _opened(memory_at)
        assert await second.get(item.id, user="u", tenant="t") == item
        hits = await second.search("pet's name", user="u", tenant="t")
        assert [h.item for h in hits] == [item]
        await second.close()

    async def test_a_changed_embedding_dimension_is_refused_or_reembedded(
            self, memory_at: MemoryAt) -> None:
        if not self.persistent:
            return
        first = await _opened(memory_at)
        for fact in _FACTS:
            await first.remember(fact, user="u")
        await first.close()
        narrow = WordLlamaEmbedder(dim=64)
        with _raises(StoreError, "reembed=True"):
            await _opened(memory_at, embedder=narrow)
        again = await _opened(memory_at, embedder=narrow, reembed=True)
        assert again.dim == 64
        hits = await again.search("What is my pet's name?", user="u")
        assert hits[0].item.text == "The user's dog is called Rex."
        await again.close()
        reopened = await _opened(memory_at, embedder=WordLlamaEmbedder(dim=64))
        assert len(await reopened.items(user="u")) == len(_FACTS)
        await reopened.close()


class _raises:
    """``pytest.raises`` without pytest (the kit works without it): the block must raise
    ``kind`` with ``words`` in its message."""

    def __init__(self, kind: type[BaseException], words: str = "") -> None:
        self.kind, self.words = kind, words

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        if exc_type is None:
            raise AssertionError(f"expected {self.kind.__name__}, nothing was raised")
        if not issubclass(exc_type, self.kind):
            return False
        assert self.words in str(exc), f"{self.words!r} not in {exc!s}"
        return True
