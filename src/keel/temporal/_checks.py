"""What a run started on Temporal may be given: the checks of :func:`start_run`, made again
by ``keel.start`` on what arrives from the wire (a workflow may be started by any client)."""

from __future__ import annotations

import math
import re
from typing import Any

from keel.core import ConfigError, UserError
from keel.store import check_id
from keel.temporal._policy import retry_spec
from keel.temporal._types import RetrySpec, RunRequest

#: The longest input a run started on Temporal may have (characters): it travels in the
#: workflow's history, which Temporal limits (2 MB per payload).
MAX_INPUT_CHARS = 256_000
MAX_RUN_ID_CHARS = 128
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def build_request(*, run_id: Any, target: Any, input: Any, tenant: Any = None,
                  user: Any = None, conversation: Any = None, max_steps: Any = None,
                  max_tokens: Any = None, max_cost_usd: Any = None, poll_s: Any = 60.0,
                  step_timeout_s: Any = 600.0, heartbeat_s: Any = 30.0,
                  retry: Any = None) -> RunRequest:
    """A checked :class:`RunRequest`; UserError / ConfigError naming what is wrong."""
    return RunRequest(
        run_id=check_run_id(run_id), target=_target_name(target), input=_check_input(input),
        tenant=None if tenant is None else check_id("tenant", tenant),
        user=None if user is None else check_id("user", user),
        conversation=None if conversation is None else check_id("conversation", conversation),
        max_steps=_limit("max_steps", max_steps, whole=True),
        max_tokens=_limit("max_tokens", max_tokens, whole=True),
        max_cost_usd=_limit("max_cost_usd", max_cost_usd),
        poll_s=_positive("poll_s", poll_s),
        step_timeout_s=_positive("step_timeout_s", step_timeout_s),
        heartbeat_s=_positive("heartbeat_s", heartbeat_s), retry=_retry(retry))


def check_request(request: Any) -> RunRequest:
    """A request as it arrived from the wire, checked as :func:`start_run` checks its
    arguments."""
    if not isinstance(request, RunRequest):
        raise UserError(f"a keel.run workflow takes a RunRequest, not {type(request).__name__}")
    return build_request(
        run_id=request.run_id, target=request.target, input=request.input,
        tenant=request.tenant, user=request.user, conversation=request.conversation,
        max_steps=request.max_steps, max_tokens=request.max_tokens,
        max_cost_usd=request.max_cost_usd, poll_s=request.poll_s,
        step_timeout_s=request.step_timeout_s, heartbeat_s=request.heartbeat_s,
        retry=request.retry)


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str):
        raise UserError(f"run_id= must be a string, not {type(run_id).__name__}")
    if len(run_id) > MAX_RUN_ID_CHARS or not _RUN_ID.fullmatch(run_id):
        raise UserError(f"run_id= {run_id[:60]!r} is not a valid run id: letters, digits and "
                        f". _ : - only, at most {MAX_RUN_ID_CHARS} characters, starting with a "
                        "letter or digit")
    return run_id


def _target_name(target: Any) -> str:
    name = target if isinstance(target, str) else getattr(target, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"the run's target must be an agent or flow (or its name), not "
                        f"{type(target).__name__}")
    if len(name) > 200 or not name.isprintable():
        raise UserError(f"the target name {name[:40]!r}... is not a valid agent or flow name")
    return name


def _check_input(text: Any) -> str:
    if not isinstance(text, str):
        raise UserError(f"the run's input must be a string, not {type(text).__name__}")
    if len(text) > MAX_INPUT_CHARS:
        raise UserError(f"the run's input is {len(text):,} characters; a run started on "
                        f"Temporal takes at most {MAX_INPUT_CHARS:,} (pass a reference to "
                        "large data, e.g. a file or a URL, instead)")
    return text


def _limit(name: str, value: Any, *, whole: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (whole and not isinstance(value, int)) or not 0 < value < math.inf:
        raise ConfigError(name, f"must be a {'whole ' if whole else ''}number > 0, not "
                          f"{value!r:.40}")
    return value


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 < value < 1e9:
        raise ConfigError(name, f"must be a number of seconds > 0, not {value!r:.40}")
    return float(value)


def _retry(spec: Any) -> RetrySpec:
    if spec is None:
        return retry_spec()
    if not isinstance(spec, RetrySpec):
        raise ConfigError("retry", f"must be a keel.temporal.RetrySpec, not "
                          f"{type(spec).__name__}")
    _positive("retry.initial_interval_s", spec.initial_interval_s)
    _positive("retry.max_interval_s", spec.max_interval_s)
    if isinstance(spec.backoff, bool) or not isinstance(spec.backoff, int | float) \
            or not 1 <= spec.backoff <= 100:
        raise ConfigError("retry.backoff", f"must be a number in [1, 100], not "
                          f"{spec.backoff!r:.40}")
    if isinstance(spec.max_attempts, bool) or not isinstance(spec.max_attempts, int) \
            or spec.max_attempts < 0:
        raise ConfigError("retry.max_attempts", f"must be a whole number >= 0 (0: no limit), "
                          f"not {spec.max_attempts!r:.40}")
    if not isinstance(spec.non_retryable, list) or not all(
            isinstance(t, str) for t in spec.non_retryable):
        raise ConfigError("retry.non_retryable", "must be a list of error type names")
    return spec
