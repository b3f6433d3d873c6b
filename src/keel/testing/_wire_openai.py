"""A fake OpenAI-compatible server for tests, built on the standard library only.

:class:`OpenAIWireServer` listens on ``127.0.0.1`` (a free port) and answers
``POST /v1/chat/completions`` in the real wire format, both as a JSON body and as a
server-sent-event stream (``data: {...}`` chunks ending with ``data: [DONE]``). What it answers
is scripted: each ``reply_*`` call queues one reply, and each request takes the next one. Every
request body is recorded in :attr:`OpenAIWireServer.requests`.

::

    with OpenAIWireServer() as srv:
        srv.reply_tool_calls([("get_weather", '{"city": "Paris"}')])
        srv.reply_text("It is sunny in Paris.")
        model = OpenAIModel("gpt-4o-mini", base_url=srv.base_url, api_key="test")
        ...

Because the adapter under test talks real HTTP to this server, the SDK, its HTTP client and
keel's error mapping are all exercised; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["OpenAIWireServer", "ToolCallSpec"]

#: A scripted tool call: ``(tool_name, arguments)`` or ``(tool_name, arguments, call_id)``.
#: ``arguments`` is sent verbatim, so it may be malformed JSON on purpose.
ToolCallSpec = tuple[str, str] | tuple[str, str, str]

_Usage = tuple[int, int] | None


# ------------------------------------------------------------------------- scripted replies


@dataclass(frozen=True, slots=True)
class _Context:
    """What a reply needs to know about the request it answers."""

    body: dict[str, Any]
    number: int
    chunk_size: int
    interleave: bool
    ignore_stream: bool = False

    @property
    def streaming(self) -> bool:
        return self.body.get("stream") is True and not self.ignore_stream

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def model(self) -> str:
        return str(self.body.get("model", "fake-model"))


class _Reply(ABC):
    delay: float  # seconds to wait before answering

    @abstractmethod
    def send(self, handler: _Handler, ctx: _Context) -> None: ...


@dataclass
class _Completion(_Reply):
    text: str | None
    calls: list[tuple[str, str, str]]
    usage: _Usage
    finish_reason: str | None
    delay: float = 0.0
    truncate: str | None = None  # None, "abort" (drop the connection) or "eof" (clean end)

    def send(self, handler: _Handler, ctx: _Context) -> None:
        if ctx.streaming:
            self._send_stream(handler, ctx)
            return
        body = json.dumps(_completion_body(self, ctx)).encode()
        if self.truncate is None:
            handler.send_body(200, body)
        else:  # promise the whole body, send half of it, hang up
            handler.send_head(200, {"Content-Type": "application/json",
                                    "Content-Length": str(len(body))})
            handler.write(body[: len(body) // 2])
            handler.close_connection = True

    def _send_stream(self, handler: _Handler, ctx: _Context) -> None:
        handler.start_sse()
        chunks = list(_stream_chunks(self, ctx, complete=self.truncate is None))
        if self.truncate is not None:  # about half the content, never the finish chunk
            chunks = chunks[: max(1, len(chunks) // 2)]
        for chunk in chunks:
            handler.write_sse(chunk)
        if self.truncate == "abort":
            handler.close_connection = True  # no terminating chunk: the body is cut short
            return
        if self.truncate is None:
            handler.write_sse("[DONE]")
        handler.end_sse()


@dataclass
class _Error(_Reply):
    status: int
    body: bytes
    headers: dict[str, str]
    content_type: str = "application/json"
    delay: float = 0.0

    def send(self, handler: _Handler, ctx: _Context) -> None:
        handler.send_body(self.status, self.body, content_type=self.content_type,
                          headers=self.headers)


# ------------------------------------------------------------------------- wire rendering


def _usage_body(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _completion_body(reply: _Completion, ctx: _Context) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for name, args, cid in reply.calls]
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake-{ctx.number}", "object": "chat.completion",
        "created": int(time.time()), "model": ctx.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": reply.finish_reason}],
    }
    if reply.usage is not None:
        body["usage"] = _usage_body(reply.usage)
    return body


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _stream_chunks(reply: _Completion, ctx: _Context, *, complete: bool = True) -> Iterator[str]:
    """The SSE ``data:`` payloads for ``reply``: role, text pieces, tool-call fragments
    (interleaved across calls when ``ctx.interleave``), then, when ``complete``, the finish
    chunk and the usage chunk."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps({
            "id": f"chatcmpl-fake-{ctx.number}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": ctx.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(reply.text or "", ctx.chunk_size) if reply.text else []:
        yield chunk({"content": piece})
    fragments = [
        [{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}]
        + [{"index": i, "function": {"arguments": p}} for p in _pieces(args, ctx.chunk_size)]
        for i, (name, args, cid) in enumerate(reply.calls)]
    if ctx.interleave:
        ordered = [f for group in itertools.zip_longest(*fragments) for f in group if f]
    else:
        ordered = [f for group in fragments for f in group]
    for fragment in ordered:
        yield chunk({"tool_calls": [fragment]})
    if not complete:
        return
    if reply.finish_reason is not None:
        yield chunk({}, reply.finish_reason)
    if ctx.include_usage and reply.usage is not None:
        yield json.dumps({"id": f"chatcmpl-fake-{ctx.number}", "object": "chat.completion.chunk",
                          "created": int(time.time()), "model": ctx.model, "choices": [],
                          "usage": _usage_body(reply.usage)})


# ------------------------------------------------------------------------------ HTTP layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams
    server_version = "OpenAIWireServer/1.0"
    timeout = 30.0  # a safety net; close() shuts idle connections down at once
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log."""

    # --- low-level writers -------------------------------------------------------------

    def send_head(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def send_body(self, status: int, body: bytes, *, content_type: str = "application/json",
                  headers: Mapping[str, str] | None = None) -> None:
        self.send_head(status, {"Content-Type": content_type,
                                "Content-Length": str(len(body)), **(headers or {})})
        self.write(body)

    def start_sse(self) -> None:
        self.send_head(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                             "Transfer-Encoding": "chunked"})

    def write_sse(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        self.write(f"{len(payload):X}\r\n".encode() + payload + b"\r\n")

    def end_sse(self) -> None:
        self.write(b"0\r\n\r\n")

    # --- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            models = {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "keel"}]}
            self.send_body(200, json.dumps(models).encode())
        else:
            self.send_body(404, _error_json(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_body(404, _error_json(404, f"no route POST {self.path}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_body(400, _error_json(400, "request body is not JSON"))
            return
        owner = self.server.owner
        reply, ctx = owner._take(body if isinstance(body, dict) else {"_body": body},
                                 {k.lower(): v for k, v in self.headers.items()})
        if reply is None:
            self.send_body(500, _error_json(
                500, "OpenAIWireServer has no scripted reply left for this request"))
            return
        if reply.delay and owner._stopping.wait(reply.delay):
            self.close_connection = True  # the server is shutting down: just hang up
            return
        reply.send(self, ctx)


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections and handler threads so :meth:`OpenAIWireServer.close` can shut
    every one down and join it (no leaked threads, no unclosed sockets)."""

    daemon_threads = True
    block_on_close = False  # we join our own threads in close()

    def __init__(self, owner: OpenAIWireServer, address: tuple[str, int]) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True,
                                  name=f"OpenAIWireServer-conn-{self.server_address[1]}")
        with self.lock:
            self.connections.add(request)
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler failures off stderr: dropped connections are expected (client
        timeouts, truncated streams, close()); anything else goes to ``owner.errors``."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.owner.errors.append(exc)

    def drop_connections(self) -> None:
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _error_json(status: int, message: str, error_type: str | None = None,
                code: str | None = None) -> bytes:
    kind = error_type or ("server_error" if status >= 500 else "invalid_request_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None,
                                 "code": code}}).encode()


_DEFAULT_MESSAGES = {
    400: "Invalid request.", 401: "Incorrect API key provided.",
    403: "You are not allowed to use this model.", 404: "The model does not exist.",
    408: "Request timed out.", 409: "Conflict.", 422: "Unprocessable entity.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.", 503: "The engine is currently overloaded.",
}


# ------------------------------------------------------------------------------ the server


class OpenAIWireServer:
    """A scripted OpenAI-compatible HTTP server on ``127.0.0.1`` (standard library only).

    Use it as a context manager (or call :meth:`start` / :meth:`close`). Queue replies with the
    ``reply_*`` methods; requests consume them in order, and a request that finds the queue
    empty gets HTTP 500 with a message saying so. Text and tool-call replies are rendered as a
    JSON body or as an SSE stream, whichever the request asked for (``"stream": true``); the
    usage chunk is sent only when the request set ``stream_options.include_usage``.

    ``chunk_size`` is how many characters of text or tool arguments go into one stream chunk;
    with ``interleave`` the fragments of parallel tool calls alternate by index, as an
    OpenAI-compatible server is allowed to send them. With ``ignore_stream`` the server
    behaves like one that does not implement streaming: it answers ``"stream": true`` with
    the whole completion as a JSON body (``content-type: application/json``).
    """

    def __init__(self, *, chunk_size: int = 4, interleave: bool = True,
                 ignore_stream: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.chunk_size = chunk_size
        self.interleave = interleave
        self.ignore_stream = ignore_stream
        #: The JSON body of every chat-completions request, in arrival order.
        self.requests: list[dict[str, Any]] = []
        #: The headers of every chat-completions request (parallel to :attr:`requests`), with
        #: lower-cased names, e.g. ``srv.request_headers[0]["authorization"]``.
        self.request_headers: list[dict[str, str]] = []
        #: Unexpected exceptions raised while handling requests (should stay empty).
        self.errors: list[BaseException] = []
        self._queue: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count = 0

    def __repr__(self) -> str:
        where = self.base_url if self._http is not None else "stopped"
        return f"OpenAIWireServer({where}, pending={self.pending})"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> OpenAIWireServer:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        if self._http is not None:
            return self
        self._stopping.clear()
        self._http = _HTTPServer(self, ("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"OpenAIWireServer-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, hang up every open connection, wake delayed replies and join every
        thread the server started. Safe to call more than once."""
        http, thread = self._http, self._thread
        if http is None or thread is None:
            return
        http.shutdown()
        self._stopping.set()
        http.drop_connections()
        with http.lock:
            handlers = list(http.threads)
        for handler in handlers:
            handler.join(timeout=10)
        http.server_close()
        thread.join(timeout=10)
        self._http = self._thread = None

    def __enter__(self) -> OpenAIWireServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (only while started)."""
        if self._http is None:
            raise RuntimeError("OpenAIWireServer is not running; use it as a context manager")
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        """The base URL to give an OpenAI client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pending(self) -> int:
        """How many queued replies no request has taken yet."""
        with self._lock:
            return len(self._queue)

    @property
    def last_request(self) -> dict[str, Any]:
        """The body of the most recent chat-completions request."""
        if not self.requests:
            raise AssertionError("OpenAIWireServer has received no request")
        return self.requests[-1]

    # --- scripting -----------------------------------------------------------------------

    def reply_text(self, text: str, *, usage: tuple[int, int] | None = (10, 5),
                   finish_reason: str = "stop", delay: float = 0.0) -> None:
        """Queue a plain text answer. ``usage`` is ``(prompt_tokens, completion_tokens)``;
        ``None`` leaves usage out (as some local servers do)."""
        self._push(_Completion(text=text, calls=[], usage=usage, finish_reason=finish_reason,
                               delay=delay))

    def reply_tool_calls(self, calls: Sequence[ToolCallSpec], *, text: str | None = None,
                         usage: tuple[int, int] | None = (20, 10),
                         finish_reason: str = "tool_calls", delay: float = 0.0) -> list[str]:
        """Queue a turn that calls one or more tools (parallel calls when several), optionally
        with ``text`` (the thought). Returns the call ids used (``call_<n>_<i>`` unless given).
        """
        resolved = self._calls(calls)
        self._push(_Completion(text=text, calls=resolved, usage=usage,
                               finish_reason=finish_reason, delay=delay))
        return [cid for _, _, cid in resolved]

    def reply_error(self, status: int, message: str | None = None, *,
                    headers: Mapping[str, str] | None = None, error_type: str | None = None,
                    code: str | None = None, delay: float = 0.0) -> None:
        """Queue an HTTP error with an OpenAI-style JSON body
        (``{"error": {"message", "type", "code"}}``); ``headers`` adds e.g. ``Retry-After``."""
        text = message or _DEFAULT_MESSAGES.get(status, f"HTTP {status}")
        self._push(_Error(status=status, body=_error_json(status, text, error_type, code),
                          headers=dict(headers or {}), delay=delay))

    def reply_context_too_long(self, *, window: int = 8192, tokens: int = 9000) -> None:
        """Queue the 400 OpenAI sends for a request longer than the model's window
        (``code: context_length_exceeded``); keel maps it to ``keel.ContextTooLong``."""
        self.reply_error(400, f"This model's maximum context length is {window} tokens. "
                         f"However, your messages resulted in {tokens} tokens. Please reduce "
                         "the length of the messages.", error_type="invalid_request_error",
                         code="context_length_exceeded")

    def reply_raw(self, status: int, body: bytes | str, *,
                  headers: Mapping[str, str] | None = None,
                  content_type: str = "application/json", delay: float = 0.0) -> None:
        """Queue a verbatim response (for bodies that are not JSON or not a completion)."""
        data = body.encode() if isinstance(body, str) else body
        self._push(_Error(status=status, body=data, headers=dict(headers or {}),
                          content_type=content_type, delay=delay))

    def reply_truncated_stream(self, text: str = "The answer is forty", *,
                               calls: Sequence[ToolCallSpec] = (), abort: bool = True,
                               usage: tuple[int, int] | None = (10, 5)) -> None:
        """Queue a reply that is cut off: about half of its stream chunks, then no
        ``finish_reason`` and no ``[DONE]``. With ``abort`` the connection drops mid-body
        (the chunked encoding is never terminated); without it the HTTP body ends cleanly
        but the stream is still incomplete. A non-streamed request gets half a JSON body."""
        self._push(_Completion(text=text, calls=self._calls(calls), usage=usage,
                               finish_reason="stop", truncate="abort" if abort else "eof"))

    def reply_delay(self, seconds: float, text: str = "(late answer)") -> None:
        """Queue a text answer sent only after ``seconds`` (to make clients time out)."""
        self.reply_text(text, delay=seconds)

    # --- internals -----------------------------------------------------------------------

    def _calls(self, calls: Sequence[ToolCallSpec]) -> list[tuple[str, str, str]]:
        with self._lock:
            turn = len(self._queue) + self._count
        return [(c[0], c[1], c[2] if len(c) == 3 else f"call_{turn}_{i}")
                for i, c in enumerate(calls)]

    def _push(self, reply: _Reply) -> None:
        with self._lock:
            self._queue.append(reply)

    def _take(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[
            _Reply | None, _Context]:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            self._count += 1
            reply = self._queue.popleft() if self._queue else None
            return reply, _Context(body=body, number=self._count, chunk_size=self.chunk_size,
                                   interleave=self.interleave,
                                   ignore_stream=self.ignore_stream)
