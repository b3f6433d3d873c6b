"""Budget guard: a model stuck in a loop is stopped with a clear error, not a surprise bill.

``agent`` polls a job that never finishes; its :class:`keel.Budget` (10 steps) stops it with
``BudgetExceeded``. ``stubborn`` repeats the same failing call; repeated-failure detection stops
it with ``RepeatedFailure`` after 3 tries. Both errors carry the run id and the step key, and
the run's journal stays in the store. Runs offline on a scripted model (no LLM is called):

    python examples/budget_guard.py
    keel run examples/budget_guard.py:agent "Wait for export-7 to finish."

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to try it on a real model.
"""

from __future__ import annotations

import os

from keel import Agent, Budget, BudgetExceeded, RunError, tool
from keel.testing import ScriptedModel, call


@tool(risk="read")
def check_job(job_id: str) -> str:
    """Check whether a background job has finished."""
    return f"job {job_id} is still running"  # it never finishes


@tool(risk="read")
def fetch_report(report_id: str) -> str:
    """Fetch a finished report by id."""
    raise ValueError(f"no report {report_id!r}")


# A model that would poll forever, and one that repeats a call that can never succeed.
SCRIPT = [call("check_job", {"job_id": "export-7"})] * 50
STUBBORN_SCRIPT = [call("fetch_report", {"report_id": "q3"})] * 50

INPUT = "Wait for job export-7 to finish, then tell me."
EXPECTED_ERROR = BudgetExceeded  # `keel demo` shows this error as the expected outcome

agent = Agent(
    "poller",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(SCRIPT),
    tools=[check_job],
    budget=Budget(max_steps=10),  # model turns + tool calls; also max_tokens, max_cost_usd ...
)

stubborn = Agent(
    "stubborn",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(STUBBORN_SCRIPT),
    tools=[fetch_report],
    max_repeated_failures=3,  # the default
)

if __name__ == "__main__":
    for guarded, question in ((agent, INPUT), (stubborn, "Fetch report q3.")):
        try:
            guarded.run_sync(question)
        except RunError as exc:
            print(f"{type(exc).__name__}: {exc}")
