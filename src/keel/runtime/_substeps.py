"""Journaled sub-work under a step: what a middleware does inside a step that must replay.

Middleware wraps the live execution of a step, so a step read back from the journal does not
pass through it again; but a middleware that does work of its own *during* a step (a history
policy that asks a model for a summary, a guard that asks a judge agent) must not do that work
again when the step itself runs again after a crash, and a replay must see the same result.
:class:`SubSteps` is that seam: each call is a journal step keyed under the step
(``<step_key>/<name>``), so it runs once and is read back afterwards, within the run's budget.

``ModelRequestInput.steps`` carries one for each model request of an agent loop (None where a
request has no run, such as a model called outside one). The guards' LLM judges use
:func:`run_sub_agent`, the same machinery, through ``GuardInput.judge``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from keel.store import JournalEntry

if TYPE_CHECKING:
    from keel.core import Usage
    from keel.runtime._journal import Journal
    from keel.store import RunRecord

T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


async def run_sub_agent(journal: Journal, prefix: str, agent: Any, text: str, *,
                        deps: Any, record: RunRecord) -> Any:
    """Run ``agent`` (a runtime Agent) on ``text`` as a sub-run of the journal's run, its
    steps keyed under ``prefix``, within its own share of the run's budget; a failure is
    journaled so that a resumed run fails the same way. Returns its ``RunResult``."""
    from keel.runtime._failures import guarded

    view = journal.view(budget=journal.budget.child(agent.budget), agent=agent.name)
    loop = agent.driver(view, deps=deps, emit=None, streaming=False, record=record,
                        prefix=prefix)
    return await guarded(view, prefix, lambda: loop.run(text))


@dataclass(frozen=True, slots=True, kw_only=True)
class SubSteps:
    """Journaled sub-work of the step ``key`` of the agent loop keyed under ``prefix``."""

    journal: Journal
    #: The step this work belongs to (``support/turn:3/model``).
    key: str
    #: The agent loop's prefix (``support``, or ``<pattern>/<agent>`` inside a pattern).
    prefix: str
    record: RunRecord | None = None
    deps: Any = None

    async def step(self, name: str, fn: Callable[[], Awaitable[T]], *, kind: str,
                   label: str = "", input_hash: str = "",
                   encode: Callable[[T], Any] = _identity,
                   decode: Callable[[Any], T] = _identity,
                   usage_of: Callable[[T], Usage | None] | None = None,
                   budgeted: bool = True) -> T:
        """Run ``fn`` once as the journal step ``<key>/<name>`` (of ``kind``, named
        ``label``); a resumed or replayed run gets the recorded value back. ``input_hash``
        detects a divergence (the same key asked with other input)."""
        value, _ = await self.journal.step(
            f"{self.key}/{name}", kind, label or name, fn, input_hash=input_hash,
            encode=encode, decode=decode, usage_of=usage_of, budgeted=budgeted, defer=True)
        return value

    def earlier(self, kind: str) -> list[JournalEntry]:
        """The recorded results of ``kind`` under this loop's model steps
        (``<prefix>/turn:N/model/<name>``, not those of agents nested deeper), oldest first:
        what earlier requests of the loop did (read once, when a middleware rebuilds its
        state)."""
        return _own(self.journal, self.prefix, kind)

    def conversation_warned(self) -> bool:
        """Whether an earlier run of this loop's conversation warned that it outgrew the
        context window (recorded in the run's ``<prefix>/conversation`` step), so the user
        is warned once per conversation, not once per run."""
        recorded = self.journal.recorded(f"{self.prefix}/conversation")
        data = recorded.data if recorded is not None else None
        return isinstance(data, dict) and data.get("warned") is True

    async def run_agent(self, name: str, agent: Any, text: str) -> Any:
        """Run ``agent`` on ``text`` as a sub-run keyed ``<key>/<name>/<agent name>`` (see
        :func:`run_sub_agent`); needs the run's record."""
        if self.record is None:
            from keel.core import UserError

            raise UserError("this request has no run record to run a sub-agent under")
        return await run_sub_agent(self.journal, f"{self.key}/{name}/{agent.name}", agent,
                                   text, deps=self.deps, record=self.record)


#: The journal kind of a context note (the history policy's warning to the user).
CONTEXT_KIND = "context"


def context_warning(journal: Journal, prefix: str) -> str | None:
    """The context warning recorded under ``prefix`` (the first), for the run's result."""
    found = [e for e in _own(journal, prefix, CONTEXT_KIND)
             if e.name == "warning" and isinstance(e.data, dict)]
    if not found:
        return None
    text = found[0].data.get("warning")
    return text if isinstance(text, str) else None


def _own(journal: Journal, prefix: str, kind: str) -> list[JournalEntry]:
    """Results of ``kind`` keyed ``<prefix>/turn:N/model/<name>``, in seq order."""
    head = prefix + "/"
    found = []
    for e in journal.entries():
        if e.kind != kind or e.phase != "result" or not e.key.startswith(head):
            continue
        parts = e.key[len(head):].split("/")
        if len(parts) == 3 and parts[0].startswith("turn:") and parts[1] == "model":
            found.append(e)
    return found
