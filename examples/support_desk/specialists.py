"""The five specialist agents (used when a model is configured).

Each is a keel ReAct ``Agent`` that sees only its own tools (``SPECIALIST_TOOLS``) plus a
``search_help`` tool limited to its help-centre sections, runs with the scopes those tools
need, and asks for approvals through ``approval_policy()`` (refunds above 100: one
reviewer; above 1,000: two different reviewers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final

from pydantic import StringConstraints

from keel import Agent, Model, Tool, tool
from keel.patterns import RAG
from keel.runtime import Middleware

from .processes import HelpCentre
from .prompts import instructions
from .tools import SPECIALIST_TOOLS, approval_policy, scopes_for

#: The help-centre sections each specialist may quote.
SECTIONS: Final = {
    "shipping": ("shipping", "policies"),
    "returns": ("returns", "policies"),
    "billing": ("billing", "policies"),
    "technical": ("troubleshooting",),
    "account": ("accounts", "policies"),
}

Query = Annotated[str, StringConstraints(min_length=2, max_length=300, strip_whitespace=True)]


def help_tool(help_centre: HelpCentre, sections: tuple[str, ...]) -> Tool:
    """A read-only tool searching the help centre's ``sections``: the three best passages
    with their article ids (cite them as ``[source: <id>]``)."""
    @tool(name="search_help", risk="read")
    def search_help(query: Query) -> list[dict[str, Any]]:
        """Search the help centre for the shop's policies and how-tos; returns passages
        with the article id to cite."""
        return [{"article": h["article"], "title": h["title"], "text": h["text"][:1200]}
                for h in help_centre.search(query, k=3, sections=sections)]

    return search_help


def make_agents(model: str | Model, help_centre: HelpCentre, *, version: str = "v1",
                middleware: Sequence[Middleware] = ()) -> dict[str, Agent[Any]]:
    """The specialists on ``model`` with the instructions of prompt set ``version``."""
    agents: dict[str, Agent[Any]] = {}
    for name, sections in SECTIONS.items():
        tools = (*SPECIALIST_TOOLS[name], help_tool(help_centre, sections))
        agents[name] = Agent(name, model=model, instructions=instructions(name, version),
                             tools=tools, scopes=scopes_for(SPECIALIST_TOOLS[name]),
                             approval=approval_policy(), middleware=list(middleware))
    return agents


class _LazyCorpus:
    """The help centre's corpus as a RAG retriever, built on the first search."""

    def __init__(self, help_centre: HelpCentre) -> None:
        self.help_centre = help_centre

    def search(self, query: str, *, k: int = 5, mode: Any = "hybrid") -> Sequence[Any]:
        return self.help_centre.corpus.search(query, k=k, mode=mode)

    def get(self, chunk_id: str) -> Any:
        return self.help_centre.corpus.get(chunk_id)


def make_policy_rag(model: str | Model, help_centre: HelpCentre, *, version: str = "v1",
                    middleware: Sequence[Middleware] = ()) -> RAG:
    """Agentic RAG over the whole help centre for policy questions: the ``policy`` agent
    searches, answers citing chunk ids, and keel checks every sentence against the chunks
    it cites (unsupported sentences are removed; nothing supported: a refusal)."""
    agent: Agent[str] = Agent("policy", model=model, instructions=instructions("policy", version),
                  middleware=list(middleware))
    return RAG("rag", agent=agent, corpus=_LazyCorpus(help_centre), k=3, decompose=False)
