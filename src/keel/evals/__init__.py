"""L4: evaluations: datasets, scorers, the ``keel eval`` regression gate, A/B and pairwise
comparison, shadow runs and red teaming. Every evaluation is a set of ordinary journaled runs.
"""

from keel.evals._case import ARG_OPERATORS, Case, Expect, ToolExpect
from keel.evals._errors import DatasetError, EvalError
from keel.evals._harvest import MAX_HARVEST, HarvestFilter, harvest
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
from keel.evals._redteam_report import (
    REDTEAM_FORMAT,
    AttackOutcome,
    CategoryFigures,
    RedTeamReport,
)
from keel.evals._redteam_run import canaries_for, guards_off, redteam
from keel.evals._results import REPORT_FORMAT, VOLATILE, CaseResult, Report, Score

for _cls in (Attack, AttackOutcome, AttackSuite, Canaries, Case, CaseResult, CategoryFigures,
             CompromisedModel, DatasetError, EvalError, Expect, Goal, HarvestFilter, RedTeamReport,
             Report, Score, ToolExpect):
    _cls.__module__ = __name__

__all__ = [
    "ARG_OPERATORS",
    "ATTACKER_EMAIL",
    "ATTACKER_MARKERS",
    "ATTACKER_URL",
    "MAX_HARVEST",
    "REDTEAM_FORMAT",
    "REPORT_FORMAT",
    "SUITES",
    "VOLATILE",
    "Attack",
    "AttackOutcome",
    "AttackSuite",
    "Canaries",
    "Case",
    "CaseResult",
    "CategoryFigures",
    "CompromisedModel",
    "DatasetError",
    "EvalError",
    "Expect",
    "Goal",
    "HarvestFilter",
    "RedTeamReport",
    "Report",
    "Score",
    "ToolExpect",
    "canaries_for",
    "guards_off",
    "harvest",
    "redteam",
]
