"""What a tool sees of the run it is called from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Handed to a tool function that declares a parameter annotated ``ToolContext``.

    ``idempotency_key`` is stable across retries and resumes of the same step (run id + step
    key): pass it to the outside system so a repeated call is recognised and not applied twice.
    """

    run_id: str
    step_key: str
    agent: str
    idempotency_key: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    deps: Any = None
    attempt: int = 1
