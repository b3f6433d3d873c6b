"""An agent's version: a short content hash of what defines its behaviour.

Two agents with the same instructions, model, tools (names, descriptions, JSON Schemas,
risk, scopes, idempotency), output schema, model settings and loop settings have the same
version, in every process; change any of them and the version changes. Every run records
the version that served it in its record's metadata (:data:`VERSION_KEY`), so that runs can
be compared, filtered and rolled out by version (``keel.rollout``).

What is left out: the agent's name (the same behaviour under two names is one version),
middleware and approval or escalation policies (objects that may hold functions, whose
identity is not stable across processes), and the API key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from keel.core import ModelSettings
from keel.tools import Tool

#: The run-metadata key under which a run records the version of the agent that served it.
VERSION_KEY = "version"
#: Hex characters of a version (a 64-bit digest: collisions are not a practical concern
#: among one agent's versions).
VERSION_CHARS = 16


def tool_fingerprint(tool: Tool) -> dict[str, Any]:
    """What about ``tool`` changes the agent's behaviour (JSON-able, stable across
    processes)."""
    meta = tool.meta
    return {"name": meta.name, "description": meta.description,
            "parameters": tool.parameters, "risk": meta.risk,
            "scopes": sorted(meta.scopes), "idempotent": meta.idempotent}


def version_digest(value: Any) -> str:
    """A short hex digest of a JSON-able value (keys sorted; other objects by ``str``)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                           digest_size=VERSION_CHARS // 2).hexdigest()


def agent_version(*, model: str, instructions: str, tools: Iterable[Tool],
                  output_schema: Any, settings: ModelSettings, scopes: Iterable[str],
                  max_repeated_failures: int, max_output_retries: int) -> str:
    """The version of an agent made of these parts (see the module docstring)."""
    return version_digest({
        "model": model, "instructions": instructions,
        "tools": sorted((tool_fingerprint(t) for t in tools), key=lambda t: t["name"]),
        "output": output_schema, "settings": asdict(settings), "scopes": sorted(scopes),
        "loop": [max_repeated_failures, max_output_retries]})
