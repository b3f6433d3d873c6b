"""The context a pattern hands its helper agents: a :class:`keel.context.History` policy.

A group chat's selector and judges, a reflection's critic and generator and a supervisor's
lead are agents whose conversation is built by the pattern (the shared transcript, the rounds
so far, the workers' answers). Left alone they would see all of it on every request. The
pattern gives each of them a History instead: it replaces the agent's own default History
(``keel.defaults()`` has one) or is added to an agent that has none, so the same policies
(sliding window, token budget, importance, summarisation as a journaled step) decide what
they see, and resume and replay stay exact because the selection is made from the journal.

The default for judges, selectors and critics, :func:`judge_context`, keeps the task (the
first user message), pinned turns and the last :data:`JUDGE_TURNS` turns, within the
model's window. ``History.off()`` gives the whole transcript, as before keel 0.13.
"""

from __future__ import annotations

from typing import Any, TypeVar

from keel.context import History, Importance, SlidingWindow, TokenBudget
from keel.core import ConfigError
from keel.runtime import Agent

#: How many of the latest turns a judge, a selector or a critic sees by default.
JUDGE_TURNS = 12

A = TypeVar("A", bound=Agent[Any])


def judge_context() -> History:
    """The default History of the agents that judge or select: the task, pinned turns and
    the last :data:`JUDGE_TURNS` turns, within the model's window."""
    return History(Importance(), SlidingWindow(JUDGE_TURNS), TokenBudget())


def check_context(value: object, part: str = "context") -> History | None:
    """``value`` if it is a History or None; else a ConfigError naming ``part``."""
    if value is None or isinstance(value, History):
        return value
    raise ConfigError(part, f"expected a keel.context.History (e.g. History(SlidingWindow(8)), "
                      f"or History.off() for whole transcripts), got {type(value).__name__}")


def with_context(agent: A, context: History | None) -> A:
    """A clone of ``agent`` whose history policy is ``context`` (``agent`` itself when
    ``context`` is None). A History among the agent's own middleware is replaced too."""
    if context is None:
        return agent
    own = [m for m in agent.config.middleware if not isinstance(m, History)]
    return agent.clone(middleware=[*own, _copy(context)])


def _copy(history: History) -> History:
    """A History with the same settings and none of the state (each agent gets its own: a
    History learns its agent's model)."""
    return History(*history.policies, pinned=history.pinned, calibration=history.calibration,
                   render=history.render, warn=history.warn, enabled=history.enabled)
