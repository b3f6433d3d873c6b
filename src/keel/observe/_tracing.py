"""OpenTelemetry traces of runs, following the GenAI semantic conventions.

:class:`Tracing` is middleware. With an SDK tracer provider configured (``setup_tracing``,
or the application's own), each run is a trace:

* the run: ``invoke_agent <agent>`` (or ``invoke_workflow <flow>`` for a flow's stack);
* each live model request: ``chat <model>`` (``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.usage.*``, ``gen_ai.response.finish_reasons``);
* each live tool call: ``execute_tool <tool>`` (``gen_ai.tool.name``,
  ``gen_ai.tool.call.id``), current while the tool runs, so ``opentelemetry.propagate
  .inject`` (or :func:`inject_trace_headers` on an httpx client) puts ``traceparent`` on
  the tool's outgoing requests;
* each sub-run of a flow (``FlowContext.run_agent`` / ``run_flow``, a supervisor's worker):
  ``invoke_agent`` / ``invoke_workflow`` nested where it ran;
* guard decisions (``keel.guard`` events), suspensions for approvals and escalations
  (``keel.run.suspended``) and resumes (``keel.run.resumed``) as span events.

The run's span context is stored with the run (its metadata, ``trace.traceparent``), so a
resumed run, in this process or another, continues the same trace: its span is a child of
the first execution's run span, with a link to it. Replayed steps are not spanned again.

Without an SDK (the API's default no-op provider) every hook returns after one check.
Message content is not recorded unless ``capture_content=True``; then it passes through
``scrub`` first.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from keel.core import (
    ApprovalRequired,
    ConfigError,
    Escalate,
    Message,
    ModelResponse,
    RunError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    redact_text,
)
from keel.runtime import (
    AgentInput,
    GuardDecision,
    GuardInput,
    Middleware,
    ModelNext,
    ModelRequestInput,
    RunEndInput,
    RunStartInput,
    SubRunInput,
    SubRunNext,
    ToolCallInput,
    ToolNext,
)
from keel.tools import ToolResult

#: The run record's metadata key holding the run span's W3C trace context.
TRACE_METADATA = "trace"
_SCOPE = "keel"
_W3C = TraceContextTextMapPropagator()
#: Longest content attribute kept (characters) when content capture is on.
MAX_CONTENT = 8_000
#: Longest ``gen_ai.input.messages`` kept (characters): the latest messages that fit.
MAX_MESSAGES = 64_000

Scrub = Callable[[str], str]
_Retrying = ModelRequestInput | ToolCallInput


@dataclass(slots=True)
class _Run:
    span: Span
    token: Token[otel_context.Context] | None


class Tracing(Middleware):
    """Spans for runs, model requests, tool calls and sub-runs (see the module doc).

    ``tracer_provider``: the provider to use (default: OpenTelemetry's global one, as set
    by :func:`keel.observe.setup_tracing` or the application). ``capture_content``: record
    messages, tool arguments and results on the spans (``gen_ai.input.messages`` ...),
    each text passed through ``scrub`` (default: keel's secret masking; ``keel.defaults()``
    passes the data policy's scrubber for ``logs``)."""

    observes_flows = True  # a flow whose agents trace is traced as a whole

    def __init__(self, *, capture_content: bool = False, scrub: Scrub | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        if not isinstance(capture_content, bool):
            raise ConfigError("Tracing.capture_content", "must be True or False")
        if scrub is not None and not callable(scrub):
            raise ConfigError("Tracing.scrub", f"must be a function str -> str, got "
                              f"{type(scrub).__name__}")
        if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
            raise ConfigError("Tracing.tracer_provider", "expected an OpenTelemetry "
                              f"TracerProvider, got {type(tracer_provider).__name__}")
        self.capture_content = capture_content
        self.scrub: Scrub = scrub or redact_text
        self._provider = tracer_provider
        self._from_env = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
        self._seen: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._agents: set[str] = set()
        self._runs: dict[str, _Run] = {}

    def __repr__(self) -> str:
        return f"<Tracing capture_content={self.capture_content}>"

    # ---------------------------------------------------------------------------- helpers

    def tracer(self) -> Tracer | None:
        """The tracer to use, or None when no SDK is configured (nothing is recorded)."""
        provider = self._provider
        if provider is None:
            # The global provider as set by trace.set_tracer_provider(), read without
            # get_tracer_provider()'s environment lookup on every step (a µs per call);
            # the OTEL_PYTHON_TRACER_PROVIDER route is taken when that is set.
            provider = getattr(trace, "_TRACER_PROVIDER", None)
            if provider is None:
                if not self._from_env:
                    return None
                provider = trace.get_tracer_provider()
        if provider is not self._seen:
            self._seen = provider
            self._tracer = None if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider) \
                else provider.get_tracer(_SCOPE)
        return self._tracer

    def _text(self, text: str) -> str:
        out = self.scrub(text)
        return out if len(out) <= MAX_CONTENT else f"{out[:MAX_CONTENT]}…"

    # -------------------------------------------------------------------------- the run

    def on_agent(self, inp: AgentInput) -> None:
        self._agents.add(inp.agent)

    async def on_run_start(self, inp: RunStartInput) -> Mapping[str, Any] | None:
        tracer = self.tracer()
        if tracer is None:
            return None
        base = otel_context.get_current()
        links: list[Link] = []
        stored = inp.metadata.get(TRACE_METADATA) if inp.resumed else None
        if isinstance(stored, Mapping):
            parent = _W3C.extract({k: v for k, v in stored.items() if isinstance(v, str)})
            first = trace.get_current_span(parent).get_span_context()
            if first.is_valid:
                base = parent
                links.append(Link(first, {"keel.link": "first_execution"}))
        agent = inp.agent in self._agents
        name = f"invoke_agent {inp.agent}" if agent else f"invoke_workflow {inp.agent}"
        attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent" if agent
                                 else "invoke_workflow", "keel.run.id": inp.run_id,
                                 "gen_ai.conversation.id": inp.run_id,
                                 "keel.run.resumed": inp.resumed}
        attrs["gen_ai.agent.name" if agent else "gen_ai.workflow.name"] = inp.agent
        if inp.tenant is not None:  # traces can be cut by tenant, as metrics and stats
            attrs["keel.tenant"] = inp.tenant
        if inp.user is not None:
            attrs["keel.user"] = inp.user
        if self.capture_content and isinstance(inp.input, str):
            attrs["keel.run.input"] = self._text(inp.input)
        span = tracer.start_span(name, context=base, kind=SpanKind.INTERNAL,
                                 attributes=attrs, links=links)
        if inp.resumed:
            span.add_event("keel.run.resumed")
        ctx = trace.set_span_in_context(span, base)
        state = _Run(span=span, token=otel_context.attach(ctx))
        self._runs[inp.run_id] = state
        if links:  # a resume that continues the stored trace: nothing new to store
            return None
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=ctx)
        return {TRACE_METADATA: carrier} if carrier else None

    async def on_run_end(self, inp: RunEndInput) -> None:
        state = self._runs.pop(inp.run_id, None)
        if state is None:
            return
        span = state.span
        span.set_attribute("keel.run.status", inp.status)
        error = inp.error
        if isinstance(error, ApprovalRequired):
            span.add_event("keel.run.suspended", {"keel.wait": "approval",
                                                  "keel.approval.ids": list(error.approval_ids)})
        elif isinstance(error, Escalate):
            span.add_event("keel.run.suspended", {
                "keel.wait": "escalation", "keel.escalation.id": error.escalation_id or "",
                "keel.escalation.reason": self.scrub(error.reason or "")})
        elif inp.status == "failed" and error is not None:
            _fail(span, error, self.scrub)
        span.end()
        if state.token is not None:
            with contextlib.suppress(ValueError):  # ended in another context than it began
                otel_context.detach(state.token)

    async def wrap_sub_run(self, inp: SubRunInput, next: SubRunNext) -> Any:
        tracer = self.tracer()
        if tracer is None:
            return await next()
        agent = inp.kind == "agent"
        attrs = {"gen_ai.operation.name": "invoke_agent" if agent else "invoke_workflow",
                 "gen_ai.agent.name" if agent else "gen_ai.workflow.name": inp.name,
                 "keel.run.id": inp.run_id, "keel.path": inp.path}
        name = f"invoke_agent {inp.name}" if agent else f"invoke_workflow {inp.name}"
        with tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attrs,
                                          record_exception=False,
                                          set_status_on_exception=False) as span:
            try:
                return await next()
            except (ApprovalRequired, Escalate):
                span.add_event("keel.run.suspended")
                raise
            except BaseException as exc:
                _fail(span, exc, self.scrub)
                raise

    # ------------------------------------------------------------------ model and tools

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        tracer = self.tracer()
        if tracer is None:
            return await next(inp)
        provider, model = _provider_model(inp.model.name)
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                                 "gen_ai.request.model": model, "keel.step_key": inp.step_key,
                                 "keel.run.id": inp.run_id, "keel.agent": inp.agent}
        settings = inp.settings
        if settings.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            attrs["gen_ai.request.temperature"] = settings.temperature
        if self.capture_content:
            attrs["gen_ai.input.messages"] = self._messages(
                [m for m in inp.messages if m.role != "system"])
            system = [p.text for m in inp.messages if m.role == "system"
                      for p in m.parts if isinstance(p, TextPart)]
            if system:
                attrs["gen_ai.system_instructions"] = json.dumps(
                    [{"type": "text", "content": self._text(t)} for t in system])
        with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                          attributes=attrs, record_exception=False,
                                          set_status_on_exception=False) as span:
            try:
                response = await next(self._retries(span, inp))
            except BaseException as exc:
                _fail(span, exc, self.scrub)
                raise
            self._response(span, response)
            return response

    def _retries(self, span: Span, inp: _Retrying) -> Any:
        """``inp`` with an ``on_retry`` that also notes each failed attempt on the span."""
        if not span.is_recording():
            return inp
        hook = inp.on_retry
        scrub = self.scrub

        async def on_retry(attempt: int, error: str, delay: float) -> None:
            span.add_event("keel.retry", {"keel.attempt": attempt,
                                          "error.type": error.partition(":")[0] or "error",
                                          "keel.error": scrub(error)[:500],
                                          "keel.retry_in_s": round(delay, 3)})
            await hook(attempt, error, delay)

        return replace(inp, on_retry=on_retry)

    def _response(self, span: Span, response: ModelResponse) -> None:
        if not span.is_recording():
            return
        usage = response.usage
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if response.model:
            span.set_attribute("gen_ai.response.model",
                               _provider_model(response.model)[1])
        if response.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        if usage.cost_usd:
            span.set_attribute("keel.usage.cost_usd", usage.cost_usd)
        cache = (response.provider_details or {}).get("cache")
        if isinstance(cache, str):  # keel.observe.ModelCache's mark: "hit" or "miss"
            span.set_attribute("keel.cache", cache)
        if self.capture_content:
            span.set_attribute("gen_ai.output.messages",
                               json.dumps([self._message(response.message)]))

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        tracer = self.tracer()
        if tracer is None:
            return await next(inp)
        tool = inp.tool
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool",
                                 "gen_ai.tool.name": tool.name, "gen_ai.tool.type": "function",
                                 "keel.step_key": inp.step_key, "keel.run.id": inp.run_id,
                                 "keel.agent": inp.agent, "keel.tool.risk": tool.meta.risk}
        if inp.call_id:
            attrs["gen_ai.tool.call.id"] = inp.call_id
        if tool.meta.description:
            attrs["gen_ai.tool.description"] = tool.meta.description[:500]
        if self.capture_content:
            attrs["gen_ai.tool.call.arguments"] = self._text(inp.arguments)
        with tracer.start_as_current_span(f"execute_tool {tool.name}", kind=SpanKind.INTERNAL,
                                          attributes=attrs, record_exception=False,
                                          set_status_on_exception=False) as span:
            try:
                result = await next(self._retries(span, inp))
            except BaseException as exc:
                _fail(span, exc, self.scrub)
                raise
            failure = result.failure
            if failure is not None:
                span.set_attribute("error.type", failure.error_type)
                span.set_status(Status(StatusCode.ERROR, self.scrub(failure.message)[:500]))
            if self.capture_content:
                span.set_attribute("gen_ai.tool.call.result", self._text(result.content))
            return result

    # --------------------------------------------------------------------------- guards

    def on_guard_decision(self, inp: GuardInput, decision: GuardDecision) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.add_event("keel.guard", {
            "keel.guard.name": decision.guard or "", "keel.guard.place": inp.place,
            "keel.guard.action": decision.action, "keel.step_key": inp.step_key,
            "keel.guard.reason": self.scrub(decision.reason or "")[:500]})

    # -------------------------------------------------------------------------- content

    def _messages(self, messages: Sequence[Message]) -> str:
        """The messages as JSON text, the oldest left out past ``MAX_MESSAGES`` characters
        (a long run's history is not copied whole into every span)."""
        kept: list[str] = []
        size = 0
        for m in reversed(messages):
            one = json.dumps(self._message(m))
            if kept and size + len(one) > MAX_MESSAGES:
                break
            kept.append(one)
            size += len(one) + 1
        return f"[{','.join(reversed(kept))}]"

    def _message(self, message: Message) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        for p in message.parts:
            if isinstance(p, TextPart):
                parts.append({"type": "text", "content": self._text(p.text)})
            elif isinstance(p, ToolCallPart):
                parts.append({"type": "tool_call", "id": p.call_id, "name": p.tool_name,
                              "arguments": self._text(p.arguments)})
            elif isinstance(p, ToolResultPart):
                parts.append({"type": "tool_call_response", "id": p.call_id,
                              "response": self._text(p.content)})
        return {"role": message.role, "parts": parts}


def _provider_model(name: str) -> tuple[str, str]:
    """``openai:gpt-4o-mini`` → (``openai``, ``gpt-4o-mini``); a base URL is left out."""
    provider, sep, model = name.partition(":")
    if not sep:
        return "unknown", name
    return provider, model.split("@", 1)[0]


def _fail(span: Span, exc: BaseException, scrub: Scrub) -> None:
    if not span.is_recording():
        return
    kind = exc.error_type if isinstance(exc, RunError) else type(exc).__name__
    span.set_attribute("error.type", kind)
    message = getattr(exc, "message", None) or str(exc)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {scrub(str(message))}"[:500]))
    span.add_event("exception", {"exception.type": type(exc).__name__,
                                 "exception.message": scrub(str(message))[:2000]})


# ------------------------------------------------------------------ outgoing HTTP calls


def trace_headers() -> dict[str, str]:
    """The current trace context as HTTP headers (``traceparent``, ``tracestate``): empty
    outside a span or without an SDK. Add them to a tool's outgoing request."""
    from opentelemetry import propagate  # reads OTEL_PROPAGATORS: only when asked

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def inject_trace_headers(request: Any) -> None:
    """An httpx event hook for a ``httpx.Client``: ``httpx.Client(event_hooks={"request":
    [inject_trace_headers]})`` puts the current trace context on each request the tool
    makes, so the called service joins the run's trace."""
    from opentelemetry import propagate

    propagate.inject(request.headers)


async def inject_trace_headers_async(request: Any) -> None:
    """:func:`inject_trace_headers` for a ``httpx.AsyncClient`` (whose hooks are async)."""
    from opentelemetry import propagate

    propagate.inject(request.headers)
