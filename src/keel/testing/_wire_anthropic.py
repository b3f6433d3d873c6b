"""A fake Anthropic Messages API server for tests: real HTTP on 127.0.0.1, standard library only.

:class:`AnthropicWireServer` speaks the wire format of ``POST /v1/messages`` - a JSON body for a
plain request and a Server-Sent Events stream (``message_start``, ``content_block_start``,
``content_block_delta`` with ``text_delta`` / ``input_json_delta``, ``content_block_stop``,
``message_delta``, ``message_stop``) when the request body has ``"stream": true`` - so an
adapter is exercised through the real SDK and a real socket, with no mocks.

Tests script the replies, one per request, in order::

    with AnthropicWireServer() as srv:
        srv.reply_text("Hello!")
        srv.reply_tool_use([("get_weather", {"city": "Paris"})], text="Let me check.")
        srv.reply_error(429, headers={"retry-after": "2"})
        model = AnthropicModel("claude-haiku-4-5", base_url=srv.base_url, api_key="sk-ant-test")
        ...
        assert srv.requests[0].body["max_tokens"] == 4096

A message reply (:meth:`~AnthropicWireServer.reply_text`,
:meth:`~AnthropicWireServer.reply_tool_use`) is rendered as JSON or as an SSE stream depending
on the request, so the same script can drive ``request`` and ``stream`` and the results can be
compared. Every request is recorded in :attr:`AnthropicWireServer.requests`.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias

__all__ = ["AnthropicWireServer", "RecordedRequest"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the server received.

    ``headers`` has lower-cased names. ``body`` is the parsed JSON body (``None`` when it was
    not JSON); ``raw`` is the body as sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def api_key(self) -> str | None:
        """The credential the client sent: ``x-api-key``, or the token of an
        ``Authorization: Bearer`` header (which newer SDKs send instead)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def stream(self) -> bool:
        """Whether the client asked for an SSE stream."""
        return isinstance(self.body, dict) and self.body.get("stream") is True


# ------------------------------------------------------------------------- scripted replies


@dataclass(frozen=True, slots=True)
class _MessageReply:
    blocks: tuple[dict[str, Any], ...]
    stop_reason: str
    input_tokens: int
    output_tokens: int
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class _ErrorReply:
    status: int
    error_type: str
    message: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _RawReply:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _BrokenStreamReply:
    """A stream that stops early: cut after ``events`` SSE events, then either an SSE
    ``error`` event, a clean end of body, or (``abort``) a dropped connection."""

    message: _MessageReply
    events: int | None
    abort: bool
    error: tuple[str, str] | None = None


_Reply: TypeAlias = _MessageReply | _ErrorReply | _RawReply | _BrokenStreamReply
_ToolCall: TypeAlias = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str]


@dataclass
class _State:
    replies: collections.deque[_Reply] = field(default_factory=collections.deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


# ------------------------------------------------------------------------------ the server


class AnthropicWireServer:
    """A scripted Anthropic Messages API on ``127.0.0.1`` (a free port), as a context manager.

    Push replies with the ``reply_*`` methods; each request to ``POST /v1/messages`` takes the
    next one. A request that finds the queue empty gets a 500 ``api_error`` naming the problem.
    Leaving the ``with`` block stops the server, wakes delayed replies and joins every thread;
    if a request handler failed unexpectedly (other than the client hanging up) it raises
    :class:`AssertionError` then, so server-side bugs cannot pass silently.

    ``model`` is the model name echoed in replies; ``chunk_size`` is how many characters of
    text (or tool-input JSON) each streamed delta carries.

    Options that make the server stricter or odder, as real servers are:

    * ``require_api_key``: authenticate as the API reference says, with the ``x-api-key``
      header. A request without it (an ``Authorization: Bearer`` header does not count) gets
      401 ``authentication_error`` "x-api-key header is required", one with another key gets
      401 "invalid x-api-key"; neither takes a scripted reply.
    * ``require_version``: a request whose ``anthropic-version`` header is missing or is not
      this value gets 400 ``invalid_request_error``.
    * ``ignore_stream``: answer ``"stream": true`` with the whole message as a JSON body
      (``content-type: application/json``), as servers without streaming support do.
    """

    def __init__(self, *, model: str = "claude-haiku-4-5", chunk_size: int = 4,
                 require_api_key: str | None = None, require_version: str | None = None,
                 ignore_stream: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.model = model
        self.chunk_size = chunk_size
        self.require_api_key = require_api_key
        self.require_version = require_version
        self.ignore_stream = ignore_stream
        self._state = _State()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> AnthropicWireServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if exc_type is None and self._state.errors:
            raise AssertionError(
                f"AnthropicWireServer request handler failed: {self._state.errors!r}")

    def start(self) -> None:
        """Bind a free port and serve in a background thread (``__enter__`` calls this)."""
        if self._httpd is not None:
            raise RuntimeError("AnthropicWireServer is already running")
        handler = type("_BoundHandler", (_Handler,), {"wire": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = True  # server_close() joins the request threads
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="AnthropicWireServer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wake delayed replies and join all threads. Safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._state.closing.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        self._httpd = self._thread = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` - pass it as the adapter's ``base_url``."""
        if self._httpd is None:
            raise RuntimeError("AnthropicWireServer is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def pending(self) -> int:
        """How many scripted replies have not been used yet."""
        with self._state.lock:
            return len(self._state.replies)

    # ------------------------------------------------------------------- scripting replies

    def reply_text(self, text: str, *, stop_reason: str = "end_turn", input_tokens: int = 10,
                   output_tokens: int = 5) -> None:
        """Answer the next request with one text block."""
        self._push(_MessageReply(blocks=(_text_block(text),), stop_reason=stop_reason,
                                 input_tokens=input_tokens, output_tokens=output_tokens))

    def reply_tool_use(self, calls: Sequence[_ToolCall], *, text: str | None = None,
                       input_tokens: int = 20, output_tokens: int = 15) -> None:
        """Answer the next request with an optional text block followed by one ``tool_use``
        block per ``(tool_name, input)`` or ``(tool_name, input, id)`` in ``calls``, with
        ``stop_reason`` ``tool_use``. Ids default to ``toolu_<n>``, unique per server; give
        them explicitly to compare two replies (e.g. streamed and not)."""
        blocks = [_text_block(text)] if text else []
        for name, tool_input, *rest in calls:
            call_id = str(rest[0]) if rest else f"toolu_{self._next_id():04d}"
            blocks.append({"type": "tool_use", "id": call_id, "name": name,
                           "input": dict(tool_input)})
        self._push(_MessageReply(blocks=tuple(blocks), stop_reason="tool_use",
                                 input_tokens=input_tokens, output_tokens=output_tokens))

    def reply_error(self, status: int, *, error_type: str | None = None,
                    message: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next request with an HTTP error and the API's JSON error body
        (``{"type": "error", "error": {"type": ..., "message": ...}}``). ``error_type``
        defaults to the API's type for ``status`` (e.g. 529 -> ``overloaded_error``)."""
        kind = error_type or _ERROR_TYPES.get(status, "api_error")
        self._push(_ErrorReply(status=status, error_type=kind,
                               message=message or kind.replace("_", " "),
                               headers=dict(headers or {})))

    def reply_context_too_long(self, *, window: int = 200_000, tokens: int = 210_000) -> None:
        """Answer the next request with the 400 the API sends for a prompt longer than the
        model's window (``prompt is too long``); keel maps it to ``keel.ContextTooLong``."""
        self.reply_error(400, error_type="invalid_request_error",
                         message=f"prompt is too long: {tokens} tokens > {window} maximum")

    def reply_raw(self, status: int, body: bytes, *, content_type: str = "application/json",
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer the next request with exactly ``body`` (e.g. a broken or non-JSON 200)."""
        self._push(_RawReply(status=status, body=body,
                             headers={"content-type": content_type, **(headers or {})}))

    def reply_delay(self, seconds: float, text: str = "(late reply)") -> None:
        """Answer the next request with ``text``, but only after ``seconds`` - long enough for
        a client timeout. Closing the server cuts the wait short (nothing is sent then)."""
        self._push(_MessageReply(blocks=(_text_block(text),), stop_reason="end_turn",
                                 input_tokens=10, output_tokens=5, delay=seconds))

    def reply_truncated_stream(self, text: str = "This answer is cut off", *,
                               events: int | None = None, abort: bool = True) -> None:
        """Answer the next (streaming) request with an SSE stream that never sends
        ``message_stop``: only the first ``events`` events are sent (default: up to and
        including the first text delta). With ``abort`` the connection is dropped
        mid-body (an incomplete chunked body); without it the body ends cleanly but early."""
        message = _MessageReply(blocks=(_text_block(text),), stop_reason="end_turn",
                                input_tokens=10, output_tokens=5)
        self._push(_BrokenStreamReply(message=message, events=events, abort=abort))

    def reply_stream_error(self, error_type: str = "overloaded_error",
                           message: str = "Overloaded", *, text: str = "Partial") -> None:
        """Answer the next (streaming) request with a stream that starts normally, then
        sends an SSE ``error`` event (as the API does when it fails mid-stream)."""
        reply = _MessageReply(blocks=(_text_block(text),), stop_reason="end_turn",
                              input_tokens=10, output_tokens=5)
        self._push(_BrokenStreamReply(message=reply, events=None, abort=False,
                                      error=(error_type, message)))

    # ---------------------------------------------------------------------------- helpers

    def _push(self, reply: _Reply) -> None:
        with self._state.lock:
            self._state.replies.append(reply)

    def _next_id(self) -> int:
        with self._state.lock:
            return next(self._state.ids)

    def _take(self, request: RecordedRequest) -> _Reply | None:
        with self._state.lock:
            self._state.requests.append(request)
            return self._state.replies.popleft() if self._state.replies else None

    def _record_error(self, error: BaseException) -> None:
        with self._state.lock:
            self._state.errors.append(error)

    def _refusal(self, request: RecordedRequest) -> tuple[int, str, str] | None:
        """``(status, error type, message)`` for a request the header checks refuse."""
        if self.require_api_key is not None:
            key = request.headers.get("x-api-key")
            if not key:
                return 401, "authentication_error", "x-api-key header is required"
            if key != self.require_api_key:
                return 401, "authentication_error", "invalid x-api-key"
        if self.require_version is not None:
            version = request.headers.get("anthropic-version")
            if not version:
                return 400, "invalid_request_error", "anthropic-version: header is required"
            if version != self.require_version:
                return (400, "invalid_request_error",
                        f"anthropic-version: {version!r} is not a valid version")
        return None

    def _message_json(self, reply: _MessageReply) -> dict[str, Any]:
        """The non-streamed JSON body for a message reply."""
        return {"id": f"msg_{self._next_id():04d}", "type": "message", "role": "assistant",
                "model": self.model, "content": list(reply.blocks),
                "stop_reason": reply.stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens,
                          "output_tokens": reply.output_tokens}}

    def _message_events(self, reply: _MessageReply) -> list[tuple[str, dict[str, Any]]]:
        """The SSE events, as ``(event, data)``, that stream a message reply."""
        start = self._message_json(reply)
        start.update(content=[], stop_reason=None)
        start["usage"] = {"input_tokens": reply.input_tokens, "output_tokens": 1}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(reply.blocks):
            events.extend(self._block_events(index, block))
        events.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens}}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _block_events(self, index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece}
                      for piece in _chunks(block["text"], self.chunk_size)]
        else:
            start = {**block, "input": {}}
            # Like the API, the first input_json_delta carries an empty fragment. The JSON is
            # compact and not ASCII-escaped, so its text differs from json.dumps' default.
            text = json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
            pieces = ["", *_chunks(text, self.chunk_size)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        return [
            ("content_block_start",
             {"type": "content_block_start", "index": index, "content_block": start}),
            *(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
              for d in deltas),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _chunks(text: str, size: int) -> Iterable[str]:
    return (text[i:i + size] for i in range(0, len(text), size))


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


# ----------------------------------------------------------------------------- the handler


class _Handler(BaseHTTPRequestHandler):
    """Serves one request per connection (``Connection: close``), so no thread lingers on an
    idle keep-alive socket and shutdown can join every request thread."""

    wire: AnthropicWireServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # a client that connects and never sends cannot pin a thread for long

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read :attr:`AnthropicWireServer.requests` instead (and request
        headers, which carry the API key, are never printed)."""

    def do_POST(self) -> None:
        try:
            self._serve_post()
        except _CLIENT_GONE:
            self.close_connection = True  # the client hung up (e.g. it timed out): fine
        except Exception as exc:
            self.close_connection = True
            self.wire._record_error(exc)

    def do_GET(self) -> None:
        self._send_json(404, _error_body("not_found_error", f"no route GET {self.path}"))

    def _serve_post(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(method="POST", path=self.path,
                                  headers={k.lower(): v for k, v in self.headers.items()},
                                  body=body, raw=raw)
        if self.path.split("?")[0] != "/v1/messages":
            self._send_json(404, _error_body("not_found_error", f"no route POST {self.path}"))
            return
        refusal = self.wire._refusal(request)
        if refusal is not None:
            with self.wire._state.lock:
                self.wire._state.requests.append(request)
            self._send_json(refusal[0], _error_body(*refusal[1:]))
            return
        reply = self.wire._take(request)
        if reply is None:
            self._send_json(500, _error_body(
                "api_error", "AnthropicWireServer: no scripted reply left for this request"))
        elif isinstance(reply, _ErrorReply):
            self._send_json(reply.status, _error_body(reply.error_type, reply.message),
                            reply.headers)
        elif isinstance(reply, _RawReply):
            self._send_bytes(reply.status, reply.body, reply.headers)
        elif isinstance(reply, _BrokenStreamReply):
            self._send_broken_stream(reply)
        elif reply.delay and self.wire._state.closing.wait(reply.delay):
            self.close_connection = True  # shutting down: the client gave up long ago
        elif request.stream and not self.wire.ignore_stream:
            self._send_stream(self.wire._message_events(reply))
        else:
            self._send_json(200, self.wire._message_json(reply))

    # ------------------------------------------------------------------------ responses

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None
                   ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(),
                         {"content-type": "application/json", **(headers or {})})

    def _send_bytes(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_{self.wire._next_id():04d}")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", f"req_{self.wire._next_id():04d}")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send_event(self, event: str, data: dict[str, Any]) -> None:
        payload = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_stream(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._start_stream()
        for event, data in events:
            self._send_event(event, data)
        self._end_stream()

    def _send_broken_stream(self, reply: _BrokenStreamReply) -> None:
        events = self.wire._message_events(reply.message)
        cut = reply.events
        if cut is None:
            cut = next(i for i, (name, _) in enumerate(events) if name == "content_block_delta")
            cut += 1
        self._start_stream()
        for event, data in events[:min(cut, len(events) - 1)]:  # never the message_stop
            self._send_event(event, data)
        if reply.error is not None:
            self._send_event("error", _error_body(*reply.error))
        if not reply.abort:
            self._end_stream()
        # With abort, the body is left without its final chunk and the connection is closed.
