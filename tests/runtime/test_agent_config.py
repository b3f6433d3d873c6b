"""An Agent is a frozen AgentConfig: clone is a replace() of it; api_key= reaches the model
and nowhere else."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keel import (
    Agent,
    AgentConfig,
    Budget,
    ConfigError,
    MemoryStore,
    MissingCredentials,
    UserError,
    export_run,
    resolve_model,
    tool,
)
from keel.testing import ScriptedModel
from keel.testing._wire_openai import OpenAIWireServer


@tool
async def lookup(order: int) -> str:
    """Look an order up."""
    return f"order {order}"


def test_the_config_is_frozen_and_holds_every_setting() -> None:
    agent = Agent("desk", model=ScriptedModel(["x"]), tools=[lookup], budget=Budget(max_steps=7),
                  scopes=["orders"], durability="always")
    config = agent.config
    assert isinstance(config, AgentConfig)
    assert config.tools == (lookup,)
    assert config.scopes == frozenset({"orders"})
    assert config.durability.mode == "always"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "other"  # type: ignore[misc]


def test_clone_replaces_settings_and_keeps_the_rest() -> None:
    agent = Agent("desk", model=ScriptedModel(["x"]), tools=[lookup], instructions="Be kind.",
                  budget=Budget(max_steps=7), max_output_retries=1)
    clone = agent.clone(instructions="Be brief.", tools=[])
    assert clone.instructions == "Be brief."
    assert list(clone.toolset) == []
    assert clone.budget == Budget(max_steps=7)
    assert clone.max_output_retries == 1
    assert clone.config == dataclasses.replace(agent.config, instructions="Be brief.", tools=())
    assert agent.instructions == "Be kind."  # the original is untouched
    assert list(agent.toolset) == [lookup]


def test_clone_checks_what_it_is_given() -> None:
    agent = Agent("desk", model=ScriptedModel(["x"]))
    with pytest.raises(UserError, match="unknown settings: instruction; it takes"):
        agent.clone(instruction="typo")
    with pytest.raises(ConfigError, match="max_repeated_failures"):
        agent.clone(max_repeated_failures=0)
    with pytest.raises(ConfigError, match="name"):
        agent.clone(name="a/b")
    with pytest.raises(ConfigError, match="expected a Budget"):
        agent.clone(budget=5)
    with pytest.raises(ConfigError, match="expected a Budget"):
        Agent("desk", model=ScriptedModel(["x"]), budget=5)  # type: ignore[arg-type]


def test_api_key_is_handed_to_resolve_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingCredentials, match=r"Agent\(\.\.\., api_key=\.\.\.\)"):
        Agent("a", model="openai:gpt-4o-mini").prepare()
    agent = Agent("a", model="openai:gpt-4o-mini", api_key="sk-from-code")
    agent.prepare()  # no MissingCredentials: the key given in code is used
    assert agent.clone(instructions="x").config.api_key == "sk-from-code"
    assert "sk-from-code" not in repr(agent.config)
    assert "sk-from-code" not in repr(agent)


def test_api_key_with_a_resolved_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="already resolved"):
        Agent("a", model=ScriptedModel(["x"]), api_key="sk-x")
    # a resolved model carries its own key: cloning onto one drops the agent's key
    agent = Agent("a", model="openai:m@http://127.0.0.1:9/v1", api_key="sk-x")
    assert agent.clone(model=ScriptedModel(["x"])).config.api_key is None


async def test_the_key_reaches_the_server_and_not_the_store() -> None:
    with OpenAIWireServer() as server:
        server.reply_text("Hello!")
        agent = Agent("a", model=f"openai:m@{server.base_url}", api_key="sk-local-secret")
        store = MemoryStore()
        try:
            result = await agent.run("hi", store=store)
        finally:
            await agent.resolved_model().aclose()
        assert result.output == "Hello!"
        assert server.request_headers[0]["authorization"] == "Bearer sk-local-secret"
        exported = json.dumps(await export_run(result.run_id, store=store), default=str)
        assert "sk-local-secret" not in exported


def test_a_resolved_model_is_accepted_as_is() -> None:
    model = resolve_model("openai:m@http://127.0.0.1:9/v1", api_key="sk-y")
    agent = Agent("a", model=model)
    assert agent.resolved_model() is model


def test_an_llm_router_built_from_an_agent_uses_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.patterns import LLMRouter, Route

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    agent = Agent("a", model="openai:gpt-4o-mini", api_key="sk-router")
    router = LLMRouter(agent, [Route("billing"), Route("other")])
    assert router.model().name  # resolved with the agent's key: no MissingCredentials
