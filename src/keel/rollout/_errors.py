"""The rollout layer's errors (drawn in the tree in ``keel.core._errors``)."""

from __future__ import annotations

from keel.core import UserError


class RolloutError(UserError):
    """A rollout, version or flag cannot be used as asked: an unknown version, shares that
    overlap or do not add up, a version whose tools no longer exist. The message says the
    fix; nothing was changed."""
