"""SIGKILL proof of the outbox: a child process runs agents with the outbox on and a relay
publishing to a Redis stream, and is killed at an exact point of the relay's sixth publish,
(a) before the events reach the bus and (b) after they did but before they were marked
published. After a restart that relays what is left, the stream holds an event for every
step the journal holds and for nothing else, each exactly once after de-duplication by id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from keel.events import Event
from keel.store import TERMINAL_STATUSES, open_store

pytestmark = pytest.mark.slow  # child processes: the crash matrix runs in CI, not by default

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]
RUNS = 6


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"keel-test-outbox-{uuid.uuid4().hex[:12]}"
    yield name
    with redis.Redis.from_url(REDIS_URL) as r:
        r.delete(name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    import psycopg

    schema = f"keel_crash_outbox_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def child(mode: str, store_url: str, stream: str, kill: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "tests.events._outbox_child", mode, store_url, REDIS_URL,
         stream, kill, str(RUNS)], cwd=ROOT, env=env, capture_output=True, timeout=300,
        check=False)
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(done.stderr.decode()[-3000:])
    return done.returncode


def published(stream: str) -> list[Event]:
    with redis.Redis.from_url(REDIS_URL) as r:
        return [Event.from_json(fields[b"event"]) for _, fields in r.xrange(stream)]


async def expected_ids(store_url: str) -> set[str]:
    """The ids of the events the store's runs and journals say happened."""
    ids: set[str] = set()
    async with open_store(store_url, create=False) as store:
        for run in await store.list_runs():
            ids.add(f"{run.run_id}:started")
            if run.status in TERMINAL_STATUSES:
                ids.add(f"{run.run_id}:{run.status}")
            for e in await store.read_journal(run.run_id):
                if e.kind == "tool" and e.phase == "result":
                    ids.add(f"{run.run_id}:{e.seq}:result")
    return ids


@pytest.mark.parametrize("kill", ["before_publish:6", "after_publish:6"])
async def test_every_event_of_every_stored_step_is_published_once(
        store_url: str, stream: str, kill: str) -> None:
    assert child("work", store_url, stream, kill) == -signal.SIGKILL
    before = {e.id for e in published(stream)}
    happened = await expected_ids(store_url)
    assert before < happened, "the kill left nothing unpublished: it proves nothing"
    assert before <= happened, "an event was published for a step that does not exist"

    assert child("drain", store_url, stream, "none") == 0
    events = published(stream)
    ids = [e.id for e in events]
    assert set(ids) == happened, (sorted(happened - set(ids)), sorted(set(ids) - happened))
    assert len({e.id: e for e in events}) == len(happened)  # once each, de-duplicated
    doubles = len(ids) - len(set(ids))
    if kill.startswith("after_publish"):
        assert 1 <= doubles <= 3, "the batch on the bus but not marked is published again"
    else:
        assert doubles == 0
    for e in events:  # what was republished is the same event
        assert e == next(x for x in events if x.id == e.id)
    async with open_store(store_url, create=False) as store:
        assert await store.read_outbox(0, 10_000) == [], "rows left unpublished"
    runs = {i.split(":")[0] for i in ids}
    assert len(runs) >= 2, "the child ran more than one run before it died"
