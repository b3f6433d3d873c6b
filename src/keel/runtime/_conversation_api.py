"""``keel.Conversation``: a conversation (thread) in a run store, as a Python object.

A conversation is nothing but the runs that carry its id (``run(..., conversation=)``); this
class lists them, reads the history a next turn would see, runs the next turn, forks the
conversation into a new id, and deletes it. Every method opens the store it was given (an
object, a URL, or the default) for the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from keel.core import Message, RunEvent, UserError, new_run_id
from keel.runtime._conversation import ConversationTurn, forget_rebuilt, messages_of
from keel.runtime._runner import using_store
from keel.store import TERMINAL_STATUSES, RunFilter, RunRecord, RunStore, check_id

if TYPE_CHECKING:
    from keel.runtime._result import RunResult
    from keel.runtime._runs import Runs

__all__ = ["Conversation", "SendOptions"]


class SendOptions(TypedDict, total=False):
    """Options of :meth:`Conversation.send`: those of ``run`` but the store, the tenant, the
    user and the conversation, which the conversation gives."""

    run_id: str | None
    deps: Any
    target: str | None
    deadline: float | datetime | None
    on_event: Callable[[RunEvent], None] | None

_PAGE = 10_000


class Conversation:
    """The conversation ``conversation_id`` in ``store`` (a :class:`~keel.RunStore`, a URL,
    or None for ``KEEL_STORE`` / ``.keel/runs.db``).

    ``tenant`` and ``user`` say whose conversation it is: every method then sees only that
    tenant's (and user's) runs, filtered in the store's query, and :meth:`send` runs the next
    turn as that tenant and user. Leave them out in a single-tenant application, or as an
    operator who acts on every run that carries the id (``keel conversations``).

    Ids are checked like every run id (non-empty printable text of at most 200 characters):
    anything else is a :class:`~keel.UserError` before the store is touched.
    """

    def __init__(self, conversation_id: str, *, store: RunStore | str | None = None,
                 tenant: str | None = None, user: str | None = None) -> None:
        self.id = check_id("conversation", conversation_id)
        self.store = store
        self.tenant = None if tenant is None else check_id("tenant", tenant)
        self.user = None if user is None else check_id("user", user)

    def __repr__(self) -> str:
        return f"Conversation({self.id!r})"

    # ---------------------------------------------------------------------------- reading

    async def runs(self) -> list[RunRecord]:
        """The conversation's runs (its turns), oldest first."""
        async with using_store(self.store) as store:
            return await self._runs(store)

    async def _runs(self, store: RunStore) -> list[RunRecord]:
        found: list[RunRecord] = []
        while True:
            page = await store.list_runs(RunFilter(conversation=self.id, tenant=self.tenant,
                                                   limit=_PAGE, offset=len(found)))
            found.extend(page)
            if len(page) < _PAGE:
                break
        if self.user is not None:
            found = [r for r in found if r.user == self.user]
        found.sort(key=lambda r: (r.created_at, r.run_id))
        return found

    async def messages(self) -> list[Message]:
        """The history the next turn starts from: every run's messages, oldest first, as
        :meth:`send` would give them to the model (without the agent's instructions)."""
        async with using_store(self.store) as store:
            runs = await self._runs(store)
            journals = await store.read_journals([r.run_id for r in runs])
        return [m for r in runs if r.run_id in journals
                for m in messages_of(ConversationTurn(record=r, status=r.status,
                                                      entries=journals[r.run_id]))]

    # ---------------------------------------------------------------------------- writing

    async def send(self, agent: Runs[Any], text: str,
                   **options: Unpack[SendOptions]) -> RunResult[Any]:
        """Run the next turn: ``agent.run(text, conversation=self.id)`` with this
        conversation's store, tenant and user. ``options``: :class:`SendOptions`."""
        for given in ("store", "tenant", "user", "conversation"):
            if given in options:
                raise UserError(f"Conversation.send() takes {given}= from the conversation; "
                                f"give it to Conversation(...) instead.")
        return await agent.run(text, store=self.store, conversation=self.id,
                               tenant=self.tenant, user=self.user, **options)

    async def fork(self, new_id: str | None = None, *, at: str | int | None = None
                   ) -> Conversation:
        """A new conversation (``new_id``, default a fresh id) holding copies of this one's
        runs up to and including ``at`` (a run id, or a 0-based turn number; default: every
        run). The copies are new runs with new ids and the same journals; the two
        conversations then go on independently. A copied run that had not finished is
        stored as ``cancelled`` (the copy never runs). Raises :class:`~keel.UserError` for an
        empty or unknown ``at``, and if ``new_id`` already names a conversation."""
        target = check_id("conversation", new_id) if new_id is not None else \
            f"c-{new_run_id()}"
        if target == self.id:
            raise UserError("a fork needs a new conversation id, not the one it forks.")
        async with using_store(self.store) as store:
            runs = await self._runs(store)
            chosen = runs[:_cut(runs, at) + 1]
            if not chosen:
                raise UserError(f"conversation {self.id!r} has no runs to fork.")
            if await store.list_runs(RunFilter(conversation=target, limit=1)):
                raise UserError(f"conversation {target!r} already exists; fork into a new "
                                "id. Nothing was copied.")
            journals = await store.read_journals([r.run_id for r in chosen])
            for record in chosen:
                await _copy(store, record, journals.get(record.run_id, []), target)
        return Conversation(target, store=self.store, tenant=self.tenant, user=self.user)

    async def delete(self) -> int:
        """Delete the conversation's runs with their journals and human tasks (a
        data-protection request; see docs/context.md for what is and is not removed).
        Returns how many runs were deleted. With a tenant, only that tenant's runs go; as an
        operator (no tenant), the runs of every tenant that carry the id."""
        async with using_store(self.store) as store:
            owners = Conversation(self.id, store=store, tenant=self.tenant)
            runs = await owners._runs(store)  # every user's: another user's runs stop it
            if self.user is not None and any(r.user != self.user for r in runs):
                raise UserError(f"conversation {self.id!r} holds runs of another user; "
                                "nothing was deleted.")
            tenants = {self.tenant} if self.tenant is not None else {r.tenant for r in runs}
            deleted = 0
            for tenant in sorted(tenants, key=lambda t: (t is not None, t or "")):
                deleted += await store.delete_conversation(self.id, tenant=tenant)
        forget_rebuilt([r.run_id for r in runs])  # no copy of the user's text stays here
        return deleted


def _cut(runs: list[RunRecord], at: str | int | None) -> int:
    """The index of the last run a fork copies."""
    if at is None:
        return len(runs) - 1
    if isinstance(at, bool) or not isinstance(at, str | int):
        raise UserError(f"at= is a run id or a turn number, not {type(at).__name__}.")
    if isinstance(at, int):
        if not 0 <= at < len(runs):
            raise UserError(f"at={at} is not a turn of the conversation (it has "
                            f"{len(runs)}: 0 to {len(runs) - 1}).")
        return at
    for i, record in enumerate(runs):
        if record.run_id == at:
            return i
    raise UserError(f"run {at[:200]!r} is not a run of this conversation; `keel runs list "
                    "--conversation ID` lists them.")


async def _copy(store: RunStore, record: RunRecord, entries: list[Any], target: str) -> None:
    """One run copied into conversation ``target`` under a new id (finished: never runs)."""
    now = time.time()
    status = record.status if record.status in TERMINAL_STATUSES else "cancelled"
    copy = RunRecord(
        run_id=new_run_id(), agent=record.agent, status=status, input=record.input,
        created_at=record.created_at, updated_at=now, target=record.target,
        output=record.output, error=record.error, usage=dict(record.usage),
        metadata={**record.metadata, "copied_from": record.run_id},
        tenant=record.tenant, user=record.user, conversation=target)
    await store.create_run(copy.with_status("failed", error={
        "type": "CopyIncomplete", "message": f"copying run {record.run_id} did not finish",
        "step_key": None, "retryable": False}))
    await store.finish_run(copy, entries)
