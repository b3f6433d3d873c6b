"""``keel mcp serve MODULE:APP``: the app's agents and flows as an MCP server (keel.server's
``mcp_server``), on stdio for a local client or on streamable HTTP (uvicorn)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import typer

from keel.cli._errors import CliError, reported
from keel.cli._options import StoreOption
from keel.cli._serve import load_app
from keel.cli._text import Screen, safe

Transport = Literal["stdio", "http"]
MISSING = "keel mcp serve needs the mcp package: pip install 'keel-agents[mcp]'"


def mcp_serve_command(screen: Screen, *, target: str, store: str | None, transport: str,
                      host: str, port: int, tenant: str | None, expose_tools: bool,
                      log_level: str) -> None:
    with reported(screen):
        if transport not in ("stdio", "http"):
            raise CliError(f"--transport {transport!r}: use stdio or http.")
        if not 0 <= port <= 65535:
            raise CliError(f"--port {port} is not a TCP port (0-65535).")
        if tenant is not None and not 0 < len(tenant) <= 200:
            raise CliError("--tenant must be 1 to 200 characters.")
        try:
            import mcp  # noqa: F401
        except ImportError:
            raise CliError(MISSING) from None
        from keel.server import mcp_server, serve_stdio

        spec = load_app(target, store)
        server = mcp_server(spec, tenant=tenant, expose_tools=expose_tools)
        where = f"tenant {tenant}" if tenant else "no tenant"
        if transport == "stdio":
            screen.err.print(safe(f"keel mcp serve: {len(spec.agents)} agent(s) on stdio "
                                  f"({where})"))
            asyncio.run(serve_stdio(server))
            return
        _serve_http(screen, server, host=host, port=port, log_level=log_level, where=where,
                    agents=len(spec.agents), grace_s=spec.grace_s)


def _serve_http(screen: Screen, server: Any, *, host: str, port: int, log_level: str,
                where: str, agents: int, grace_s: float) -> None:
    try:
        import uvicorn
    except ImportError:
        raise CliError("keel mcp serve --transport http needs uvicorn: pip install "
                       "'keel-agents[server]'") from None
    asgi = server.streamable_http_app(host=host)
    screen.err.print(safe(f"keel mcp serve: {agents} agent(s) on http://{host}:{port}/mcp "
                          f"({where}; no authentication: keep it behind your own)"))
    # on SIGTERM, calls in progress get the app's grace period to finish; then they are
    # cancelled, and so are their runs
    config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(grace_s) + 5,
                            proxy_headers=False, server_header=False)
    uvicorn.Server(config).run()


def register(app: typer.Typer) -> None:
    """Add ``keel mcp serve`` to ``keel``."""
    mcp_app = typer.Typer(help="Serve the agents of an app as tools for MCP clients.",
                          no_args_is_help=True)

    @mcp_app.command("serve")
    def serve(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(
            metavar="MODULE:APP", help="A keel.server.App (or one Agent or Flow).")],
        transport: Annotated[str, typer.Option(
            "--transport", metavar="stdio|http",
            help="stdio for a local client that starts this process; http for streamable "
                 "HTTP (put your own auth in front of it).")] = "stdio",
        host: Annotated[str, typer.Option("--host", help="The address to listen on "
                                                         "(http).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="The TCP port (http).")] = 8001,
        tenant: Annotated[str | None, typer.Option(
            "--tenant", metavar="TENANT",
            help="The tenant every run started through MCP is for.")] = None,
        expose_tools: Annotated[bool, typer.Option(
            "--expose-tools", help="Also expose the agents' read tools (called directly, "
                                   "outside any run).")] = False,
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
        store: StoreOption = None,
    ) -> None:
        """Serve the app's agents and flows as MCP tools (one per agent: {input, user?,
        conversation?}); each call is a keel run in the store, for --tenant."""
        url = store or ctx.find_root().params.get("store")  # `keel --store URL mcp serve`
        mcp_serve_command(Screen(), target=target, store=url, transport=transport,
                          host=host, port=port, tenant=tenant, expose_tools=expose_tools,
                          log_level=log_level)

    app.add_typer(mcp_app, name="mcp")
