"""How shadow runs are marked in the store: what both the shadow and its report read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The key in a shadow tool result's value that marks what the shadow did instead of a call.
SHADOW_KEY = "keel_shadow"


def shadow_metadata(metadata: Mapping[str, Any]) -> str | None:
    """The production run id a run shadowed, from its metadata (None: not a shadow run)."""
    value = metadata.get("shadow_of")
    return value if isinstance(value, str) and value else None
