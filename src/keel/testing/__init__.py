"""keel's public test kit: scripted models, loopback servers that speak the providers' wire
formats, fault injection, and the conformance suites of the run store and the event bus."""

try:  # let pytest rewrite the conformance suite's asserts for readable failures
    import pytest

    pytest.register_assert_rewrite("keel.testing._store_conformance",
                                   "keel.testing._store_conformance_fleet",
                                   "keel.testing._store_conformance_tenants",
                                   "keel.testing._store_conformance_isolation",
                                   "keel.testing._store_conformance_outbox",
                                   "keel.testing._memory_conformance",
                                   "keel.testing._bus_conformance")
except ImportError:  # pragma: no cover - the kit works without pytest too
    pass

from typing import TYPE_CHECKING

from keel.models import FunctionModel, ScriptedModel, ScriptItem, call
from keel.testing._conformance import StoreConformance
from keel.testing._faults import Faults, FaultyModel, FaultyTool, faulty_tool
from keel.testing._memory_conformance import MemoryConformance
from keel.testing._store_conformance_outbox import OutboxConformance
from keel.testing._wire_anthropic import AnthropicWireServer
from keel.testing._wire_anthropic import RecordedRequest as AnthropicRecordedRequest
from keel.testing._wire_openai import OpenAIWireServer, ToolCallSpec

if TYPE_CHECKING:
    from keel.testing._bus_conformance import EventBusConformance

__all__ = [
    "AnthropicRecordedRequest",
    "AnthropicWireServer",
    "EventBusConformance",
    "Faults",
    "FaultyModel",
    "FaultyTool",
    "FunctionModel",
    "MemoryConformance",
    "OpenAIWireServer",
    "OutboxConformance",
    "ScriptItem",
    "ScriptedModel",
    "StoreConformance",
    "ToolCallSpec",
    "call",
    "faulty_tool",
]


def __getattr__(name: str) -> object:
    # the event-bus suite is built of pytest fixtures: import it (and pytest) when asked
    if name == "EventBusConformance":
        from keel.testing._bus_conformance import EventBusConformance

        return EventBusConformance
    raise AttributeError(f"module 'keel.testing' has no attribute {name!r}")
