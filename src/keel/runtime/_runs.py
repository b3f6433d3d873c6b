"""What agents and flows share: starting, resuming and the blocking wrappers.

Every entry point takes its options through one typed mechanism: :class:`RunOptions` (a new
run) and :class:`ResumeOptions` (a resumed one) are ``TypedDict``\\ s unpacked into keyword
arguments (``**options: Unpack[RunOptions]``), so a misspelt option (``stor=``) is a type
error for mypy or pyright, and a clear :class:`~keel.UserError` at run time.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypedDict, TypeVar, Unpack

from keel.core import ConfigError, RunEvent, UserError
from keel.runtime._budget import Budget
from keel.runtime._journal import Durability
from keel.runtime._middleware import Middleware
from keel.runtime._result import RunResult
from keel.runtime._runner import Launch, Runnable, blocking, launch
from keel.store import RunStore, check_id

OutputT = TypeVar("OutputT")


class ResumeOptions(TypedDict, total=False):
    """Options of :meth:`~keel.Agent.resume` and ``resume_sync`` (and of a new run)."""

    #: The run store: a :class:`~keel.RunStore`, a URL (``sqlite:///runs.db``,
    #: ``postgresql://...``), or None for ``KEEL_STORE`` / ``.keel/runs.db``.
    store: RunStore | str | None
    #: Your dependencies, handed to tools as ``ctx.deps`` (never journaled).
    deps: Any
    #: Called with every :class:`~keel.core.RunEvent` of the run, as it happens.
    on_event: Callable[[RunEvent], None] | None


class RunOptions(ResumeOptions, total=False):
    """Options of ``run``, ``run_sync`` and ``stream``: everything :class:`ResumeOptions`
    takes, and what only a new run can say."""

    #: The new run's id (default: a fresh one); an id already in the store is refused.
    run_id: str | None
    #: Stored with the run: who or what it is for (a ticket, a customer).
    target: str | None
    #: Seconds from now, or an aware datetime: bounds the whole run, across restarts.
    deadline: float | datetime | None
    #: Whose run it is: the tenant id (stored with the run, filtered on by the store, read by
    #: the guards as ``ctx.tenant``); kept by resumes, forks, sub-runs and exports.
    tenant: str | None
    #: The user (within the tenant) the run acts for, likewise.
    user: str | None
    #: The conversation (thread) this run is a turn of: an agent's run starts from the
    #: history of the conversation's earlier runs (read from the store, journaled), and
    #: ``keel runs list --conversation`` lists them. Only the same tenant and user may
    #: continue a conversation.
    conversation: str | None
    #: Stored in the run record's ``metadata`` (a JSON object of at most 16 KB, e.g. the
    #: event that started the run); keel's own keys (``model``, ``pattern``) win a clash.
    metadata: Mapping[str, Any] | None


class FlowOptions(TypedDict, total=False):
    """What every flow and pattern (``Flow``, ``Workflow``, ``Supervisor``, ``Planner``,
    ``GroupChat``, ``Marketplace``, ``HandoffTeam``, ``Reflection``, ``Router``) takes, the
    same way: ``GroupChat("chat", peers, budget=Budget(max_steps=40), durability="always",
    middleware=[audit])``."""

    #: The whole run's budget (sub-agents run with shares of it).
    budget: Budget | None
    #: When journal records are committed (:class:`~keel.Durability`; ``"balanced"``).
    durability: Durability | str | None
    #: Middleware that sees the flow's run start and end (``on_run_start``/``on_run_end``).
    middleware: Iterable[Middleware]


FLOW_OPTIONS = frozenset(FlowOptions.__required_keys__ | FlowOptions.__optional_keys__)
RUN_OPTIONS = frozenset(RunOptions.__required_keys__ | RunOptions.__optional_keys__)
RESUME_OPTIONS = frozenset(ResumeOptions.__required_keys__ | ResumeOptions.__optional_keys__)


def check_options(what: str, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Refuse keyword arguments that are not options of ``what`` (a typo would otherwise be
    a ``TypeError`` deep inside, or silently mean something else)."""
    if options.keys() <= allowed:  # the common case, checked in C
        return
    unknown = sorted(set(options) - allowed)
    name = unknown[0]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}=?)" if close else ""
    raise UserError(f"{what}() got an unknown option {name}={hint}; its options are "
                    f"{', '.join(f'{k}=' for k in sorted(allowed))}.")


def check_input(noun: str, input: object, *, empty: bool = False) -> str:
    """A run's input: a string, with something in it unless ``empty`` (an agent given an
    empty prompt would call the model with nothing)."""
    if not isinstance(input, str):
        raise UserError(f"{noun} input must be a string, got {type(input).__name__}")
    if not empty and not input.strip():
        raise UserError(f"{noun} input is empty; give the {noun} something to work on "
                        "(a question, a task, a document).")
    return input


class Runs(Generic[OutputT]):
    """``run``/``resume`` and their blocking twins, for an :class:`Agent` or a flow (the
    subclass is a :class:`~keel.runtime._runner.Runnable`)."""

    #: How error messages name what runs.
    noun: ClassVar[str] = "agent"
    #: Whether a blank input may start a run (an agent refuses one: a flow's body decides).
    empty_input: ClassVar[bool] = False

    def _runnable(self) -> Runnable:
        return self  # type: ignore[return-value]  # Agent and Flow implement Runnable

    def check_input(self, input: object) -> str:
        """``input`` if it may start a run of this agent or flow, else a ``UserError`` saying
        why (not a string; blank, for an agent). :meth:`run` checks it the same way; callers
        that must open or create something first (the CLI's store) check it before."""
        return check_input(self.noun, input, empty=self.empty_input)

    async def run(self, input: str, **options: Unpack[RunOptions]) -> RunResult[OutputT]:
        """Run to completion and return the result. Failures raise a ``RunError`` carrying the
        run id; the run's journal stays in the store, so the run can be resumed. A run that
        waits for a person raises ``ApprovalRequired`` or ``Escalate`` (status
        ``suspended``). Options: :class:`RunOptions` (``store``, ``run_id``, ``deps``,
        ``target``, ``on_event``, ``deadline``, ``tenant``, ``user``, ``conversation``,
        ``metadata``)."""
        check_options("run", options, RUN_OPTIONS)
        how = new_run(self, input, options)
        return await launch(self._runnable(), options.get("store"), how)

    async def resume(self, run_id: str, **options: Unpack[ResumeOptions]) -> RunResult[OutputT]:
        """Continue a run whose process stopped: recorded steps are not executed again.
        Options: :class:`ResumeOptions` (``store``, ``deps``, ``on_event``)."""
        check_options("resume", options, RESUME_OPTIONS)
        how = Launch(resume_id=run_id, deps=options.get("deps"), emit=options.get("on_event"))
        return await launch(self._runnable(), options.get("store"), how)

    def run_sync(self, input: str, **options: Unpack[RunOptions]) -> RunResult[OutputT]:
        """Blocking wrapper around :meth:`run`; refuses to run inside an event loop."""
        check_options("run_sync", options, RUN_OPTIONS)
        return blocking("run_sync", lambda: self.run(input, **options))

    def resume_sync(self, run_id: str, **options: Unpack[ResumeOptions]) -> RunResult[OutputT]:
        """Blocking wrapper around :meth:`resume`; refuses to run inside an event loop."""
        check_options("resume_sync", options, RESUME_OPTIONS)
        return blocking("resume_sync", lambda: self.resume(run_id, **options))


def new_run(runs: Runs[Any], input: object, options: RunOptions, *,
            streaming: bool = False) -> Launch:
    """How to start a new run with ``options`` (checked: the input, the deadline, the tenant
    and the user)."""
    tenant, user = options.get("tenant"), options.get("user")
    conversation = options.get("conversation")
    return Launch(input=check_input(runs.noun, input, empty=runs.empty_input),
                  run_id=options.get("run_id"),
                  deps=options.get("deps"), target=options.get("target"),
                  emit=options.get("on_event"), streaming=streaming,
                  deadline_at=deadline_from(options.get("deadline")),
                  tenant=None if tenant is None else check_id("tenant", tenant),
                  user=None if user is None else check_id("user", user),
                  conversation=None if conversation is None
                  else check_id("conversation", conversation),
                  metadata=check_metadata(options.get("metadata")))


#: The largest ``metadata=`` a new run takes, as compact JSON.
MAX_METADATA_BYTES = 16_384


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """``metadata=`` as a plain JSON object, or a ``UserError`` saying what is wrong."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise UserError("metadata= must be a mapping with string keys (a JSON object), not "
                        f"{type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"metadata= must hold JSON values only ({exc})") from None
    if len(text) > MAX_METADATA_BYTES:
        raise UserError(f"metadata= is {len(text):,} bytes as JSON; a run takes at most "
                        f"{MAX_METADATA_BYTES:,} (store the rest elsewhere and keep its id)")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def deadline_from(deadline: float | datetime | None) -> float | None:
    """A deadline as epoch seconds: ``deadline`` seconds from now, or an aware datetime."""
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise ConfigError("deadline", "use a timezone-aware datetime (or seconds from now)")
        return deadline.timestamp()
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0:
        raise ConfigError("deadline", f"must be seconds from now (> 0) or a datetime, not "
                          f"{deadline!r}")
    return time.time() + float(deadline)
