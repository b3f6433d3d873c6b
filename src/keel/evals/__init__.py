"""L4: evaluations: datasets, scorers, the ``keel eval`` regression gate, A/B and pairwise
comparison, shadow runs and red teaming. Every evaluation is a set of ordinary journaled runs.
"""

from keel.evals._case import ARG_OPERATORS, Case, Expect, ToolExpect
from keel.evals._errors import DatasetError, EvalError
from keel.evals._harvest import MAX_HARVEST, HarvestFilter, harvest
from keel.evals._results import REPORT_FORMAT, VOLATILE, CaseResult, Report, Score

for _cls in (Case, CaseResult, DatasetError, EvalError, Expect, HarvestFilter, Report, Score,
             ToolExpect):
    _cls.__module__ = __name__

__all__ = [
    "ARG_OPERATORS",
    "MAX_HARVEST",
    "REPORT_FORMAT",
    "VOLATILE",
    "Case",
    "CaseResult",
    "DatasetError",
    "EvalError",
    "Expect",
    "HarvestFilter",
    "Report",
    "Score",
    "ToolExpect",
    "harvest",
]
