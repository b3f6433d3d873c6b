"""L4: orchestration patterns built on flows (:class:`keel.Flow`): planning (and
plan-then-execute isolation), reflection,
workflows, routing and tool selection, supervisor and hierarchical teams, handoffs, group chat
and marketplace.

Every pattern is a flow, so it resumes, replays and traces like a single agent, and its
sub-agents run with a share of its budget. One page per pattern in docs/patterns/.
"""

from keel.patterns._context import (
    JUDGE_TURNS,
    judge_context,
)
from keel.patterns._embed import (
    Embedder,
    WordLlamaEmbedder,
)
from keel.patterns._groupchat import (
    Agreement,
    ChatResult,
    ChatTurn,
    GroupChat,
    Judge,
    JudgeVerdict,
    Keyword,
    ModelSelector,
    NextSpeaker,
    RoundRobin,
    RuleSelector,
)
from keel.patterns._handoff import (
    HandoffLoop,
    HandoffTeam,
)
from keel.patterns._history_filter import (
    HistoryFilter,
)
from keel.patterns._marketplace import (
    AwardAttempt,
    Bid,
    Marketplace,
    MarketplaceFailed,
    MarketResult,
    PlacedBid,
    default_score,
)
from keel.patterns._plan import (
    Plan,
    PlanDraft,
    PlanStep,
    PlanStepFailed,
)
from keel.patterns._planning import (
    Planner,
    read_plan,
)
from keel.patterns._quarantine import (
    IsolatedPlan,
    IsolatedPlanner,
    IsolatedStep,
)
from keel.patterns._rag import (
    RAG,
    Citation,
    ClaimVerdict,
    GroundedAnswer,
    GroundingVerdicts,
    RankedChunks,
    Retriever,
    Search,
)
from keel.patterns._rag_chunk import Chunk
from keel.patterns._rag_corpus import (
    ChunkNotFound,
    Corpus,
    IndexReport,
)
from keel.patterns._rag_decompose import (
    SubQueries,
    split_question,
)
from keel.patterns._rag_index import CorpusError
from keel.patterns._rag_ingest import (
    Document,
    DocumentError,
    load_document,
    load_documents,
)
from keel.patterns._rag_search import (
    FusedReranker,
    Hit,
    Reranker,
)
from keel.patterns._rag_verify import (
    Claim,
    Verification,
    Verifier,
    term_weights,
)
from keel.patterns._reflection import (
    Check,
    Criterion,
    JsonSchema,
    Judgement,
    Predicate,
    Reflection,
    ReflectionResult,
    Round,
    Rubric,
    RubricScore,
    Tests,
)
from keel.patterns._routers import (
    EmbeddingRouter,
    HybridRouter,
    LLMRouter,
    RouteChoice,
    Rule,
    RuleRouter,
)
from keel.patterns._routing import (
    Conversation,
    DecisionRecord,
    Labelled,
    Route,
    Routed,
    RouteDecider,
    RouteDecision,
    Router,
    conversation_input,
    route_decisions,
    routes_from,
    routing_dataset,
)
from keel.patterns._supervisor import (
    Supervisor,
)
from keel.patterns._toolselect import (
    ToolSelection,
    ToolSelector,
)
from keel.patterns._workflow import (
    Branch,
    Gate,
    GateFailed,
    Node,
    Parallel,
    Sequential,
    Step,
    Workflow,
    WorkflowError,
    pipeline,
)
from keel.patterns._workflow_types import WorstCase

__all__ = [
    "JUDGE_TURNS",
    "RAG",
    "Agreement",
    "AwardAttempt",
    "Bid",
    "Branch",
    "ChatResult",
    "ChatTurn",
    "Check",
    "Chunk",
    "ChunkNotFound",
    "Citation",
    "Claim",
    "ClaimVerdict",
    "Conversation",
    "Corpus",
    "CorpusError",
    "Criterion",
    "DecisionRecord",
    "Document",
    "DocumentError",
    "Embedder",
    "EmbeddingRouter",
    "FusedReranker",
    "Gate",
    "GateFailed",
    "GroundedAnswer",
    "GroundingVerdicts",
    "GroupChat",
    "HandoffLoop",
    "HandoffTeam",
    "HistoryFilter",
    "Hit",
    "HybridRouter",
    "IndexReport",
    "IsolatedPlan",
    "IsolatedPlanner",
    "IsolatedStep",
    "JsonSchema",
    "Judge",
    "JudgeVerdict",
    "Judgement",
    "Keyword",
    "LLMRouter",
    "Labelled",
    "MarketResult",
    "Marketplace",
    "MarketplaceFailed",
    "ModelSelector",
    "NextSpeaker",
    "Node",
    "Parallel",
    "PlacedBid",
    "Plan",
    "PlanDraft",
    "PlanStep",
    "PlanStepFailed",
    "Planner",
    "Predicate",
    "RankedChunks",
    "Reflection",
    "ReflectionResult",
    "Reranker",
    "Retriever",
    "Round",
    "RoundRobin",
    "Route",
    "RouteChoice",
    "RouteDecider",
    "RouteDecision",
    "Routed",
    "Router",
    "Rubric",
    "RubricScore",
    "Rule",
    "RuleRouter",
    "RuleSelector",
    "Search",
    "Sequential",
    "Step",
    "SubQueries",
    "Supervisor",
    "Tests",
    "ToolSelection",
    "ToolSelector",
    "Verification",
    "Verifier",
    "WordLlamaEmbedder",
    "Workflow",
    "WorkflowError",
    "WorstCase",
    "conversation_input",
    "default_score",
    "judge_context",
    "load_document",
    "load_documents",
    "pipeline",
    "read_plan",
    "route_decisions",
    "routes_from",
    "routing_dataset",
    "split_question",
    "term_weights",
]

# Public errors print as ``keel.patterns.X``, where users import them from.
for _error in (ChunkNotFound, CorpusError, DocumentError, GateFailed, HandoffLoop,
               MarketplaceFailed, PlanStepFailed, WorkflowError):
    _error.__module__ = __name__
del _error
