"""A test MCP server (the official SDK's MCPServer, formerly FastMCP): tools with and
without annotations, an error result, malformed input schemas, progress, list_changed.

Effects are counted in the SQLite file named by ``SHOP_DB`` (a table ``effects``).
Run over stdio (``python shop.py``) or streamable HTTP (``python shop.py http PORT``).
"""

from __future__ import annotations

import os
import sqlite3
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

app = MCPServer("shop")


def _effect(tool: str, detail: str) -> int:
    with sqlite3.connect(os.environ["SHOP_DB"]) as db:
        db.execute("CREATE TABLE IF NOT EXISTS effects (tool TEXT, detail TEXT)")
        db.execute("INSERT INTO effects VALUES (?, ?)", (tool, detail))
        return int(db.execute("SELECT count(*) FROM effects").fetchone()[0])


@app.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
def lookup(sku: str) -> str:
    """Look up a product by SKU."""
    return f"{sku}: blue widget, 3 in stock"


@app.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def delete_all(reason: str) -> str:
    """Delete every product."""
    n = _effect("delete_all", reason)
    return f"deleted (effect #{n})"


@app.tool()
def add_note(text: str) -> str:
    """Add a note (no annotations)."""
    _effect("add_note", text)
    return "noted"


@app.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                      idempotent_hint=True))
def set_price(sku: str, price: float) -> str:
    """Set a price (idempotent)."""
    return f"{sku} now costs {price}"


@app.tool()
def refund(order: str) -> str:
    """Refund an order (always refuses)."""
    raise ToolError(f"order {order} is not refundable: past 30 days")


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami() -> str:
    """The server's process id."""
    return str(os.getpid())


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def header(name: str, ctx: Context) -> str:
    """A request header as the server received it (streamable HTTP)."""
    return (ctx.headers or {}).get(name.lower(), "(none)")


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
async def nap(seconds: float, ctx: Context) -> str:
    """Sleep, then answer (a progress notification says it started)."""
    await ctx.report_progress(0, seconds, "asleep")
    await anyio.sleep(seconds)
    return "rested"


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
async def crunch(steps: int, ctx: Context) -> str:
    """Work in steps, reporting progress."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"crunched {steps}"


@app.tool()
async def reshuffle(times: int, ctx: Context) -> str:
    """Tell the client, ``times`` times, that the tool list changed."""
    for _ in range(times):
        await ctx.session.send_tool_list_changed()
    return "reshuffled"


@app.tool()
def stringly(x: str) -> str:
    """Its input schema is replaced by one that is not JSON Schema below."""
    return x


@app.tool()
def dangling(x: str) -> str:
    """Its input schema is replaced by one with a reference that points nowhere."""
    return x


app._tool_manager._tools["stringly"].parameters = {
    "type": "object", "properties": {"x": {"type": "banana"}}}
app._tool_manager._tools["dangling"].parameters = {
    "type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}

if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        import uvicorn

        uvicorn.run(app.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]),
                    log_level="warning")
    else:
        app.run()
