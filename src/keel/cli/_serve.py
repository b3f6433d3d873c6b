"""``keel serve MODULE:APP``: the HTTP API, the console and the chat page (keel.server) on
uvicorn. ``APP`` is a :class:`keel.server.App`, or an Agent or Flow (served alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._errors import CliError, reported
from keel.cli._load import is_path, load_file, load_module, split_target
from keel.cli._options import StoreOption
from keel.cli._text import Screen, safe
from keel.runtime import Agent, Flow


def load_app(target: str, store: str | None) -> Any:
    """The :class:`keel.server.App` named by ``target`` (an agent or flow is wrapped in
    one); ``store`` (from ``--store``) replaces the app's own store when given."""
    from keel.server import App

    module_ref, attr = split_target(target)
    module = load_file(Path(module_ref).expanduser().resolve()) if is_path(
        module_ref) else load_module(module_ref)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{module_ref} has no attribute {attr!r}; point at a "
                           "keel.server.App (app = App(agents=[...])).")
        obj = getattr(obj, part)
    if isinstance(obj, Agent | Flow):
        return App([obj], store=store)
    if not isinstance(obj, App):
        raise CliError(f"{target} is a {type(obj).__name__}, not a keel.server.App or an "
                       "Agent; define app = keel.server.App(agents=[...]) and serve that.")
    if store is not None:
        obj.store = store
    return obj


def serve_command(screen: Screen, *, target: str, store: str | None, host: str, port: int,
                  log_level: str) -> None:
    with reported(screen):
        try:
            import uvicorn
        except ImportError:
            raise CliError("keel serve needs the server extra: pip install "
                           "'keel-agents[server]'") from None
        if not 0 <= port <= 65535:
            raise CliError(f"--port {port} is not a TCP port (0-65535).")
        spec = load_app(target, store)
        asgi = spec.asgi()
        screen.err.print(safe(f"keel serve: {len(spec.agents)} agent(s) on "
                              f"http://{host}:{port} (console: /console, API: /v1, "
                              "OpenAPI: /openapi.json)"))
        config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level,
                                timeout_graceful_shutdown=int(spec.grace_s) + 5,
                                proxy_headers=False, server_header=False)
        uvicorn.Server(config).run()


def register(app: typer.Typer) -> None:
    """Add ``keel serve`` to ``keel``."""
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(
            metavar="MODULE:APP", help="A keel.server.App (or one Agent or Flow).")],
        host: Annotated[str, typer.Option("--host", help="The address to listen on.")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="The TCP port.")] = 8000,
        log_level: Annotated[str, typer.Option("--log-level")] = "info",
        store: StoreOption = None,
    ) -> None:
        """Serve the HTTP API, the web console and the chat page.

        Keys: create one with `keel keys create --tenant T --role admin --name me`, then sign
        in to http://HOST:PORT/console with it. Stop with Ctrl-C (SIGTERM): in-flight runs
        get the app's grace period, then go back to the store for workers."""
        # only a --store actually given (before or after the command) replaces the app's
        url = store or ctx.find_root().params.get("store")
        serve_command(Screen(), target=target, store=url, host=host, port=port,
                      log_level=log_level)
