"""Run events over Server-Sent Events: every journal entry once and in order, live through a
person's decision, resumable with Last-Event-ID, and nothing left behind by a client that
goes away."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.server.conftest import Served


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parsed events: ``{"event", "id", "data"}``."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


def _tails(served: Served) -> Any:
    return served.thread.server.config.app.state.keel.tails


def _start(served: Served, text: str) -> str:
    with served.client("acme", "operator") as c:
        r = c.post("/v1/runs", json={"agent": "support", "input": text, "wait": True})
        return r.json()["run_id"]  # type: ignore[no-any-return]


def test_a_stream_follows_a_run_through_approval_to_its_result(served: Served) -> None:
    run_id = _start(served, "refund Q1 75")
    events: list[dict[str, Any]] = []
    with served.client("acme", "admin") as c, c.stream(
            "GET", f"/v1/runs/{run_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for event in sse(stream):
            events.append(event)
            if event["event"] == "status" and event["data"]["status"] == "suspended":
                approval = c.get("/v1/approvals").json()["items"][0]["id"]
                threading.Thread(target=c.post, args=(f"/v1/approvals/{approval}/approve",),
                                 kwargs={"json": {}}).start()
            if event["event"] == "result":
                break
    names = [e["event"] for e in events]
    assert names[0] == "status" and names[-1] == "result"
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["output"] == "Done: refunded 75.00 on Q1"
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # each entry once, in order
    with served.client("acme", "admin") as c:
        journal = c.get(f"/v1/runs/{run_id}/timeline").json()["journal"]
    assert ids == [e["seq"] for e in journal]
    kinds = [e["event"] for e in events if "id" in e]
    assert "approval" in kinds and "observation" in kinds and "thought" in kinds
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[0] == "suspended" and statuses[-1] == "completed"


def test_a_reconnect_with_last_event_id_gets_the_rest_exactly_once(served: Served) -> None:
    run_id = _start(served, "where is order R2?")
    with served.client("acme", "viewer") as c:
        with c.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            every = list(sse(stream))
        ids = [e["id"] for e in every if "id" in e]
        assert len(ids) >= 3
        with c.stream("GET", f"/v1/runs/{run_id}/events",
                      headers={"Last-Event-ID": ids[1]}) as stream:
            rest = list(sse(stream))
        assert [e["id"] for e in rest if "id" in e] == ids[2:]
        assert rest[0]["event"] == "status" and rest[-1]["event"] == "result"
        with c.stream("GET", f"/v1/runs/{run_id}/events",
                      headers={"Last-Event-ID": ids[-1]}) as stream:
            tail = list(sse(stream))
        assert [e["event"] for e in tail] == ["status", "result"]
        bad = c.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]


def test_a_client_that_goes_away_leaves_no_follower_behind(served: Served) -> None:
    run_id = _start(served, "refund S3 10")  # suspended: its stream stays open
    with served.client("acme", "viewer") as c, c.stream(
            "GET", f"/v1/runs/{run_id}/events") as stream:
        first = next(sse(stream))
        assert first["event"] == "status"
        tails = _tails(served)
        assert sum(t.followers for t in tails._tails.values()) == 1
    deadline = time.monotonic() + 20
    while sum(t.followers for t in tails._tails.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(t.followers for t in tails._tails.values()) == 0


def test_many_followers_of_one_run_share_one_tail(served: Served) -> None:
    run_id = _start(served, "refund T4 20")
    streams, readers = [], []
    with served.client("acme", "viewer") as c:
        for _ in range(5):
            s = c.stream("GET", f"/v1/runs/{run_id}/events")
            streams.append(s)
            readers.append(sse(s.__enter__()))  # kept: a dropped reader closes its stream
            assert next(readers[-1])["event"] == "status"
        tails = _tails(served)
        live = [t for t in tails._tails.values() if t.run_id == run_id]
        assert len(live) == 1 and live[0].followers == 5
        for s in streams:
            s.__exit__(None, None, None)
