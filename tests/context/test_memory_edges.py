"""Long-term memory at its edges: the ranking's settings, embedders that misbehave or
change, damaged or newer files and tables, unreachable servers, the pgvector choice, and
odd run inputs and outputs."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from keel.context import (
    InMemoryMemory,
    Memory,
    PostgresMemory,
    Ranking,
    SQLiteMemory,
)
from keel.core import ConfigError, StoreError
from keel.runtime import RunEndInput, RunStartInput
from keel.testing import MemoryConformance

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Fixed:
    """An embedder that gives every text the same vector of ``width`` (or what ``rows``
    returns), and says its name."""

    def __init__(self, width: int = 8, name: str = "test:fixed", rows: Any = None) -> None:
        self.width, self.name, self.rows = width, name, rows

    def embed(self, texts: Sequence[str]) -> Any:
        if self.rows is not None:
            return self.rows(texts)
        return np.ones((len(texts), self.width), dtype=np.float32)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"keel_mem_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("options", [
    {"similarity": -1}, {"recency": float("nan")}, {"importance": True},
    {"similarity": 0, "recency": 0, "importance": 0}, {"half_life": 0},
    {"half_life": float("inf")}, {"min_similarity": 1.5}, {"min_similarity": "high"},
])
def test_bad_ranking_settings_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Ranking(**options)


async def test_min_similarity_drops_unrelated_items_and_weights_reorder() -> None:
    strict = InMemoryMemory(ranking=Ranking(min_similarity=0.25))
    await strict.remember("The user's dog is called Rex.", user="u")
    await strict.remember("The user lives in Lyon, France.", user="u")
    hits = await strict.search("What is my pet's name?", user="u", kinds="fact")
    assert [h.item.text for h in hits] == ["The user's dog is called Rex."]
    only_importance = InMemoryMemory(ranking=Ranking(similarity=0, recency=0, importance=1))
    await only_importance.remember("The user's dog is called Rex.", user="u", importance=0.1)
    top = await only_importance.remember("The user lives in Lyon.", user="u", importance=0.9)
    hits = await only_importance.search("What is my pet's name?", user="u")
    assert hits[0].item == top and hits[0].score == pytest.approx(0.9)


# -------------------------------------------------------------------------------- embedders


@pytest.mark.parametrize(("rows", "words"), [
    (lambda texts: [["a", "b"]] * len(texts), "not vectors"),
    (lambda texts: np.ones((len(texts),)), "one row per text"),
    (lambda texts: np.ones((len(texts) + 1, 4)), "one row per text"),
    (lambda texts: np.ones((len(texts), 0)), "one row per text"),
    (lambda texts: np.full((len(texts), 4), np.nan), "NaN"),
])
async def test_an_embedder_returning_no_vectors_is_a_store_error(rows: Any,
                                                                 words: str) -> None:
    memory = InMemoryMemory(embedder=Fixed(rows=rows))
    with pytest.raises(StoreError, match=words):
        await memory.remember("The user likes tea.", user="u")


async def test_an_embedder_that_changes_width_midway_is_caught() -> None:
    widths = iter([8, 8, 4])
    memory = InMemoryMemory(embedder=Fixed(rows=lambda texts: np.ones(
        (len(texts), next(widths)), dtype=np.float32)))
    await memory.remember("The user likes tea.", user="u")
    with pytest.raises(StoreError, match="now returns 4 dimensions, not the 8"):
        await memory.search("tea", user="u")


async def test_a_named_embedder_is_recorded_and_a_zero_vector_scores_zero(
        tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    zero = Fixed(rows=lambda texts: np.zeros((len(texts), 8), dtype=np.float32), name="zero")
    async with SQLiteMemory(path, embedder=zero) as memory:
        await memory.remember("The user likes tea.", user="u", importance=0.0)
        [hit] = await memory.search("tea", user="u")
        assert hit.similarity == 0.0
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM keel_memory_meta"))
    assert (meta["embedder"], meta["dim"]) == ("zero", "8")
    with pytest.raises(StoreError, match="embedded with zero"):
        await SQLiteMemory(path, embedder=Fixed(name="other")).open()


# ----------------------------------------------------------------------- files and tables


async def test_files_that_are_not_memory_stores(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a keel memory file"):
        await SQLiteMemory(junk, embedder=Fixed()).open()
    newer = tmp_path / "newer.db"
    async with SQLiteMemory(newer, embedder=Fixed()):
        pass
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE keel_memory_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer keel"):
        await SQLiteMemory(newer, embedder=Fixed()).open()
    nested = tmp_path / "a" / "b" / "memory.db"
    async with SQLiteMemory(nested, embedder=Fixed()) as memory:
        await memory.remember("x", user="u")
    assert nested.is_file()


async def test_damaged_vectors_are_reported_not_scored(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    async with SQLiteMemory(path, embedder=Fixed()) as memory:
        await memory.remember("The user likes tea.", user="u")
        memory.db.execute("UPDATE keel_memory SET embedding = x'00'")
        with pytest.raises(StoreError, match="another width"):
            await memory.search("tea", user="u")


def test_a_backend_used_before_it_is_open_says_so() -> None:
    with pytest.raises(StoreError, match="not open yet"):
        _ = SQLiteMemory(":memory:", embedder=Fixed()).db


async def test_postgres_before_open_unreachable_and_newer(pg_schema: str) -> None:
    with pytest.raises(StoreError, match="not open yet"):
        await PostgresMemory(PG_URL, embedder=Fixed())._run("SELECT 1")
    with pytest.raises(StoreError, match="cannot reach"):
        await PostgresMemory("postgresql://postgres@127.0.0.1:1/test", embedder=Fixed()).open()
    async with PostgresMemory(PG_URL, schema=pg_schema, embedder=Fixed()) as memory:
        assert memory.vectors == "array"
        with pytest.raises(StoreError, match="failed: UndefinedTable"):
            await memory._run("SELECT * FROM no_such_table")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.keel_memory_meta SET value = '99' "
                     "WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer keel"):
        await PostgresMemory(PG_URL, schema=pg_schema, embedder=Fixed()).open()


async def test_the_pgvector_choice(pg_schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        installed = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
    if installed:
        pytest.skip("this server has pgvector: TestPostgresMemoryPgvector covers it")
    with pytest.raises(StoreError, match="pgvector=True but"):
        await PostgresMemory(PG_URL, schema=pg_schema, pgvector=True, embedder=Fixed()).open()
    async with PostgresMemory(PG_URL, schema=pg_schema, embedder=Fixed()) as memory:
        assert memory.vectors == "array"  # auto: arrays when the extension is not there
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_schema}.keel_memory_meta SET value = 'pgvector' "
                     "WHERE key = 'vectors'")
    with pytest.raises(StoreError, match="extension is not installed"):
        await PostgresMemory(PG_URL, schema=pg_schema, embedder=Fixed()).open()


def test_pgvector_parameters_and_sql() -> None:
    memory = PostgresMemory(PG_URL, embedder=Fixed())
    memory.vectors = "pgvector"
    assert memory._vector(np.array([0.5, -0.25], dtype=np.float32)) == "[0.5,-0.25]"
    assert memory._cast == "::vector"
    memory.vectors = "array"
    assert memory._vector(np.array([0.5], dtype=np.float32)) == [0.5]
    assert memory._cast == "::float8[]"


async def test_in_memory_purge_drops_emptied_users_and_reembeds() -> None:
    memory = InMemoryMemory(embedder=Fixed())
    await memory.remember("brief", user="u", ttl=1)
    memory.clock = lambda: 2e10
    assert await memory.purge_expired() == 1
    assert await memory.items(user="u", include_expired=True) == []
    # the re-embed path, as a reopened SQL store would take it
    await memory.remember("The user likes tea.", user="v")
    memory.embedder, memory.reembed, memory._opened = Fixed(width=4), True, False
    await memory.open()
    assert memory.dim == 4 and memory.stored == ("test:fixed", 4)
    assert len(await memory.search("tea", user="v")) == 1


# ------------------------------------------------------------------------------ middleware


async def test_odd_inputs_and_outputs_of_runs() -> None:
    backend = InMemoryMemory(max_chars=60)
    await backend.remember("The user's dog is called Rex.", user="u")
    memory = Memory(backend, episodes=True, min_similarity=-1)
    # a structured input is looked up by its JSON; a very long one by its first characters
    start = RunStartInput(run_id="r1", agent="a", input={"question": "dog name?" * 50},
                          resumed=False, user="u")
    extra = await memory.on_run_start(start)
    assert extra is not None and "Rex" in extra["keel.memory"]["text"]
    unserialisable = {1, 2}
    await memory.on_run_end(RunEndInput(run_id="r1", agent="a", status="completed",
                                        output=unserialisable, error=None, user="u"))
    [episode] = [i for i in await backend.items(user="u") if i.kind == "episode"]
    assert len(episode.text) == 60 and episode.text.endswith("…")
    none_start = RunStartInput(run_id="r2", agent="a", input=None, resumed=False, user="u")
    assert await memory.on_run_start(none_start) == {"keel.memory": {"text": "", "ids": []}}


def test_the_conformance_kit_is_public() -> None:
    assert MemoryConformance.persistent is True


async def test_the_sqlite_vector_cache_sees_writes_of_other_connections(
        tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteMemory(path) as reader, SQLiteMemory(path) as writer:
        await writer.remember("The user's dog is called Rex.", user="u")
        assert len(await reader.search("dog", user="u")) == 1  # cached now
        cat = await writer.remember("The user's cat is called Tom.", user="u")
        assert {h.item.text for h in await reader.search("cat", user="u")} == {
            "The user's dog is called Rex.", cat.text}
        await writer.forget_user(user="u")
        assert await reader.search("cat", user="u") == []
        # a user bigger than the cache is read every time, never cached
        reader._cache.max_bytes = 10
        await writer.remember("The user likes tea.", user="v")
        assert len(await reader.search("tea", user="v")) == 1
        assert ("", "v") not in reader._cache
        # the reader's own writes drop what they change
        reader._cache.max_bytes = 2**20
        first = await reader.remember("The user likes coffee.", user="w")
        assert len(await reader.search("coffee", user="w")) == 1
        await reader.update(first.id, user="w", text="The user likes cocoa.")
        [hit] = await reader.search("cocoa", user="w")
        assert hit.item.text == "The user likes cocoa."
        for i in range(3):
            await reader.remember(f"The user likes tea number {i}.", user=f"x{i}")
            await reader.search("tea", user=f"x{i}")
        reader._cache.max_bytes = 2048  # eviction keeps the cache within its bound
        await reader.remember("one more", user="y")
        await reader.search("one", user="y")
        assert reader._cache.bytes <= 2048


def test_the_documented_formula_and_defaults_are_the_code() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "context.md").read_text()
    section = page.split("## Long-term memory", 1)[1]
    ranking = Ranking()
    assert f"score = {ranking.similarity} · max(0, cosine(query, item))" in section
    assert f"+ {ranking.recency} · 0.5 ** (age / {ranking.half_life / 86_400:.0f} days)" \
        in section
    assert f"+ {ranking.importance} · importance" in section
    memory = Memory(InMemoryMemory())
    assert f"`budget_tokens` ({memory.budget_tokens} by default" in section
    assert f"`k` ({memory.k})" in section and f"`min_similarity` ({memory.min_similarity}" \
        in section
    assert f"{memory.backend.max_chars:,} by default" in section


def test_a_memory_file_beside_the_run_store(tmp_path: Path) -> None:
    memory = SQLiteMemory.beside(tmp_path / "runs" / "runs.db", embedder=Fixed())
    assert memory.path == str(tmp_path / "runs" / "memory.db")
    assert SQLiteMemory.beside(".keel/runs.db").path == ".keel/memory.db"
    for bad in ("", ":memory:", 3):
        with pytest.raises(ConfigError, match="run_store"):
            SQLiteMemory.beside(bad)  # type: ignore[arg-type]


async def test_the_postgres_vector_cache_follows_every_writer(pg_schema: str) -> None:
    async with PostgresMemory(PG_URL, schema=pg_schema) as reader, \
            PostgresMemory(PG_URL, schema=pg_schema) as writer:
        rex = await writer.remember("The user's dog is called Rex.", user="u", tenant="t")
        assert [h.item for h in await reader.search("dog", user="u", tenant="t")] == [rex]
        assert ("t", "u") in reader._cache
        tom = await writer.remember("The user's cat is called Tom.", user="u", tenant="t")
        assert {h.item.id for h in await reader.search("cat", user="u", tenant="t")} == {
            rex.id, tom.id}
        # forgotten and remembered again: never the cached (forgotten) items
        assert await writer.forget_user(user="u", tenant="t") == 2
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            left = conn.execute(f"SELECT count(*) FROM {pg_schema}.keel_memory_users").fetchone()
        assert left == (0,), "nothing of a forgotten user stays"
        new = await writer.remember("The user likes tea.", user="u", tenant="t")
        assert [h.item for h in await reader.search("dog", user="u", tenant="t")] == [new]
        # a write by hand (a data-protection script) is seen too: the trigger bumps
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {pg_schema}.keel_memory")
        assert await reader.search("tea", user="u", tenant="t") == []
        # the reader's own update is seen by itself
        mine = await reader.remember("The user likes coffee.", user="v", tenant="t")
        assert len(await reader.search("coffee", user="v", tenant="t")) == 1
        await reader.update(mine.id, user="v", tenant="t", text="The user likes cocoa.")
        [hit] = await reader.search("cocoa", user="v", tenant="t")
        assert hit.item.text == "The user likes cocoa."
        # vectors of another width than the embedder's are refused, not scored
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"UPDATE {pg_schema}.keel_memory SET embedding = '{{1,2}}'")
        with pytest.raises(StoreError, match="another width"):
            await reader.search("cocoa", user="v", tenant="t")


def test_a_postgres_memory_serves_one_event_loop_after_another(pg_schema: str) -> None:
    import asyncio

    from keel import Agent, MemoryStore
    from keel.testing import ScriptedModel

    memory = PostgresMemory(PG_URL, schema=pg_schema)

    async def remember() -> None:
        await memory.remember("The user's dog is called Rex.", user="alice")

    asyncio.run(remember())  # opened in this loop, which then closes
    model = ScriptedModel(["Rex", "Rex again"])
    agent = Agent("desk", model=model, middleware=[Memory(memory)])
    for _ in range(2):  # run_sync: a new event loop each time
        agent.run_sync("What is my dog's name?", store=MemoryStore(), user="alice")
    blocks = [m.text for r in model.requests for m in r if m.text.startswith("<memory>")]
    assert len(blocks) == 2 and all("Rex" in b for b in blocks)
    asyncio.run(memory.close())
