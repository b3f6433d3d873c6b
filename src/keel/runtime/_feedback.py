"""User feedback on runs: a thumbs up or down, a score and a comment that a person attaches to a
run after it answered, kept in the run store next to the run.

``record_feedback`` is what an application calls from its "was this helpful?" button (the CLI's
``keel feedback`` and the server's ``POST /v1/runs/{id}/feedback`` call it too);
``feedback_summary`` counts what was given, as the rollout gates and ``keel stats`` read it.

Comments are kept as the person wrote them: the run store already holds the run's input and
output in clear, and the comment is the same kind of content. What leaves the store is masked
where it leaves (``keel feedback list``, the HTTP API and ``keel runs export --as-dataset`` pass
it through the data policy); the runtime layer does not import the guard layer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel.core import UserError, new_run_id
from keel.runtime._runner import blocking, using_store
from keel.store import Feedback, RunStore, Thumbs, check_feedback, check_id

#: The largest ``metadata`` a feedback record may carry (bytes of its JSON).
MAX_FEEDBACK_METADATA_BYTES = 16 * 1024
#: How many records ``feedback_summary`` reads per store call.
_PAGE = 5000


async def record_feedback(run_id: str, *, thumbs: Thumbs | None = None,
                          score: float | None = None, comment: str | None = None,
                          by: str | None = None, tenant: str | None = None,
                          store: RunStore | str | None = None,
                          feedback_id: str | None = None,
                          metadata: dict[str, Any] | None = None) -> Feedback:
    """Attach a person's verdict to the run ``run_id`` and return it as stored.

    Give ``thumbs`` (``"up"`` or ``"down"``), a ``score`` from 0 to 1, a ``comment`` (at most
    4,000 characters), or any of them together. ``by`` names who gave it (a user id, or
    ``"reviewer:ana"``): a person's newest verdict on a run is the one that counts in
    :func:`feedback_summary`, so a user may change their mind. ``tenant`` scopes the call: the
    run of another tenant is :class:`keel.RunNotFound`, exactly as an unknown id.
    ``feedback_id`` makes a retried call safe (a second call with the same id returns the
    first record and adds nothing); by default each call gets a new id. ``store`` is a
    :class:`~keel.RunStore`, a store URL, or None for ``KEEL_STORE`` / ``.keel/runs.db``
    (where ``Agent.run`` writes by default). Bad values raise :class:`keel.UserError` naming
    the fix, before the store is touched."""
    feedback = new_feedback(run_id, thumbs=thumbs, score=score, comment=comment, by=by,
                            feedback_id=feedback_id, metadata=metadata)
    scope = None if tenant is None else check_id("tenant", tenant)
    async with using_store(store) as opened:
        return await opened.put_feedback(feedback, tenant=scope)


def record_feedback_sync(run_id: str, *, thumbs: Thumbs | None = None,
                         score: float | None = None, comment: str | None = None,
                         by: str | None = None, tenant: str | None = None,
                         store: RunStore | str | None = None,
                         feedback_id: str | None = None,
                         metadata: dict[str, Any] | None = None) -> Feedback:
    """:func:`record_feedback` from synchronous code (refused inside a running event loop)."""
    return blocking("record_feedback_sync", lambda: record_feedback(
        run_id, thumbs=thumbs, score=score, comment=comment, by=by, tenant=tenant,
        store=store, feedback_id=feedback_id, metadata=metadata))


def new_feedback(run_id: object, *, thumbs: object = None, score: object = None,
                 comment: object = None, by: object = None, feedback_id: object = None,
                 metadata: object = None) -> Feedback:
    """A checked :class:`~keel.store.Feedback` record for ``run_id``, created now."""
    run = check_id("run_id", run_id)
    check_feedback(thumbs, score, comment)
    who = None if by is None else check_id("by", by)
    fid = new_run_id() if feedback_id is None else check_id("feedback_id", feedback_id)
    return Feedback(feedback_id=fid, run_id=run, created_at=time.time(),
                    thumbs=thumbs,  # type: ignore[arg-type]
                    score=None if score is None else float(score),  # type: ignore[arg-type]
                    comment=comment or None,  # type: ignore[arg-type]
                    by=who, metadata=_metadata(metadata))


def _metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UserError(f"feedback metadata is a JSON object (a dict), not "
                        f"{type(metadata).__name__}")
    try:
        text = json.dumps(metadata, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UserError(f"feedback metadata must be JSON (dicts, lists, text, finite "
                        f"numbers): {exc}") from None
    if len(text.encode()) > MAX_FEEDBACK_METADATA_BYTES:
        raise UserError(f"feedback metadata is at most {MAX_FEEDBACK_METADATA_BYTES:,} bytes "
                        f"of JSON (this has {len(text.encode()):,}); keep ids, not documents")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackSummary:
    """What people said about a set of runs. Each person's newest verdict on a run counts once
    (records without ``by`` count as one anonymous person per run): ``verdicts`` of them, on
    ``runs`` runs, out of ``records`` kept. ``up`` / ``down`` count thumbs; ``mean_score`` is
    the mean of the scores given (None when none was); ``negative`` counts verdicts that are a
    thumbs down or a score below 0.5, and ``negative_rate`` is ``negative / verdicts`` (None
    when there are none)."""

    records: int = 0
    verdicts: int = 0
    runs: int = 0
    up: int = 0
    down: int = 0
    scored: int = 0
    mean_score: float | None = None
    negative: int = 0
    negative_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def summarize_feedback(records: Sequence[Feedback]) -> FeedbackSummary:
    """The :class:`FeedbackSummary` of ``records`` (in any order)."""
    newest: dict[tuple[str, str | None], Feedback] = {}
    for f in records:
        key = (f.run_id, f.by)
        kept = newest.get(key)
        if kept is None or (f.created_at, f.feedback_id) > (kept.created_at, kept.feedback_id):
            newest[key] = f
    verdicts = list(newest.values())
    scores = [f.score for f in verdicts if f.score is not None]
    negative = sum(1 for f in verdicts if f.negative)
    return FeedbackSummary(
        records=len(records), verdicts=len(verdicts), runs=len({f.run_id for f in verdicts}),
        up=sum(1 for f in verdicts if f.thumbs == "up"),
        down=sum(1 for f in verdicts if f.thumbs == "down"),
        scored=len(scores), mean_score=math.fsum(scores) / len(scores) if scores else None,
        negative=negative, negative_rate=negative / len(verdicts) if verdicts else None)


async def feedback_summary(store: RunStore, run_ids: Collection[str] | None = None,
                           tenant: str | None = None, since: float | datetime | None = None,
                           *, until: float | datetime | None = None) -> FeedbackSummary:
    """Count the feedback on ``run_ids`` (None: every run), within ``tenant`` (None: every
    tenant), given at or after ``since`` and before ``until`` (epoch seconds or datetimes):
    thumbs up and down, the mean score and the negative rate, with each person's newest
    verdict on a run counting once (see :class:`FeedbackSummary`)."""
    records = await all_feedback(store, run_ids=run_ids, tenant=tenant, since=since)
    end = epoch_since(until)
    return summarize_feedback([f for f in records if end is None or f.created_at < end])


async def all_feedback(store: RunStore, *, run_ids: Collection[str] | None = None,
                       tenant: str | None = None, since: object = None) -> list[Feedback]:
    """Every feedback record matching the filters, oldest first, read page by page."""
    if not isinstance(store, RunStore):
        raise UserError(f"feedback_summary() needs a RunStore (e.g. open_store(url)), not "
                        f"{type(store).__name__}")
    wanted = None if run_ids is None else _run_ids(run_ids)
    scope = None if tenant is None else check_id("tenant", tenant)
    start = epoch_since(since)
    out: list[Feedback] = []
    seen: set[str] = set()
    while True:
        page = await store.list_feedback(run_ids=wanted, tenant=scope, since=start,
                                         limit=_PAGE)
        fresh = [f for f in page if f.feedback_id not in seen]
        out.extend(fresh)
        seen.update(f.feedback_id for f in fresh)
        if len(page) < _PAGE or not fresh:
            return out
        start = page[-1].created_at  # the next page starts at the last time read (ties kept)


def _run_ids(run_ids: Collection[str]) -> list[str]:
    if isinstance(run_ids, str):
        raise UserError("run_ids= is a list of run ids, not one string; pass [run_id]")
    return [check_id("run_id", r) for r in run_ids]


def epoch_since(since: object) -> float | None:
    """``since=`` (epoch seconds, or a datetime: naive is UTC) as epoch seconds."""
    if since is None:
        return None
    if isinstance(since, datetime):
        return (since if since.tzinfo else since.replace(tzinfo=UTC)).timestamp()
    if isinstance(since, bool) or not isinstance(since, int | float) \
            or not math.isfinite(since):
        raise UserError(f"since= is epoch seconds or a datetime, not {since!r:.60}")
    return float(since)
