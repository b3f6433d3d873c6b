"""The same workloads in LangGraph, Pydantic AI and the OpenAI Agents SDK.

Each framework gets its own fake model that makes no network call and, like keel's
``BenchModel``, works out the turn from the length of the conversation it is sent. Each is
built in its own function; a framework whose import fails is skipped with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from bench.common import FINAL_TEXT, RunFn, check, lookup, make_sleeper, sleeper_names, turn_of

#: A scripted turn: a list of (tool name, arguments) calls, or the final text.
Turn = list[tuple[str, dict[str, Any]]] | str


def step_turns(steps: int) -> list[Turn]:
    turns: list[Turn] = [[("lookup", {"i": k})] for k in range(steps)]
    return [*turns, FINAL_TEXT]


def parallel_turns(tools: int) -> list[Turn]:
    return [[(name, {"i": k}) for k, name in enumerate(sleeper_names(tools))], FINAL_TEXT]


def turn_by_length(turns: list[Turn], per_call: Callable[[int], int]) -> dict[int, int]:
    """Conversation length -> turn index, for frameworks that add ``per_call(c)`` items to
    the conversation for a turn with ``c`` tool calls (one user message first). O(1) per
    model request, and exact for parallel calls too."""
    index: dict[int, int] = {}
    length = 1
    for t, turn in enumerate(turns):
        index[length] = t
        length += per_call(0 if isinstance(turn, str) else len(turn))
    return index


def sleepers(tools: int, delay: float) -> list[Callable[..., Any]]:
    return [make_sleeper(k, delay) for k in range(tools)]


# ----------------------------------------------------------------------------- LangGraph


def _langchain_fake_chat() -> Any:
    """A LangChain chat model (``BaseChatModel``) answering from scripted turns, found by the
    length of the conversation (``by_length``)."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class FakeChat(BaseChatModel):
        turns: list[Any]
        by_length: dict[int, int]
        delay: float = 0.0

        @property
        def _llm_type(self) -> str:
            return "bench-fake"

        def _answer(self, messages: Sequence[BaseMessage]) -> ChatResult:
            t = self.by_length[len(messages)]
            turn = self.turns[t]
            if isinstance(turn, str):
                message = AIMessage(content=turn)
            else:
                message = AIMessage(content="", tool_calls=[
                    {"name": n, "args": a, "id": f"call_{t}_{k}", "type": "tool_call"}
                    for k, (n, a) in enumerate(turn)])
            return ChatResult(generations=[ChatGeneration(message=message)])

        def _generate(self, messages: list[BaseMessage], stop: Any = None,
                      run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return self._answer(messages)

        async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                             run_manager: Any = None, **kwargs: Any) -> ChatResult:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._answer(messages)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    return FakeChat


def langgraph_framework(checkpointer: bool = False) -> Any:
    """LangGraph: a ``StateGraph(MessagesState)`` with an agent node, the prebuilt
    ``ToolNode`` and ``tools_condition`` (the graph ``create_react_agent`` builds), and a
    custom ``BaseChatModel``. With ``checkpointer``, an ``InMemorySaver`` records every super
    step (LangGraph's counterpart of keel's in-memory journal)."""
    import langgraph
    from langchain_core.tools import StructuredTool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    FakeChat = _langchain_fake_chat()

    def build(turns: list[Turn], fns: list[Callable[..., Any]], delay: float) -> Any:
        tools = [StructuredTool.from_function(coroutine=f, name=f.__name__,
                                              description=f.__doc__ or f.__name__)
                 for f in fns]
        # an AIMessage, then one ToolMessage per call
        by_length = turn_by_length(turns, lambda c: 1 + c)
        model = FakeChat(turns=turns, by_length=by_length, delay=delay).bind_tools(tools)

        async def agent(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("agent", agent)
        graph.add_node("tools", ToolNode(tools))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        if not checkpointer:
            return graph.compile()
        from langgraph.checkpoint.memory import InMemorySaver

        return graph.compile(checkpointer=InMemorySaver())

    counter = iter(range(10**12))

    def runner(app: Any, tool_calls: int, limit: int) -> RunFn:
        async def run() -> None:
            config: dict[str, Any] = {"recursion_limit": limit}
            if checkpointer:
                config["configurable"] = {"thread_id": f"t{next(counter)}"}
            out = await app.ainvoke({"messages": [("user", "go")]}, config=config)
            messages = out["messages"]
            n_tools = sum(1 for m in messages if m.type == "tool")
            check(messages[-1].content == FINAL_TEXT and n_tools == tool_calls,
                  f"langgraph: {messages[-1].content!r}, {n_tools} tool messages")
        return run

    class LangGraph:
        name = f"LangGraph {_version('langgraph', langgraph)}" + (
            " + InMemorySaver" if checkpointer else "")

        @asynccontextmanager
        async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
            app = build(step_turns(steps), [lookup], delay)
            yield runner(app, steps, 2 * steps + 10)

        @asynccontextmanager
        async def parallel_run(self, tools: int, tool_delay: float) -> AsyncIterator[RunFn]:
            app = build(parallel_turns(tools), sleepers(tools, tool_delay), 0.0)
            yield runner(app, tools, 20)

    return LangGraph()


# --------------------------------------------------------------------------- Pydantic AI


def pydantic_ai_framework() -> Any:
    """Pydantic AI: ``Agent(FunctionModel(fn))`` with the tools as ``Tool``; the request limit
    (50 by default) is switched off."""
    import pydantic_ai
    from pydantic_ai import Agent, Tool
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import UsageLimits

    limits = UsageLimits(request_limit=None)

    def model(turns: list[Turn], delay: float) -> FunctionModel:
        async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            if delay:
                await asyncio.sleep(delay)
            t = turn_of(len(messages))
            turn = turns[t]
            if isinstance(turn, str):
                return ModelResponse(parts=[TextPart(turn)])
            return ModelResponse(parts=[ToolCallPart(n, a, tool_call_id=f"call_{t}_{k}")
                                        for k, (n, a) in enumerate(turn)])

        return FunctionModel(answer, model_name="bench-fake")

    def runner(agent: Agent[None, str], tool_calls: int) -> RunFn:
        async def run() -> None:
            result = await agent.run("go", usage_limits=limits)
            messages = result.all_messages()
            returns = sum(1 for m in messages for p in m.parts
                          if getattr(p, "part_kind", "") == "tool-return")
            check(result.output == FINAL_TEXT and returns == tool_calls,
                  f"pydantic-ai: {result.output!r}, {returns} tool returns")
        return run

    class PydanticAI:
        name = f"Pydantic AI {_version('pydantic-ai-slim', pydantic_ai)}"

        @asynccontextmanager
        async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
            agent = Agent(model(step_turns(steps), delay), tools=[Tool(lookup)])
            yield runner(agent, steps)

        @asynccontextmanager
        async def parallel_run(self, tools: int, tool_delay: float) -> AsyncIterator[RunFn]:
            agent = Agent(model(parallel_turns(tools), 0.0),
                          tools=[Tool(f) for f in sleepers(tools, tool_delay)])
            yield runner(agent, tools)

    return PydanticAI()


# ------------------------------------------------------------------- OpenAI Agents SDK


def openai_agents_framework() -> Any:
    """OpenAI Agents SDK: a custom ``agents.Model`` returning Responses-API output items,
    ``function_tool`` tools, ``Runner.run`` with tracing off and ``max_turns`` raised."""
    import agents
    from agents import Agent, Model, ModelResponse, RunConfig, Runner, Usage, function_tool
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    agents.set_tracing_disabled(True)
    run_config = RunConfig(tracing_disabled=True)

    class FakeModel(Model):
        def __init__(self, turns: list[Turn], delay: float) -> None:
            self.turns = turns
            self.delay = delay
            # a function_call item and a function_call_output item per call
            self.by_length = turn_by_length(turns, lambda c: 2 * c)

        async def get_response(self, system_instructions: Any, input: Any, model_settings: Any,
                               tools: Any, output_schema: Any, handoffs: Any, tracing: Any,
                               **kwargs: Any) -> ModelResponse:
            if self.delay:
                await asyncio.sleep(self.delay)
            t = 0 if isinstance(input, str) else self.by_length[len(input)]
            turn = self.turns[t]
            output: list[Any]
            if isinstance(turn, str):
                output = [ResponseOutputMessage(
                    id=f"msg_{t}", type="message", role="assistant", status="completed",
                    content=[ResponseOutputText(type="output_text", text=turn, annotations=[])])]
            else:
                output = [ResponseFunctionToolCall(
                    id=f"fc_{t}_{k}", call_id=f"call_{t}_{k}", type="function_call", name=n,
                    arguments=_json(a), status="completed") for k, (n, a) in enumerate(turn)]
            return ModelResponse(output=output, usage=Usage(requests=1), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the benchmark does not stream")

    def runner(agent: Agent[Any], tool_calls: int, max_turns: int) -> RunFn:
        async def run() -> None:
            result = await Runner.run(agent, "go", max_turns=max_turns, run_config=run_config)
            outputs = sum(1 for item in result.new_items if item.type == "tool_call_output_item")
            check(result.final_output == FINAL_TEXT and outputs == tool_calls,
                  f"openai-agents: {result.final_output!r}, {outputs} tool outputs")
        return run

    class OpenAIAgents:
        name = f"OpenAI Agents SDK {_version('openai-agents', agents)}"

        @asynccontextmanager
        async def step_run(self, steps: int, delay: float = 0.0) -> AsyncIterator[RunFn]:
            agent = Agent(name="bench", model=FakeModel(step_turns(steps), delay),
                          tools=[function_tool(lookup)])
            yield runner(agent, steps, steps + 10)

        @asynccontextmanager
        async def parallel_run(self, tools: int, tool_delay: float) -> AsyncIterator[RunFn]:
            agent = Agent(name="bench", model=FakeModel(parallel_turns(tools), 0.0),
                          tools=[function_tool(f) for f in sleepers(tools, tool_delay)])
            yield runner(agent, tools, 10)

    return OpenAIAgents()


# ------------------------------------------------------------------------------ registry


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _version(dist: str, module: Any) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


BUILDERS: dict[str, Callable[[], Any]] = {
    "langgraph": langgraph_framework,
    "langgraph-saver": lambda: langgraph_framework(checkpointer=True),
    "pydantic-ai": pydantic_ai_framework,
    "openai-agents": openai_agents_framework,
}


def other_frameworks() -> tuple[dict[str, Any], dict[str, str]]:
    """The frameworks that could be imported, and the reason for each that could not."""
    found: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for key, build in BUILDERS.items():
        try:
            found[key] = build()
        except ImportError as exc:
            skipped[key] = f"import failed: {exc}"
            print(f"skipping {key}: {skipped[key]}")
    return found, skipped
