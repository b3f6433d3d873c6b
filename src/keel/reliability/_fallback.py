"""Fallbacks: another model when one fails (:class:`FallbackModel`), and the agent-level chain
agent → simpler agent → template answer → a person (:class:`FallbackChain`).

:class:`FallbackModel` is a model wrapping a chain of models. A request goes to the first
link; a failure another endpoint may not share (by default :func:`falls_back`: a retryable
:class:`~keel.ModelError` such as a 429, a 5xx or a timeout, an open
:class:`~keel.CircuitOpen` breaker, :class:`~keel.RateLimited`, :class:`~keel.BulkheadFull`)
moves on to the next link; any other failure (a 400 about the request itself, a signal) is
raised at once. The link that answered is recorded in the response's ``provider_details``
(``{"fallback": {"link": 1, "model": ..., "failed": [...]}}``), which the model step's journal
record keeps, and ``model`` names it. The wrapper's own ``name`` (``fallback(a,b)``) does not
depend on which link answered, so replay and divergence checks stay stable.

The agent's middleware (the default Retry and CircuitBreaker) wraps the chain as a whole. To
retry or break each link on its own, give the chain its own ``middleware``: each link's
request goes through it with that link as the model, so a ``CircuitBreaker`` keys
``model:<link>`` and an open one skips that link at once::

    model = FallbackModel("openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest",
                          middleware=[Retry(RetryPolicy(max_attempts=2)), CircuitBreaker()])

Those per-link attempts are not journaled one by one (the Model seam carries no run), only
the answer, with the failures before it. Streaming falls back only before the first event.

:class:`FallbackChain` runs whole agents. See its docstring for how it resumes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from keel.core import (
    BudgetExceeded,
    BulkheadFull,
    CircuitOpen,
    ConfigError,
    DeadlineExceeded,
    Divergence,
    Escalate,
    KeelError,
    Message,
    ModelError,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    RateLimited,
    ResponseDone,
    RunCancelled,
    RunError,
    RunNotFound,
    Signal,
    ToolSpec,
    UnknownOutcome,
    UserError,
    new_run_id,
)
from keel.models import FunctionModel, Model, parse_model_id, resolve_model
from keel.runtime import (
    Agent,
    EscalationPolicy,
    Middleware,
    MiddlewareStack,
    ModelRequestInput,
    RunResult,
    using_store,
)
from keel.store import RunStore

#: ``when(error) -> bool``: should this failure move on to the next link?
FallbackWhen: TypeAlias = Callable[[BaseException], bool]
#: A template answer: fixed text, or ``template(input, error) -> str``.
Template: TypeAlias = "str | Callable[[str, BaseException], str]"

_ERROR_CHARS = 300


def falls_back(exc: BaseException) -> bool:
    """The default ``when`` of :class:`FallbackModel`: failures another endpoint may not
    share. Retryable model errors (429, 5xx, timeouts, broken connections), open breakers,
    rate limits and full bulkheads, and a bare ``TimeoutError``; never a signal, a
    non-retryable model error (a 400 about the request) or a bug."""
    if isinstance(exc, Signal):
        return False
    if isinstance(exc, CircuitOpen | RateLimited | BulkheadFull):
        return True
    if isinstance(exc, ModelError):
        return exc.retryable
    return isinstance(exc, TimeoutError)


def _error_text(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, KeelError) else str(exc)
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS - 1] + "…"


def _note(exc: BaseException, failures: Sequence[tuple[str, BaseException]]) -> None:
    for name, failed in failures:
        exc.add_note(f"fallback link {name} failed first: {_error_text(failed)}")


def _link_name(link: str | Model, field: str) -> str:
    if isinstance(link, Model):
        return link.name
    if not isinstance(link, str):
        raise ConfigError(field, f"expected a model id string or a keel Model, got "
                          f"{type(link).__name__}")
    try:
        parse_model_id(link)
    except UserError as exc:
        raise ConfigError(field, exc.message) from None
    return link


class FallbackModel(Model):
    """A model that tries ``primary``, then each of ``fallbacks`` in order, on failures
    ``when`` accepts (default :func:`falls_back`). Links are model ids (resolved with
    :func:`keel.models.resolve_model` on the first request, all at once, so a missing key
    shows up then rather than during an outage) or :class:`~keel.Model` objects.
    ``middleware`` wraps each link's request on its own (per-link retries and breakers)."""

    def __init__(self, primary: str | Model, *fallbacks: str | Model,
                 when: FallbackWhen = falls_back, middleware: Sequence[Middleware] = ()) -> None:
        if not fallbacks:
            raise ConfigError("fallbacks", "give at least one model to fall back to, e.g. "
                              "FallbackModel('openai:gpt-4o-mini', 'anthropic:claude-…')")
        names = [_link_name(primary, "primary")]
        names += [_link_name(m, f"fallbacks[{i}]") for i, m in enumerate(fallbacks)]
        if not callable(when):
            raise ConfigError("when", f"must be a function of the error, not {when!r}")
        middleware = tuple(middleware)
        for i, mw in enumerate(middleware):
            if not isinstance(mw, Middleware):
                raise ConfigError(f"middleware[{i}]", f"expected a keel Middleware, got "
                                  f"{type(mw).__name__}")
        self.links: tuple[str | Model, ...] = (primary, *fallbacks)
        self.link_names: tuple[str, ...] = tuple(names)
        self.name = f"fallback({','.join(names)})"
        self.when = when
        self.middleware = middleware
        self._stack = MiddlewareStack(middleware) if middleware else None
        self._models: tuple[Model, ...] | None = None

    def __repr__(self) -> str:
        return f"FallbackModel({', '.join(map(repr, self.link_names))})"

    def models(self) -> tuple[Model, ...]:
        """The links as models (resolved on first use)."""
        if self._models is None:
            self._models = tuple(resolve_model(link) for link in self.links)
        return self._models

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        failures: list[tuple[str, BaseException]] = []
        models = self.models()
        last = len(models) - 1
        for i, (name, model) in enumerate(zip(self.link_names, models, strict=True)):
            try:
                response = await self._call(i, model, messages, tools, settings)
            except Exception as exc:
                if i == last or not self.when(exc):
                    _note(exc, failures)
                    raise
                failures.append((name, exc))
                continue
            return self._mark(response, i, failures)
        raise AssertionError("unreachable: the last link raises or answers")

    async def _call(self, i: int, model: Model, messages: Sequence[Message],
                    tools: Sequence[ToolSpec], settings: ModelSettings | None) -> ModelResponse:
        stack = self._stack
        if stack is None or stack.bare_model:
            return await model.request(messages, tools, settings)
        inp = ModelRequestInput(run_id="", step_key=f"{self.name}#{i}", agent="", model=model,
                                messages=messages, tools=tools,
                                settings=settings or ModelSettings())
        return await stack.model_request(inp)

    def _mark(self, response: ModelResponse, i: int,
              failures: Sequence[tuple[str, BaseException]]) -> ModelResponse:
        name = self.link_names[i]
        info = {"link": i, "model": name,
                "failed": [{"model": n, "error": _error_text(e)} for n, e in failures]}
        details = {**(response.provider_details or {}), "fallback": info}
        return replace(response, model=response.model or name, provider_details=details)

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[ModelStreamEvent]:
        failures: list[tuple[str, BaseException]] = []
        models = self.models()
        last = len(models) - 1
        for i, (name, model) in enumerate(zip(self.link_names, models, strict=True)):
            events = model.stream(messages, tools, settings)
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except Exception as exc:
                await _close(events)
                if i == last or not self.when(exc):
                    _note(exc, failures)
                    raise
                failures.append((name, exc))
                continue
            try:  # from here on this link owns the stream: no falling back mid-answer
                yield self._mark_event(first, i, failures)
                async for event in events:
                    yield self._mark_event(event, i, failures)
            finally:
                await _close(events)
            return

    def _mark_event(self, event: ModelStreamEvent, i: int,
                    failures: Sequence[tuple[str, BaseException]]) -> ModelStreamEvent:
        if isinstance(event, ResponseDone):
            return ResponseDone(response=self._mark(event.response, i, failures))
        return event

    async def aclose(self) -> None:
        for model in self._models or ():
            await model.aclose()


async def _close(events: AsyncIterator[ModelStreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


# ------------------------------------------------------------------------ the agent chain


def link_failed(exc: BaseException) -> bool:
    """The default ``when`` of :class:`FallbackChain`: any :class:`~keel.RunError` except
    those the next link cannot fix: :class:`~keel.Divergence` (the code changed under a
    recorded run), :class:`~keel.UnknownOutcome` (a side effect may have happened: a person
    must look), a passed deadline and a cancellation. Signals (a run waiting for a person)
    and bugs are never failures of a link."""
    if not isinstance(exc, RunError):
        return False
    return not isinstance(exc, Divergence | UnknownOutcome | DeadlineExceeded | RunCancelled)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFailure:
    """A link of a :class:`FallbackChain` whose run failed."""

    link: str
    run_id: str
    error: BaseException


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainResult:
    """What a :class:`FallbackChain` returns: which link answered (``link``, the name of its
    agent; ``index`` 0 for the primary), its ``output``, the run that produced it, every run
    the chain started in order (``run_ids``) and the failures of the links before it.
    ``result`` is the answering run's :class:`~keel.RunResult`, or None when that run had
    completed before (a re-run with the same ``chain_id``; ``output`` is then as stored)."""

    link: str
    index: int
    output: Any
    run_id: str
    run_ids: tuple[str, ...]
    failures: tuple[LinkFailure, ...] = ()
    result: RunResult[Any] | None = None


@dataclass(frozen=True, kw_only=True)
class _Exhausted(EscalationPolicy):
    """Escalates every input: the human link's only step is the escalation."""

    reason: str = "every automated link of the fallback chain failed"

    def check_input(self, text: str) -> Escalate | None:
        return Escalate(self.reason, trigger="fallback_exhausted", queue=self.queue)


_GUIDANCE = re.compile(r"^\[A human reviewed this conversation and says: (.*)\]$", re.DOTALL)


def _human_reply(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> str:
    """The human link's 'model': after a person resumes the escalation with a note, the note
    is the answer."""
    for message in reversed(messages):
        if message.role == "user":
            found = _GUIDANCE.match(message.text)
            return found.group(1) if found else message.text
    return ""


class FallbackChain:
    """Run ``agent``; if its run fails, run each of ``fallbacks`` (simpler agents: a cheaper
    model, no tools) on the same input; then answer from ``template`` (text, or
    ``template(input, error) -> str``) if given; then hand the request to a person
    (``human=True``): a run whose only step is an escalation with trigger
    ``fallback_exhausted`` and a packet in ``queue``, whose reason lists the failed links.

    Every link is its own journaled run in the same store; a link's failure is any error
    ``when`` accepts (default :func:`link_failed`; with ``budget_falls_through=False`` a
    :class:`~keel.BudgetExceeded` is raised instead of moving on). A run that suspends
    (approval, escalation) stops the chain: the signal is raised as from ``Agent.run``.

    Resuming: pass ``chain_id=`` and link *i* runs as ``{chain_id}-{i}``. Calling
    :meth:`run` again with the same ``chain_id`` (after a crash, or once a person resolved
    the escalation) goes through the links again: a link whose run completed answers with its
    stored output (the human link completes when a person answers with ``keel escalations
    resolve --answer``), a failed or cancelled one counts as failed without running again,
    and one still running or suspended is resumed (``Agent.resume``). Without ``chain_id``
    every call starts fresh runs. ``deadline`` bounds the whole chain (each link's run gets
    the same absolute deadline).
    """

    def __init__(self, agent: Agent[Any], *fallbacks: Agent[Any],
                 template: Template | None = None, human: bool = True,
                 queue: str | None = None, when: FallbackWhen = link_failed,
                 budget_falls_through: bool = True) -> None:
        agents = (agent, *fallbacks)
        for i, a in enumerate(agents):
            if not isinstance(a, Agent):
                field = "agent" if i == 0 else f"fallbacks[{i - 1}]"
                raise ConfigError(field, f"expected a keel Agent, got {type(a).__name__}")
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ConfigError("fallbacks", f"each link needs its own agent name (they name "
                              f"the runs), got {names}")
        if template is not None and not (isinstance(template, str) or callable(template)):
            raise ConfigError("template", "must be text, a function (input, error) -> str, "
                              "or None")
        if isinstance(template, str) and not template.strip():
            raise ConfigError("template", "must not be empty")
        if not isinstance(human, bool):
            raise ConfigError("human", f"must be True or False, not {human!r}")
        if not callable(when):
            raise ConfigError("when", f"must be a function of the error, not {when!r}")
        if not isinstance(budget_falls_through, bool):
            raise ConfigError("budget_falls_through", f"must be True or False, not "
                              f"{budget_falls_through!r}")
        if not template and not human and not fallbacks:
            raise ConfigError("fallbacks", "a chain needs something after the agent: a "
                              "fallback agent, a template or human=True")
        self.agents: tuple[Agent[Any], ...] = agents
        self.template = template
        self.human = human
        self.queue = EscalationPolicy(queue=queue).queue if queue is not None else None
        self.when = when
        self.budget_falls_through = budget_falls_through
        self._failure: BaseException | None = None

    @property
    def link_names(self) -> tuple[str, ...]:
        """The links' agent names, in order (the template and human links are named after
        the primary agent: ``<name>-template``, ``<name>-human``)."""
        names = [a.name for a in self.agents]
        if self.template is not None:
            names.append(f"{self.agents[0].name}-template")
        if self.human:
            names.append(f"{self.agents[0].name}-human")
        return tuple(names)

    def _falls_through(self, exc: BaseException) -> bool:
        if isinstance(exc, BudgetExceeded) and not self.budget_falls_through:
            return False
        return self.when(exc)

    async def run(self, input: str, *, store: RunStore | str | None = None,
                  chain_id: str | None = None, deps: Any = None,
                  deadline: float | datetime | None = None) -> ChainResult:
        """Run the chain; see the class docstring. Raises the last link's error (with notes
        naming the failed runs) when every link failed and there is no human link, and
        ``Escalate`` when the request went to a person."""
        if not isinstance(input, str):
            raise UserError(f"chain input must be a string, got {type(input).__name__}")
        until: datetime | None = None
        if isinstance(deadline, datetime) or deadline is None:
            until = deadline
        else:
            until = datetime.now(UTC) + timedelta(seconds=float(deadline))
        failures: list[LinkFailure] = []
        run_ids: list[str] = []
        async with using_store(store) as opened:
            links = self._links(input, failures)
            for i, (name, build) in enumerate(links):
                run_id = f"{chain_id}-{i}" if chain_id is not None else new_run_id()
                run_ids.append(run_id)
                agent = build()
                try:
                    done = await self._run_link(agent, opened, input, run_id, deps, until,
                                                fresh=chain_id is None)
                except Signal as signal:
                    for f in failures:
                        signal.add_note(f"fallback link {f.link} (run {f.run_id}) failed: "
                                        f"{_error_text(f.error)}")
                    raise
                except Exception as exc:
                    if i == len(links) - 1 or not self._falls_through(exc):
                        for f in failures:
                            exc.add_note(f"fallback link {f.link} (run {f.run_id}) failed "
                                         f"first: {_error_text(f.error)}")
                        raise
                    failures.append(LinkFailure(link=name, run_id=run_id, error=exc))
                    continue
                output, result = done
                return ChainResult(link=name, index=i, output=output, run_id=run_id,
                                   run_ids=tuple(run_ids), failures=tuple(failures),
                                   result=result)
        raise AssertionError("unreachable: the last link raises or answers")

    def _links(self, input: str,
               failures: list[LinkFailure]) -> list[tuple[str, Callable[[], Agent[Any]]]]:
        links: list[tuple[str, Callable[[], Agent[Any]]]] = [
            (a.name, _const(a)) for a in self.agents]
        base = self.agents[0].name
        template = self.template
        if template is not None:
            def build_template() -> Agent[Any]:
                error = failures[-1].error if failures else RunError("no link ran")
                text = template if isinstance(template, str) else None

                def answer(messages: list[Message], tools: list[ToolSpec],
                           settings: ModelSettings) -> str:
                    if text is not None:
                        return text
                    assert callable(template)
                    return str(template(input, error))

                return Agent(f"{base}-template", model=FunctionModel(answer,
                             name="keel:template"), escalation=EscalationPolicy.off(),
                             default_middleware=False)

            links.append((f"{base}-template", build_template))
        if self.human:
            def build_human() -> Agent[Any]:
                tried = "; ".join(f"{f.link} (run {f.run_id}): {_error_text(f.error)}"
                                  for f in failures) or "no link answered"
                reason = f"every automated link failed: {tried}"
                policy = (_Exhausted(reason=reason) if self.queue is None
                          else _Exhausted(reason=reason, queue=self.queue))
                return Agent(f"{base}-human", model=FunctionModel(_human_reply,
                             name="keel:human"), escalation=policy, default_middleware=False)

            links.append((f"{base}-human", build_human))
        return links

    async def _run_link(self, agent: Agent[Any], store: RunStore, input: str, run_id: str,
                        deps: Any, deadline: datetime | None, *,
                        fresh: bool) -> tuple[Any, RunResult[Any] | None]:
        if not fresh:
            try:
                record = await store.get_run(run_id)
            except RunNotFound:
                pass
            else:
                if record.status == "completed":
                    return record.output, None
                if record.status in ("failed", "cancelled"):
                    raise _stored_error(record.error, run_id)
                result = await agent.resume(run_id, store=store, deps=deps)
                return result.output, result
        result = await agent.run(input, store=store, run_id=run_id, deps=deps,
                                 deadline=deadline)
        return result.output, result


def _stored_error(error: Any, run_id: str) -> RunError:
    """A failed link's error as recorded (a re-run of the chain does not run it again); the
    kinds that stop the chain keep their class, so the re-run stops where the first did."""
    data = error if isinstance(error, dict) else {}
    kind = str(data.get("type") or "RunError")
    message = str(data.get("message") or "the run failed")
    step = data.get("step_key")
    where: dict[str, Any] = {"run_id": run_id,
                             "step_key": step if isinstance(step, str) else None}
    if kind == "Divergence":
        return Divergence(message, recorded={}, requested={}, **where)
    stops: dict[str, type[RunError]] = {"UnknownOutcome": UnknownOutcome,
                                        "DeadlineExceeded": DeadlineExceeded,
                                        "RunCancelled": RunCancelled}
    if kind in stops:
        return stops[kind](message, **where)
    if kind == "BudgetExceeded":
        return BudgetExceeded(message, limit="", used=0.0, allowed=0.0, **where)
    return RunError(f"{kind}: {message}", **where)


def _const(agent: Agent[Any]) -> Callable[[], Agent[Any]]:
    return lambda: agent
