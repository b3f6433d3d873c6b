"""`keel serve` and `keel mcp serve` up to the point where uvicorn (or the stdio loop) takes
over: what they hand it, and what they refuse first. (The servers themselves are tested over
real HTTP and stdio in tests/server.)"""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

import keel.server
from keel.cli import app as cli


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: configs.append(self.config))
    return configs


def test_keel_serve_hands_uvicorn_the_app_on_the_given_address(
        served: list[uvicorn.Config], tmp_path: Any) -> None:
    r = CliRunner().invoke(cli, ["serve", "tests.server.apps:support", "--host", "127.0.0.2",
                                 "--port", "8123", "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    (config,) = served
    assert (config.host, config.port) == ("127.0.0.2", 8123)
    assert config.timeout_graceful_shutdown == 15  # the app's grace period (10 s) + 5
    assert config.server_header is False and config.proxy_headers is False
    assert "1 agent(s) on http://127.0.0.2:8123" in r.output
    assert {"/v1/runs", "/v1/runs/{run_id}/events"} <= set(config.app.openapi()["paths"])


def test_keel_mcp_serve_over_http_hands_uvicorn_the_mcp_app(
        served: list[uvicorn.Config], tmp_path: Any) -> None:
    r = CliRunner().invoke(cli, ["mcp", "serve", "tests.server.apps:support", "--transport",
                                 "http", "--port", "8124", "--tenant", "acme",
                                 "--store", str(tmp_path / "m.db")])
    assert r.exit_code == 0, r.output
    (config,) = served
    assert (config.host, config.port) == ("127.0.0.1", 8124)
    assert "on http://127.0.0.1:8124/mcp (tenant acme; no authentication" in r.output


def test_keel_mcp_serve_on_stdio_runs_the_stdio_loop(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    ran: list[Any] = []

    async def stdio(server: Any) -> None:
        ran.append(server)

    monkeypatch.setattr(keel.server, "serve_stdio", stdio, raising=False)
    r = CliRunner().invoke(cli, ["mcp", "serve", "tests.server.apps:support",
                                 "--store", str(tmp_path / "m.db")])
    assert r.exit_code == 0, r.output
    assert len(ran) == 1 and "1 agent(s) on stdio (no tenant)" in r.output


@pytest.mark.parametrize(("args", "says"), [
    (["--transport", "carrier-pigeon"], "use stdio or http"),
    (["--port", "70000"], "not a TCP port"),
    (["--tenant", "x" * 201], "1 to 200 characters"),
])
def test_keel_mcp_serve_refuses_bad_options(args: list[str], says: str) -> None:
    r = CliRunner().invoke(cli, ["mcp", "serve", "tests.server.apps:support", *args])
    assert r.exit_code == 2 and says in r.output
