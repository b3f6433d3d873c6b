"""L4: evaluations: datasets, scorers, the ``keel eval`` regression gate, A/B and pairwise
comparison, shadow runs and red teaming. Every evaluation is a set of ordinary journaled runs.
"""

from keel.evals._behaviour import (
    REFUSAL_PATTERNS,
    Behaviour,
    ToolTrajectory,
    behaviour,
    tool_trajectory,
)
from keel.evals._case import ARG_OPERATORS, Case, Expect, ToolExpect
from keel.evals._compare import CASE_METRICS, LOWER_IS_BETTER, Comparison, MetricDiff, compare
from keel.evals._dataset import Dataset, load_dataset
from keel.evals._errors import DatasetError, EvalError
from keel.evals._gate import Gate, GateResult, MetricCheck, check_gate
from keel.evals._harvest import MAX_HARVEST, HarvestFilter, harvest
from keel.evals._judge import LLMJudge, llm_judge, parse_score
from keel.evals._metrics import compute_metrics
from keel.evals._observed import Observed
from keel.evals._pairwise import DEFAULT_RUBRIC, PairwiseCase, PairwiseReport, pairwise
from keel.evals._redteam import (
    ATTACKER_EMAIL,
    ATTACKER_MARKERS,
    ATTACKER_URL,
    SUITES,
    Attack,
    AttackSuite,
    Goal,
)
from keel.evals._redteam_model import Canaries, CompromisedModel
from keel.evals._redteam_report import REDTEAM_FORMAT, AttackOutcome, CategoryFigures, RedTeamReport
from keel.evals._redteam_run import canaries_for, guards_off, redteam
from keel.evals._results import REPORT_FORMAT, VOLATILE, CaseResult, Report, Score
from keel.evals._run import BUDGET_SPENT, default_scorers, evaluate, evaluate_sync
from keel.evals._scorers import (
    Scorer,
    contains,
    cost,
    exact_match,
    fuzzy_match,
    json_schema,
    latency,
    regex,
    scorer,
    steps,
    typed_output,
)
from keel.evals._shadow import Shadow, ShadowStats, ShadowTools
from keel.evals._shadow_marks import SHADOW_KEY
from keel.evals._shadow_report import ShadowReport, Spread, shadow_report
from keel.evals._writers import load_report, save_report, to_junit_xml, to_markdown

for _cls in (
    Attack,
    AttackOutcome,
    AttackSuite,
    Behaviour,
    Canaries,
    Case,
    CaseResult,
    CategoryFigures,
    Comparison,
    CompromisedModel,
    Dataset,
    DatasetError,
    EvalError,
    Expect,
    Gate,
    GateResult,
    Goal,
    HarvestFilter,
    LLMJudge,
    MetricCheck,
    MetricDiff,
    Observed,
    PairwiseCase,
    PairwiseReport,
    RedTeamReport,
    Report,
    Score,
    Scorer,
    Shadow,
    ShadowReport,
    ShadowStats,
    ShadowTools,
    Spread,
    ToolExpect,
    ToolTrajectory,
):
    _cls.__module__ = __name__

__all__ = [
    "ARG_OPERATORS",
    "ATTACKER_EMAIL",
    "ATTACKER_MARKERS",
    "ATTACKER_URL",
    "BUDGET_SPENT",
    "CASE_METRICS",
    "DEFAULT_RUBRIC",
    "LOWER_IS_BETTER",
    "MAX_HARVEST",
    "REDTEAM_FORMAT",
    "REFUSAL_PATTERNS",
    "REPORT_FORMAT",
    "SHADOW_KEY",
    "SUITES",
    "VOLATILE",
    "Attack",
    "AttackOutcome",
    "AttackSuite",
    "Behaviour",
    "Canaries",
    "Case",
    "CaseResult",
    "CategoryFigures",
    "Comparison",
    "CompromisedModel",
    "Dataset",
    "DatasetError",
    "EvalError",
    "Expect",
    "Gate",
    "GateResult",
    "Goal",
    "HarvestFilter",
    "LLMJudge",
    "MetricCheck",
    "MetricDiff",
    "Observed",
    "PairwiseCase",
    "PairwiseReport",
    "RedTeamReport",
    "Report",
    "Score",
    "Scorer",
    "Shadow",
    "ShadowReport",
    "ShadowStats",
    "ShadowTools",
    "Spread",
    "ToolExpect",
    "ToolTrajectory",
    "behaviour",
    "canaries_for",
    "check_gate",
    "compare",
    "compute_metrics",
    "contains",
    "cost",
    "default_scorers",
    "evaluate",
    "evaluate_sync",
    "exact_match",
    "fuzzy_match",
    "guards_off",
    "harvest",
    "json_schema",
    "latency",
    "llm_judge",
    "load_dataset",
    "load_report",
    "pairwise",
    "parse_score",
    "redteam",
    "regex",
    "save_report",
    "scorer",
    "shadow_report",
    "steps",
    "to_junit_xml",
    "to_markdown",
    "tool_trajectory",
    "typed_output",
]
