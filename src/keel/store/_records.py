"""What the store keeps besides runs: user feedback on runs, and versioned settings.

``Feedback`` is a person's verdict on a run (thumbs up or down, a score, a comment); the
metrics, the rollout gates and dataset harvesting read it. A run may collect any number of
feedback records (several users, or one user changing their mind: the newest counts).

``Setting`` is a small JSON document under a key (``rollout:support``, ``flag:new-router``),
written with compare-and-set on its version so that several workers and operators can change
it without losing an update; every version is kept (``setting_history``), so a rollout's
advances and rollbacks are an audit trail of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from keel.core import SettingConflict, UserError

Thumbs: TypeAlias = Literal["up", "down"]

#: The longest comment kept with a feedback record (characters).
MAX_COMMENT_CHARS = 4000
#: The largest setting value (bytes of its JSON).
MAX_SETTING_BYTES = 256 * 1024
#: Characters a setting key may have.
MAX_SETTING_KEY = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    """One person's verdict on a run. ``thumbs`` and ``score`` (0 to 1) are each optional,
    but one of them or a comment must be there. ``by`` is who gave it (a user id, or
    ``"reviewer:ana"``); ``tenant`` is the run's tenant (the store fills it from the run)."""

    feedback_id: str
    run_id: str
    created_at: float
    thumbs: Thumbs | None = None
    score: float | None = None
    comment: str | None = None
    by: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_feedback(self.thumbs, self.score, self.comment)

    @property
    def negative(self) -> bool:
        """Thumbs down, or a score below one half."""
        return self.thumbs == "down" or (self.score is not None and self.score < 0.5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """A versioned JSON document: ``version`` starts at 1 and grows by one per write."""

    key: str
    value: Any
    version: int
    updated_at: float
    updated_by: str | None = None
    reason: str | None = None


def check_feedback(thumbs: object, score: object, comment: object) -> None:
    """Refuse a feedback record that says nothing or says it wrongly (a ``UserError``)."""
    if thumbs is not None and thumbs not in ("up", "down"):
        raise UserError(f"feedback thumbs must be 'up' or 'down', not {thumbs!r}")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                              or not math.isfinite(score) or not 0.0 <= float(score) <= 1.0):
        raise UserError(f"a feedback score is a number from 0 to 1, not {score!r}")
    if comment is not None:
        if not isinstance(comment, str):
            raise UserError(f"a feedback comment is text, not {type(comment).__name__}")
        if len(comment) > MAX_COMMENT_CHARS:
            raise UserError(f"a feedback comment has at most {MAX_COMMENT_CHARS} characters "
                            f"(this one has {len(comment)}); shorten it")
    if thumbs is None and score is None and not comment:
        raise UserError("feedback needs thumbs ('up' or 'down'), a score (0 to 1) or a comment")


def check_setting_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_SETTING_KEY \
            or any(c.isspace() or not c.isprintable() for c in key):
        raise UserError(f"a setting key is 1 to {MAX_SETTING_KEY} printable characters "
                        f"without spaces (e.g. 'rollout:support'), not {key!r}")
    return key


class MemoryRecords:
    """Feedback and settings kept in dicts: the memory store's half of the seam, and the
    reference the SQL stores are tested against (``keel.testing`` conformance)."""

    def __init__(self) -> None:
        self._feedback: dict[str, Feedback] = {}
        self._settings: dict[str, list[Setting]] = {}

    def put_feedback(self, feedback: Feedback, run_tenant: str | None) -> Feedback:
        kept = self._feedback.get(feedback.feedback_id)
        if kept is not None:
            return kept
        stored = replace(feedback, tenant=run_tenant)
        self._feedback[feedback.feedback_id] = stored
        return stored

    def list_feedback(self, run_ids: Collection[str] | None, tenant: str | None,
                      since: float | None, limit: int) -> list[Feedback]:
        wanted = None if run_ids is None else set(run_ids)
        rows = [f for f in self._feedback.values()
                if (wanted is None or f.run_id in wanted)
                and (tenant is None or f.tenant == tenant)
                and (since is None or f.created_at >= since)]
        rows.sort(key=lambda f: (f.created_at, f.feedback_id))
        return rows[:limit]

    def forget_runs(self, run_ids: Collection[str]) -> None:
        for fid in [f.feedback_id for f in self._feedback.values() if f.run_id in run_ids]:
            del self._feedback[fid]

    def get_setting(self, key: str) -> Setting | None:
        versions = self._settings.get(key)
        return versions[-1] if versions else None

    def put_setting(self, key: str, value: Any, expect_version: int, by: str | None,
                    reason: str | None, now: float) -> Setting:
        current = self.get_setting(key)
        have = current.version if current else 0
        if have != expect_version:
            raise setting_conflict(key, expect_version, have)
        setting = Setting(key=key, value=value, version=have + 1, updated_at=now,
                          updated_by=by, reason=reason)
        self._settings.setdefault(key, []).append(setting)
        return setting

    def list_settings(self, prefix: str) -> list[Setting]:
        return [v[-1] for k, v in sorted(self._settings.items()) if k.startswith(prefix) and v]

    def setting_history(self, key: str, limit: int) -> list[Setting]:
        return list(self._settings.get(key, [])[-limit:])


def check_put_setting(key: object, value: Any, expect_version: object, by: object,
                      reason: object) -> str:
    """Check a ``put_setting`` call's arguments; returns the value's JSON text."""
    check_setting_key(key)
    if isinstance(expect_version, bool) or not isinstance(expect_version, int) \
            or expect_version < 0:
        raise UserError(f"expect_version is the version read (0 for a new setting), "
                        f"not {expect_version!r}")
    for name, text in (("by", by), ("reason", reason)):
        if text is not None and (not isinstance(text, str) or len(text) > MAX_COMMENT_CHARS):
            raise UserError(f"a setting's {name} is text of at most {MAX_COMMENT_CHARS} "
                            f"characters, not {text!r:.80}")
    try:
        body = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"a setting's value must be JSON (dicts, lists, text, finite "
                        f"numbers): {exc}") from None
    if len(body.encode()) > MAX_SETTING_BYTES:
        raise UserError(f"a setting's value is at most {MAX_SETTING_BYTES} bytes of JSON "
                        f"(this one has {len(body.encode())})")
    return body


def check_feedback_query(limit: object, since: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"limit must be a positive whole number, not {limit!r}")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
        raise UserError(f"since is epoch seconds, not {since!r}")


def setting_conflict(key: str, expected: int, have: int) -> SettingConflict:
    return SettingConflict(
        f"setting {key!r} is at version {have}, not {expected} as read: someone changed it "
        f"since; read it again and decide again")
