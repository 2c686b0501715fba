"""A fake OpenAI-compatible HTTP server, so real provider clients can be tested offline.

It serves ``POST /v1/chat/completions`` on 127.0.0.1 (a free port) with uvicorn, in the test's own
event loop, and answers from a script the test writes: :class:`Completion` (text and/or tool
calls, streamed as server-sent events or as one JSON body) or :class:`ErrorResponse` (any status,
headers and OpenAI-style error body). Like the real API it first *validates* each request — most
importantly that every assistant message with ``tool_calls`` is followed by one ``tool`` message
per call id before any other message — and answers 400 with an OpenAI error body when it is not,
without consuming the script. Every request is recorded, so a test can check what the client
really sent.

The streamed shape follows the real API: a first chunk with the role, text in several content
deltas, each tool call as a first delta with ``id``, ``type`` and ``name`` then its JSON arguments
in pieces (pieces of parallel calls interleaved, distinguished only by ``index``), a chunk with
the ``finish_reason``, a usage chunk with empty ``choices`` when the request asked for
``stream_options.include_usage``, and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "Completion",
    "ErrorResponse",
    "FakeOpenAI",
    "FakeToolCall",
    "LoopbackServer",
    "RecordedRequest",
    "ScriptEntry",
    "validate_chat_request",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeToolCall:
    """A tool call in a scripted completion; ``arguments`` as a dict, or raw (even broken) JSON."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A successful answer.

    Attributes:
        text: the assistant's text, streamed ``chunk_size`` characters at a time.
        tool_calls: tool calls; their arguments are streamed ``args_piece`` characters at a time.
        usage: ``(prompt_tokens, completion_tokens)``.
        delay: seconds between streamed chunks (0: as fast as possible).
    """

    text: str = ""
    tool_calls: Sequence[FakeToolCall] = ()
    usage: tuple[int, int] = (11, 7)
    chunk_size: int = 4
    args_piece: int = 5
    delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse:
    """An HTTP error with an OpenAI-style body (``{"error": {...}}``)."""

    status: int
    message: str = "The server had an error while processing your request."
    type: str = "server_error"
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


ScriptEntry: TypeAlias = Completion | ErrorResponse
Responder: TypeAlias = Callable[[dict[str, Any]], ScriptEntry]


@dataclass(slots=True, kw_only=True)
class RecordedRequest:
    """One request the server received, and the status it answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 0
    error: str | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def roles(self) -> list[str]:
        return [m.get("role", "?") for m in self.messages]


def validate_chat_request(body: Any) -> tuple[str, str | None] | None:
    """What the real API would reject in ``body``: ``(message, param)``, or None if valid."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must contain at least one message.", "messages"
    for index, tool in enumerate(body.get("tools") or []):
        if tool.get("type") != "function" or not tool.get("function", {}).get("name"):
            return f"Invalid tool at tools[{index}]: a function with a name is required.", (
                f"tools[{index}]"
            )
    expected: set[str] = set()  # call ids still owed a tool message
    expecting_from: int | None = None
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in {"system", "developer", "user", "assistant", "tool"}:
            return (
                f"Invalid value: {role!r}. Supported values are: 'system', 'user', "
                "'assistant', 'tool' and 'developer'.",
                f"messages.[{index}].role",
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if expecting_from is None or call_id not in expected:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            expected.discard(call_id)
            continue
        if expected:
            missing = ", ".join(sorted(expected))
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {missing}",
                f"messages.[{expecting_from}].role",
            )
        expecting_from = None
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                if (
                    not call.get("id")
                    or call.get("type") != "function"
                    or not isinstance(function.get("name"), str)
                    or not isinstance(function.get("arguments"), str)
                ):
                    return "Invalid tool call in an assistant message.", (
                        f"messages.[{index}].tool_calls"
                    )
                expected.add(call["id"])
            expecting_from = index
    if expected:
        missing = ", ".join(sorted(expected))
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {missing}",
            f"messages.[{expecting_from}].role",
        )
    return None


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class LoopbackServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port), in the running event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # raise why it could not start
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()


class FakeOpenAI:
    """The fake server; use as ``async with FakeOpenAI() as server:`` (see :attr:`base_url`).

    Args:
        responder: answers every request instead of the script (gets the JSON body).
    """

    def __init__(self, *, responder: Responder | None = None) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._script: list[ScriptEntry] = []
        self.port = 0
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._loopback = LoopbackServer(self.app)

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give an OpenAI client (ends with ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *entries: ScriptEntry) -> None:
        """Queue answers; each accepted request takes the next one."""
        self._script.extend(entries)

    @property
    def accepted(self) -> list[RecordedRequest]:
        """The requests that passed validation (whatever the script answered)."""
        return [r for r in self.requests if r.status != 400]

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeOpenAI:
        await self._loopback.start()
        self.port = self._loopback.port
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._loopback.stop()

    # -- the endpoint ----------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = RecordedRequest(
            body=body if isinstance(body, dict) else {}, headers=dict(request.headers)
        )
        self.requests.append(record)
        problem = validate_chat_request(body)
        if problem is not None:
            record.status, record.error = 400, problem[0]
            return JSONResponse(
                _error_body(problem[0], "invalid_request_error", problem[1], None), status_code=400
            )
        assert isinstance(body, dict)
        if self.responder is not None:
            entry = self.responder(body)
        elif self._script:
            entry = self._script.pop(0)
        else:
            entry = ErrorResponse(status=500, message="fake OpenAI: the test's script is empty")
        if isinstance(entry, ErrorResponse):
            record.status, record.error = entry.status, entry.message
            return JSONResponse(
                _error_body(entry.message, entry.type, None, entry.code),
                status_code=entry.status,
                headers=dict(entry.headers),
            )
        record.status = 200
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._sse(entry, body["model"], completion_id, include_usage),
                media_type="text/event-stream",
            )
        return JSONResponse(self._whole(entry, body["model"], completion_id))

    @staticmethod
    def _usage(entry: Completion) -> dict[str, int]:
        prompt, completion = entry.usage
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _whole(self, entry: Completion, model: str, completion_id: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": entry.text or None}
        if entry.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in entry.tool_calls
            ]
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if entry.tool_calls else "stop",
                }
            ],
            "usage": self._usage(entry),
        }

    async def _sse(
        self, entry: Completion, model: str, completion_id: str, include_usage: bool
    ) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if delta is None:
                data["usage"] = self._usage(entry)
            elif include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n".encode()

        async def pause() -> None:
            if entry.delay:
                await asyncio.sleep(entry.delay)

        yield chunk({"role": "assistant", "content": ""})
        text = entry.text
        for start in range(0, len(text), entry.chunk_size):
            await pause()
            yield chunk({"content": text[start : start + entry.chunk_size]})
        calls = list(entry.tool_calls)
        for index, call in enumerate(calls):
            await pause()
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield chunk({"tool_calls": [head]})
        # Argument pieces of parallel calls interleaved: only ``index`` tells them apart.
        pieces = [
            [
                call.arguments_json[i : i + entry.args_piece]
                for i in range(0, len(call.arguments_json), entry.args_piece)
            ]
            for call in calls
        ]
        for round_ in range(max((len(p) for p in pieces), default=0)):
            for index, call_pieces in enumerate(pieces):
                if round_ < len(call_pieces):
                    await pause()
                    delta = {"index": index, "function": {"arguments": call_pieces[round_]}}
                    yield chunk({"tool_calls": [delta]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if include_usage:
            yield chunk(None)
        yield b"data: [DONE]\n\n"
