"""The provider SDKs are optional: ``import keel`` never imports them, an agent on a scripted
model runs without them, and building an adapter whose SDK is missing is a UserError naming
the extra that installs it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

import keel
from keel.models import resolve_model

# Run in a fresh interpreter where ``import openai`` / ``import anthropic`` fail as they do
# when the packages are not installed (a None entry in sys.modules makes the import raise
# ModuleNotFoundError naming the module).
_WITHOUT_SDKS = textwrap.dedent("""
    import asyncio, json, sys
    sys.modules["openai"] = None
    sys.modules["anthropic"] = None

    import keel
    import keel.testing
    report = {"imported": sorted(m for m in ("openai", "anthropic")
                                 if sys.modules.get(m) is not None)}

    agent = keel.Agent(model=keel.testing.ScriptedModel(["scripted answer"]))
    store = keel.MemoryStore()
    report["output"] = agent.run_sync("hello", store=store).output

    errors = {}
    for model_id in ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5",
                     "openai:qwen2.5@http://127.0.0.1:9/v1"):
        try:
            keel.resolve_model(model_id, api_key="sk-test")
        except keel.UserError as exc:
            errors[model_id] = [type(exc).__name__, str(exc)]
    report["errors"] = errors

    hosted = keel.Agent(model="anthropic:claude-haiku-4-5")
    empty = keel.MemoryStore()
    try:
        hosted.run_sync("hello", store=empty)
    except keel.UserError as exc:
        report["agent_error"] = str(exc)
    report["runs_written"] = len(asyncio.run(empty.list_runs()))
    print(json.dumps(report))
""")


def test_keel_runs_an_agent_without_the_provider_sdks() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_SDKS], capture_output=True,
                          text=True, timeout=120,
                          env={"ANTHROPIC_API_KEY": "sk-ant-test", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["imported"] == []
    assert report["output"] == "scripted answer"
    assert report["errors"] == {
        "openai:gpt-4o-mini": [
            "UserError", "model 'openai:gpt-4o-mini' needs the 'openai' package, which is not "
            "installed. Install it with: pip install 'keel-agents[openai]' "
            "(or pip install openai)."],
        "anthropic:claude-haiku-4-5": [
            "UserError", "model 'anthropic:claude-haiku-4-5' needs the 'anthropic' package, "
            "which is not installed. Install it with: pip install 'keel-agents[anthropic]' "
            "(or pip install anthropic)."],
        "openai:qwen2.5@http://127.0.0.1:9/v1": [
            "UserError", "model 'openai:qwen2.5@http://127.0.0.1:9/v1' needs the 'openai' "
            "package, which is not installed. Install it with: "
            "pip install 'keel-agents[openai]' (or pip install openai)."],
    }
    assert "pip install 'keel-agents[anthropic]'" in report["agent_error"]
    assert report["runs_written"] == 0  # refused before anything was written


def test_import_keel_does_not_import_the_sdks() -> None:
    code = ("import sys, keel, keel.testing, keel.models; "
            "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin",
                                            "PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_broken_sdk_install_is_not_reported_as_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the SDK itself missing gets the install hint; a dependency of it that fails to
    import is shown as it is, so the real cause is not hidden."""
    real_import = importlib.import_module

    def import_module(name: str, package: str | None = None) -> ModuleType:
        if name == "openai":
            raise ModuleNotFoundError("No module named 'httpx2'", name="httpx2")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(ModuleNotFoundError, match="httpx2") as info:
        resolve_model("openai:gpt-4o-mini", api_key="sk-test")
    assert not isinstance(info.value, keel.UserError)
