"""L4: running keel agents and flows as Temporal workflows (the ``temporal`` extra).

One generic workflow type, ``keel.run``, drives each run a step at a time: every model
request and tool call of the keel run is one ``keel.advance`` activity, replaying the run's
journal before it. The run itself (record, journal, human tasks) lives in keel's run store,
so the CLI, the server, stats and traces see it like any other run. See docs/temporal.md.
"""

from keel.temporal._checks import MAX_INPUT_CHARS
from keel.temporal._client import (
    connect,
    notify_decided,
    run,
    run_result,
    start_run,
)
from keel.temporal._errors import TemporalUnavailable, WorkflowDivergence
from keel.temporal._policy import NON_RETRYABLE, retry_spec
from keel.temporal._replay import history_json, replay_histories
from keel.temporal._types import (
    DECIDED_SIGNAL,
    WORKFLOW_NAME,
    Outcome,
    RetrySpec,
    RunRequest,
    workflow_id_for,
)
from keel.temporal._worker import TemporalWorker
from keel.temporal._workflow import KeelRunWorkflow

TemporalUnavailable.__module__ = __name__
WorkflowDivergence.__module__ = __name__

__all__ = [
    "DECIDED_SIGNAL",
    "MAX_INPUT_CHARS",
    "NON_RETRYABLE",
    "WORKFLOW_NAME",
    "KeelRunWorkflow",
    "Outcome",
    "RetrySpec",
    "RunRequest",
    "TemporalUnavailable",
    "TemporalWorker",
    "WorkflowDivergence",
    "connect",
    "history_json",
    "notify_decided",
    "replay_histories",
    "retry_spec",
    "run",
    "run_result",
    "start_run",
    "workflow_id_for",
]
