"""Where traces go: OTLP over HTTP to a real receiver on 127.0.0.1 that decodes the request
with the official protobuf definitions (opentelemetry-proto); an unreachable collector
drops spans without failing or blocking the run; bad configuration is a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from keel import Agent, ConfigError, MemoryStore, tool
from keel.observe import Tracing, setup_tracing
from keel.observe._tracing_setup import DroppingExporter, _otlp
from keel.testing import ScriptedModel, call


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    got: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces" and \
                    self.headers["Content-Type"] == "application/x-protobuf":
                got.append(ExportTraceServiceRequest.FromString(body))
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _agent(tracing: Tracing) -> Agent[Any]:
    async def lookup(q: str) -> str:
        """Look something up."""
        return f"found {q}"

    model = ScriptedModel([call("lookup", {"q": "x"}, call_id="call-1"), "answer"])
    return Agent("otlp", model=model, tools=[tool(risk="read")(lookup)], middleware=[tracing])


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


async def test_spans_reach_an_otlp_http_receiver_and_decode_with_the_official_protos(
        collector: tuple[str, list[ExportTraceServiceRequest]]) -> None:
    url, got = collector
    provider = setup_tracing(endpoint=url, service_name="keel-test", set_global=False)
    try:
        result = await _agent(Tracing(tracer_provider=provider)).run("q", store=MemoryStore())
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    spans = [(rs, s) for req in got for rs in req.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    by_name = {s.name: s for _, s in spans}
    assert set(by_name) == {"invoke_agent otlp", "chat scripted", "execute_tool lookup"}
    resource = {a.key: _value(a.value) for a in spans[0][0].resource.attributes}
    assert resource["service.name"] == "keel-test"
    root = by_name["invoke_agent otlp"]
    assert {s.trace_id for _, s in spans} == {root.trace_id}
    attrs = {n: {a.key: _value(a.value) for a in s.attributes} for n, s in by_name.items()}
    assert attrs["invoke_agent otlp"]["keel.run.id"] == result.run_id
    assert attrs["chat scripted"]["gen_ai.operation.name"] == "chat"
    assert attrs["chat scripted"]["gen_ai.request.model"] == "scripted"
    assert attrs["execute_tool lookup"]["gen_ai.tool.call.id"] == "call-1"
    assert by_name["execute_tool lookup"].parent_span_id == root.span_id


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_collector_drops_spans_and_the_run_goes_on() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1/traces"
    exporter = DroppingExporter(_otlp(url, {}, 0.5), url)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=500))
    try:
        result = await _agent(Tracing(tracer_provider=provider)).run("q", store=MemoryStore())
        assert result.output == "answer"
        provider.force_flush(5_000)
        assert exporter.down and exporter.dropped == 4  # the run, two model requests, a tool
    finally:
        provider.shutdown()


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({"exporter": "jaeger"}, "use one of otlp, console"),
    ({"endpoint": "localhost:4318"}, "http(s) URL"),
    ({"endpoint": "ftp://127.0.0.1/v1/traces"}, "http(s) URL"),
    ({"endpoint": "http://127.0.0.1:4317"}, "use port 4318"),
    ({"endpoint": "http://127.0.0.1:99999"}, "not a valid URL"),
    ({"endpoint": 4318}, "expected a URL string"),
    ({"timeout": 0}, "seconds in (0, 300]"),
    ({"service_name": " "}, "non-empty"),
])
def test_bad_configuration_names_the_fix(kwargs: dict[str, Any], fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        setup_tracing(set_global=False, **kwargs)
    assert fix in str(info.value)


def test_bad_tracing_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="capture_content"):
        Tracing(capture_content="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scrub"):
        Tracing(scrub="logs")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="TracerProvider"):
        Tracing(tracer_provider=object())  # type: ignore[arg-type]


def test_without_the_otel_extra_runs_trace_nothing_and_setup_names_the_extra(
        tmp_path: Path) -> None:
    code = textwrap.dedent('''
        import sys

        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, _NotInstalled())
        from keel import Agent, UserError
        from keel.observe import setup_tracing
        from keel.testing import ScriptedModel

        print(Agent("a", model=ScriptedModel(["ok"])).run_sync("hi", store="memory:").output)
        try:
            setup_tracing()
        except UserError as exc:
            print(exc)
    ''')
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    env.pop("KEEL_STORE", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "ok"
    assert "pip install 'keel-agents[otel]'" in second
