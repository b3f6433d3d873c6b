"""The composition root: keel's default middleware, listed in one place, in order.

Layers are L0 core → L1 models/tools/store → L2 runtime → L3 reliability … The runtime's
:class:`keel.runtime.Agent` cannot import the layers above it, so it has no default
middleware of its own. This module sits at the package root, where every layer is visible,
and composes them:

* :func:`defaults` returns a fresh list of the default middleware, **outermost first**.
  It is the only place the default stack is written down; the next layers (guards, tracing,
  metrics, history policy) join it by adding their middleware to this list.
* :class:`Agent` (exported as ``keel.Agent``) is the runtime agent whose
  :meth:`~keel.runtime.Agent.make_defaults` is :func:`defaults`. Nothing is registered at
  import time and there is no process-wide state: the defaults are a property of the class
  you construct, resolved when each agent is built (one fresh instance per agent).

Per agent: a middleware in ``middleware=`` of the same type as a default replaces that
default (``Retry(RetryPolicy(max_attempts=5))``, ``CircuitBreaker.off()``), and
``default_middleware=False`` drops them all. To change the defaults of every agent you make,
subclass :class:`Agent` and override ``make_defaults``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import IO, TypeVar

from keel.context import History, Memory, Paging
from keel.core import LogScrubber
from keel.core import configure_json_logging as core_json_logging
from keel.guard import DataGuard, DataPolicy, TaintGuard, default_guards
from keel.observe import Metrics, Tracing
from keel.reliability import CircuitBreaker, Retry
from keel.runtime import Agent as RuntimeAgent
from keel.runtime import AgentConfig, Middleware

OutputT = TypeVar("OutputT")


def defaults() -> list[Middleware]:
    """keel's default middleware, fresh instances, outermost first (the order they wrap a
    model request or a tool call):

    1. :class:`~keel.observe.Tracing`: OpenTelemetry spans of the run, its model requests,
       tool calls and sub-runs (docs/observability.md). Outermost, so a span covers the whole
       step (its retries are events on it, a refusal by the breaker or a guard shows on it)
       and the tool's span is current while it runs. A no-op until an OpenTelemetry SDK is
       configured; content, if captured, is scrubbed by the data policy for ``logs``.
    2. :class:`~keel.observe.Metrics`: Prometheus counters and histograms (in memory until
       something scrapes them). Outside retry, so that a step's time includes its retries
       and each retry is counted through the ``on_retry`` hook the retry middleware calls.
    3. :class:`~keel.Retry`: retries transient failures with backoff and jitter. It is
       outside the breaker, so every attempt goes through the breaker and an open breaker
       stops the retries.
    4. :class:`~keel.CircuitBreaker`: stops calling a model or tool that keeps failing.
    5. :class:`~keel.context.Paging`: a large JSON list a tool returns (over the tool's
       ``output_limit``) reaches the model as a handle with a summary, and the model pages,
       filters and fetches records with drill-down tools that read the journal
       (docs/context.md, "Tool output paging"). Outside the guards, so they screen what the
       model is actually shown (the summary, each page) and it sees the history unwrapped.
    6. the guards (:func:`keel.guard.default_guards`, docs/security.md):
       :class:`~keel.guard.LimitsGuard`, :class:`~keel.guard.InjectionGuard`,
       :class:`~keel.guard.DataGuard`, :class:`~keel.guard.TaintGuard` and
       :class:`~keel.guard.UntrustedContent`.
    7. :class:`~keel.context.History` (docs/context.md): fits each model request within the
       model's context window minus the reply reserve (least important, oldest turns left
       out first; never the system instructions, never a tool call without its result),
       warns the run once when it had to, and turns a provider's "context too long" into
       one compacted retry. Innermost, so it counts what is sent (with the untrusted-content
       delimiters and the paging tools) and its compaction is the last change to the request; a
       retry of a transient error re-enters it, and it reuses the compaction it already
       made for the step (a summary is journaled once) instead of compacting again.
    """
    guards = default_guards()
    data = next((g for g in guards if isinstance(g, DataGuard)), None)
    scrub = None if data is None else functools.partial(data.policy.scrub, destination="logs")
    return [Tracing(scrub=scrub), Metrics(), Retry(), CircuitBreaker(), Paging(), *guards,
            History()]


class Agent(RuntimeAgent[OutputT]):
    """A ReAct agent with keel's defaults: the runtime :class:`keel.runtime.Agent`
    (everything it documents applies) composed with :func:`keel.defaults`, the default
    middleware, outside the agent's own ``middleware``.

    ``middleware=[Retry(RetryPolicy(max_attempts=5))]`` replaces the default of that type;
    ``default_middleware=False`` drops them all; ``keel.defaults()`` shows them in order.
    """

    def make_defaults(self) -> Sequence[Middleware]:
        """:func:`keel.defaults` (and what deprecated ``register_default_middleware`` added)."""
        return [*defaults(), *super().make_defaults()]

    def _configure(self, config: AgentConfig) -> None:
        super()._configure(config)
        metrics = next((m for m in self.stack.middleware if isinstance(m, Metrics)), None)
        breaker = next((m for m in self.stack.middleware if isinstance(m, CircuitBreaker)),
                       None)
        if metrics is not None and breaker is not None and breaker.on_state is None:
            breaker.on_state = partial(metrics.breaker_changed, self.name)
        taint = next((m for m in self.stack.middleware if isinstance(m, TaintGuard)), None)
        if taint is not None:
            taint.warn_unannotated(self.name, config.tools)
        stack = list(self.stack.middleware)
        history = next((m for m in stack if isinstance(m, History)), None)
        if history is not None and history.inner_tokens == 0:
            # Memories injected inside the history policy take room it must keep free.
            after = stack[stack.index(history) + 1:]
            history.inner_tokens = sum(m.budget_tokens for m in after
                                       if isinstance(m, Memory) and m.inject)
        data = next((m for m in self.stack.middleware if isinstance(m, DataGuard)), None)
        if data is not None and self.escalation.scrub_packet is None:
            # Escalation packets leave the run for a person's queue: the agent's data policy
            # scrubs them (personal data masked by default) unless the policy says otherwise.
            self.escalation = replace(self.escalation,
                                      scrub_packet=data.policy.packet_scrubber())


def configure_json_logging(stream: IO[str] | None = None, level: int = logging.INFO, *,
                           propagate: bool = False,
                           scrub: LogScrubber | None = None) -> logging.Handler:
    """:func:`keel.core.configure_json_logging` with keel's data policy on by default: each
    line's fields are scrubbed for ``logs`` (secrets and personal data masked; see
    docs/security.md). ``scrub=`` gives another scrubber (``DataPolicy(...).log_scrubber()``,
    or ``lambda fields: fields`` to log values as they are, explicitly)."""
    return core_json_logging(stream, level, propagate=propagate,
                             scrub=scrub or DataPolicy().log_scrubber())


Agent.__module__ = "keel"
