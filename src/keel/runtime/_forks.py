"""What a fork changes, read from its run record: the seq up to which its journal was copied
from the parent (trusted on replay), and the model and instructions it goes on with whoever
resumes it. Agent-specific; the generic runner only asks for the trusted seq."""

from __future__ import annotations

from typing import Any, Protocol, Self, TypeVar

from keel.core import KeelError
from keel.runtime._loop import HasModel, model_name
from keel.store import RunRecord


class Forkable(HasModel, Protocol):
    """What a fork's overrides apply to (an :class:`~keel.runtime.Agent`)."""

    @property
    def instructions(self) -> str: ...

    def clone(self, **changes: Any) -> Self: ...


F = TypeVar("F", bound=Forkable)


def fork_meta(record: RunRecord) -> dict[str, Any] | None:
    fork = record.metadata.get("fork") if isinstance(record.metadata, dict) else None
    return fork if isinstance(fork, dict) else None


def fork_trusted_seq(record: RunRecord) -> int:
    """The seq up to which a forked run's entries were copied from its parent (-1 if the run
    is not a fork)."""
    fork = fork_meta(record)
    seq = fork.get("trusted_seq", -1) if fork is not None else -1
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else -1


def fork_overrides(agent: Forkable, record: RunRecord) -> tuple[str | None, str | None]:
    """What a fork changed, from its metadata: (the model name if it differs from
    ``agent``'s, the instructions if they differ), each None when unchanged."""
    fork = fork_meta(record)
    if fork is None:
        return None, None
    model = fork.get("model")
    instructions = fork.get("instructions")
    return (model if isinstance(model, str) and model and model != model_name(agent)
            else None,
            instructions if fork.get("instructions_changed") is True
            and isinstance(instructions, str) and instructions != agent.instructions
            else None)


def as_forked(agent: F, record: RunRecord) -> F:
    """A fork goes on with the model and instructions it was forked with (its metadata),
    whoever resumes it: ``keel resume``, a worker, or the fork itself."""
    model, instructions = fork_overrides(agent, record)
    changes: dict[str, Any] = {}
    if instructions is not None:
        changes["instructions"] = instructions
    if model is not None:
        from keel.models import parse_model_id

        try:
            parse_model_id(model)
        except KeelError:
            pass  # a test model or a Model object: the resumer's own model stands in
        else:
            changes["model"] = model
    return agent.clone(**changes) if changes else agent
