"""What keel already does about each way a run goes wrong: the ``mitigation`` column of the
failure-modes report (:func:`keel.observe.failure_modes`), one table in one place.

Keys are a run error's type (``ModelError``), ``guard:<name>``, ``escalation:<trigger>``,
``tool_error:<error type>``, or a block's name (``budget``, ``spend cap``, ``breaker open``,
``rate limited``, ``bulkhead full``, ``approval denied``, ``permission denied``).
"""

from __future__ import annotations

MITIGATIONS: dict[str, str] = {
    # run failures
    "ModelError": "retried with exponential backoff and full jitter (transient errors "
                  "only); a circuit breaker per model endpoint stops calling it while it keeps "
                  "failing; a fallback model takes over if one is configured (FallbackModel)",
    "ToolError": "the error reaches the model as an observation it can correct; transient "
                 "errors are retried; a circuit breaker per tool",
    "RepeatedFailure": "the run stops instead of looping when the same failing call is "
                       "repeated (Agent(max_repeated_failures=...))",
    "OutputValidationError": "the model is told what to fix and tries again before the run "
                             "fails (output type validation)",
    "DeadlineExceeded": "the run's deadline, stored with it, stops it, also across restarts",
    "UnknownOutcome": "the tool's reconcile hook decides, or a person does (keel runs "
                      "resolve): a non-idempotent call never runs twice",
    "Divergence": "replay stops with both sides shown; run the code version that started "
                  "the run, or fork it",
    "ContextTooLong": "the history policy compacts the conversation and tries once more",
    "StoreUnavailable": "retryable: the run goes on from its journal when the store is back "
                        "(keel resume, or a worker)",
    "GuardrailTripped": "a guard stopped the run (fail closed)",
    "RunCancelled": "stopped on request (keel runs cancel)",
    "HandoffLoop": "the team stops agents handing the conversation around in a loop",
    "GateFailed": "the workflow's gate stopped it before the next step",
    "LeaseLost": "another worker took the run over from its journal",
    # blocks
    "budget": "the per-run budget (steps, tokens, cost, wall time) stopped it before the "
              "next call",
    "spend cap": "the spend cap refused the call before it was made (SpendCaps: block, "
                 "queue or degrade to a cheaper model)",
    "breaker open": "the circuit breaker failed fast instead of calling an endpoint that "
                    "keeps failing; it lets a trial call through after its cool-down",
    "rate limited": "the rate limiter held the call within the allowed rate",
    "bulkhead full": "the bulkhead kept the pool's concurrency bounded; the call was not made",
    "budget exceeded": "the per-run budget refused the call",
    "approval denied": "human approval gate: the call did not run; the model read the "
                       "reviewer's comment",
    "permission denied": "the tool policy (scopes, argument rules) refused the call; the "
                         "model got permission_denied",
    "guard:injection": "the injection guard blocked the input or tool output before the "
                       "model acted on it (InjectionGuard, on by default)",
    "guard:limits": "the size limits guard refused oversized input or tool output",
    "guard:secrets": "credentials were kept out of the model's view and the answer",
    "guard:data": "the data policy blocked personal data or a secret (DataGuard)",
    "guard:taint": "taint gating: a value from untrusted content may not reach a high-impact "
                   "tool without a person's approval",
    # escalations
    "escalation:human_requested": "the customer asked for a person: the run waits in the "
                                  "queue with its context packet",
    "escalation:low_confidence": "below the confidence threshold the agent hands over "
                                 "instead of guessing",
    "escalation:low_route_confidence": "the router was not sure: a person routes it",
    "escalation:novel_input": "input unlike anything seen goes to a person",
    "escalation:repeated_failure": "a run that kept failing goes to a person instead of "
                                   "looping",
    "escalation:budget_exhausted": "a run out of budget goes to a person, who may resume it "
                                   "with more",
    "escalation:guardrail": "a guard asked for a person to look (escalate decision)",
    "escalation:tool": "a tool handed the case to a person (Escalate)",
    "escalation:handoff": "a specialist handed the conversation to a person with a packet",
    "escalation:compensation_failed": "undoing a failed saga needs a person",
    "escalation:monitor": "the behaviour monitor flagged the run for a person",
    # tool errors the model saw
    "tool_error:timeout": "per-call timeout; retried when transient; the model sees the error",
    "tool_error:invalid_arguments": "arguments validated against the tool's schema; the "
                                    "model is told what to fix",
    "tool_error:invalid_json": "the model is told its arguments are not JSON and tries again",
    "tool_error:unknown_tool": "the model is told the tool does not exist",
    "tool_error:rejected_arguments": "a validator refused an argument; the model is told why",
    "tool_error:repeated_failure": "the same failing call is not made again",
}

_DEFAULTS = {"guard": "the guard blocked it (fail closed)",
             "escalation": "a person decides, with the run's context packet",
             "tool_error": "the model saw the error as an observation and could correct "
                           "itself; transient errors are retried; a circuit breaker per tool"}


def mitigation(key: str, cause: str = "") -> str:
    """The mitigation in place for ``key`` (see the module's docstring); a general one for
    a kind of failure the table does not name."""
    if key in MITIGATIONS:
        return MITIGATIONS[key]
    family = key.split(":", 1)[0]
    if family in _DEFAULTS:
        return _DEFAULTS[family]
    return "the run failed and stopped; `keel resume` retries it from its journal"
