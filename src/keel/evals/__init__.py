"""L4: evaluations: datasets, scorers, the ``keel eval`` regression gate, A/B and pairwise
comparison, shadow runs and red teaming. Every evaluation is a set of ordinary journaled runs.
"""

from keel.evals._case import ARG_OPERATORS, Case, Expect, ToolExpect
from keel.evals._compare import CASE_METRICS, LOWER_IS_BETTER, Comparison, MetricDiff, compare
from keel.evals._errors import DatasetError, EvalError
from keel.evals._pairwise import DEFAULT_RUBRIC, PairwiseCase, PairwiseReport, pairwise
from keel.evals._results import REPORT_FORMAT, VOLATILE, CaseResult, Report, Score
from keel.evals._shadow import Shadow, ShadowStats, ShadowTools
from keel.evals._shadow_marks import SHADOW_KEY
from keel.evals._shadow_report import ShadowReport, Spread, shadow_report

for _cls in (Case, CaseResult, Comparison, DatasetError, EvalError, Expect, MetricDiff,
             PairwiseCase, PairwiseReport, Report,
             Score, Shadow, ShadowReport, ShadowStats, ShadowTools, Spread, ToolExpect):
    _cls.__module__ = __name__

__all__ = [
    "ARG_OPERATORS",
    "CASE_METRICS",
    "DEFAULT_RUBRIC",
    "LOWER_IS_BETTER",
    "REPORT_FORMAT",
    "SHADOW_KEY",
    "VOLATILE",
    "Case",
    "CaseResult",
    "Comparison",
    "DatasetError",
    "EvalError",
    "Expect",
    "MetricDiff",
    "PairwiseCase",
    "PairwiseReport",
    "Report",
    "Score",
    "Shadow",
    "ShadowReport",
    "ShadowStats",
    "ShadowTools",
    "Spread",
    "ToolExpect",
    "compare",
    "pairwise",
    "shadow_report",
]
