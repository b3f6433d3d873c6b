"""Approvals that need several different people (N-of-M): a refund above a high limit waits
for two reviewers, say.

An approval request that needs ``reviewers > 1`` people carries ``"reviewers": N``. Each
approval short of the last is kept in the store's versioned settings under
``approval-reviews:<approval id>`` (compare-and-set: two reviewers approving at once cannot
both count as "the first", and a retried call adds nothing); its history is the audit trail of
the partial decisions. The last approval, or any denial, decides the request the usual way:
the decision journaled as the gate's result carries every review (who, when, comment) under
``"reviews"``, so the run's journal keeps each person's decision.

Rules: one person counts once (approving again is a ``TaskConflict``); the run's own user
cannot approve their own request; edited arguments are refused (every reviewer must approve
the same call: deny with a comment instead); an in-process ``reviewer`` never decides such a
request (people do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.core import SettingConflict, TaskConflict, UserError
from keel.store import HumanTask, RunStore, Setting

#: The most reviewers a request may ask for.
MAX_REVIEWERS = 10


def check_reviewers(where: str, value: object) -> int:
    from keel.core import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REVIEWERS:
        raise ConfigError(where, f"must be a whole number of reviewers from 1 to "
                                 f"{MAX_REVIEWERS}, not {value!r}")
    return value


def reviewers_needed(request: Mapping[str, Any]) -> int:
    n = request.get("reviewers", 1)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def reviews_key(approval_id: str) -> str:
    return f"approval-reviews:{approval_id}"


async def reviews_of(store: RunStore, approval_id: str) -> list[dict[str, Any]]:
    """The approvals recorded so far for a multi-reviewer request (oldest first)."""
    setting = await store.get_setting(reviews_key(approval_id))
    return list(setting.value) if setting is not None else []


def check_reviewer(request: Mapping[str, Any], by: str, edited: bool,
                   reviews: list[dict[str, Any]], approve: bool) -> None:
    """Refuse a review that must not count (a ``UserError`` or ``TaskConflict``)."""
    n = reviewers_needed(request)
    if edited:
        raise UserError(f"approval {request.get('approval_id')} needs {n} reviewers, who must "
                        "all approve the same call: edited arguments are refused. Deny it with "
                        "a comment saying what to change instead.")
    if request.get("user") is not None and by == request.get("user"):
        raise UserError(f"{by} is the user this run acts for and cannot approve their own "
                        f"request; {n} other people must decide approval "
                        f"{request.get('approval_id')}.")
    if approve and any(r.get("by") == by for r in reviews):
        raise TaskConflict(f"{by} has already approved {request.get('approval_id')} "
                           f"({len(reviews)} of {n}); another reviewer must decide. Nothing "
                           "was changed.")


async def add_review(store: RunStore, task: HumanTask, decision: dict[str, Any]
                     ) -> tuple[list[dict[str, Any]], bool]:
    """Record ``decision`` (an approval that is not yet the last) with compare-and-set.
    Returns (the reviews, whether they now reach the number needed)."""
    n = reviewers_needed(task.data)
    key = reviews_key(task.task_id)
    review = review_of(decision)
    for _ in range(20):  # another reviewer wrote meanwhile: read again, decide again
        current: Setting | None = await store.get_setting(key)
        reviews = list(current.value) if current is not None else []
        check_reviewer(task.data, decision["by"], False, reviews, True)
        if len(reviews) >= n:
            return reviews, True
        reviews.append(review)
        try:
            await store.put_setting(key, reviews, expect_version=current.version if current
                                    else 0, by=decision["by"],
                                    reason=f"approval {len(reviews)} of {n}")
        except SettingConflict:
            continue
        return reviews, len(reviews) >= n
    raise TaskConflict(f"approval {task.task_id} is being decided by many reviewers at once; "
                       "try again. Nothing was changed.")


async def approval_reviews(store: RunStore, task: HumanTask) -> list[dict[str, Any]]:
    """Every person's part of an approval so far, oldest first (``by``, ``approved``,
    ``comment``, ``decided_at``): for a decided request, the reviews its journaled decision
    lists; for an open one, the approvals recorded short of the last. ``[]`` for a request
    that needs one person (its decision is the task's own ``by`` and ``resolution``)."""
    resolution = task.resolution if isinstance(task.resolution, dict) else {}
    data = task.data if isinstance(task.data, dict) else {}
    if isinstance(resolution.get("reviews"), list):
        return [r for r in resolution["reviews"] if isinstance(r, dict)]
    if isinstance(data.get("reviews"), list):  # as decide_approval returns a partial one
        return [r for r in data["reviews"] if isinstance(r, dict)]
    if reviewers_needed(data) <= 1 or task.status == "resolved":
        return []
    return [r for r in await reviews_of(store, task.task_id) if isinstance(r, dict)]


def review_summary(needed: int, reviews: list[dict[str, Any]]) -> str:
    """``"1 of 2 approved (ana)"``: how far a multi-reviewer request has got, naming who
    approved (a denial, which decides it, is named too: ``"1 of 2 approved (ana); denied
    by bob"``)."""
    approved = [str(r.get("by")) for r in reviews if r.get("approved")]
    text = f"{len(approved)} of {needed} approved"
    if approved:
        text += f" ({', '.join(approved)})"
    denied = [str(r.get("by")) for r in reviews if not r.get("approved")]
    if denied:
        text += f"; denied by {', '.join(denied)}"
    return text


def review_of(decision: Mapping[str, Any]) -> dict[str, Any]:
    """One person's part of a multi-reviewer decision, as kept and journaled."""
    return {"by": decision["by"], "approved": decision["approved"],
            "comment": decision["comment"], "decided_at": decision["decided_at"]}


def partial_task(task: HumanTask, reviews: list[dict[str, Any]]) -> HumanTask:
    """The task as it stands after a review that was not the last: still open, with the
    reviews so far in its data."""
    from dataclasses import replace

    return replace(task, data={**task.data, "reviews": reviews})
