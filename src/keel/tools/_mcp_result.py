"""What an MCP server's answers become in keel: annotations as hints, a call's result as
the observation the model sees, an exception as a short description."""

from __future__ import annotations

from typing import Any

from keel.core import ToolError


def hints_of(annotations: Any) -> dict[str, bool | None]:
    """The tool annotations keel reads, None where the server said nothing."""
    def get(attr: str) -> bool | None:
        value = getattr(annotations, attr, None)
        return value if isinstance(value, bool) else None
    return {"read_only": get("read_only_hint"), "destructive": get("destructive_hint"),
            "idempotent": get("idempotent_hint"), "open_world": get("open_world_hint")}


def describe(exc: BaseException | None) -> str:
    """An exception (or a group of them) in one line."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ToolError) else text


def observation(server: str, tool: str, result: Any) -> Any:
    """What a CallToolResult shows the model; raises ToolError for an error result."""
    blocks = [_block_text(b) for b in (getattr(result, "content", None) or [])]
    text = "\n".join(b for b in blocks if b)
    if getattr(result, "is_error", False):
        raise ToolError(f"MCP server {server!r}, tool {tool!r} failed: "
                        f"{text or 'no message'}", retryable=False)
    structured = getattr(result, "structured_content", None)
    if not blocks and structured is not None:
        return structured
    return text


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        size = len(getattr(block, "data", "") or "") * 3 // 4  # base64 to bytes
        return f"[{kind}: {getattr(block, 'mime_type', '?')}, about {size} bytes]"
    if kind == "resource_link":
        return f"[resource link: {getattr(block, 'uri', '?')}]"
    if kind == "resource":
        res = getattr(block, "resource", None)
        text = getattr(res, "text", None)
        if isinstance(text, str):
            return text
        return f"[resource: {getattr(res, 'uri', '?')}, {getattr(res, 'mime_type', None)}]"
    return f"[{kind or 'unknown'} content]"

