"""A fake Anthropic Messages API (``POST /v1/messages``), for testing ``ChatAnthropic`` offline.

The same idea as :mod:`.fake_openai`, smaller: scripted :class:`Completion` answers streamed as
Anthropic's server-sent events (``message_start``, a ``content_block_start`` / ``..._delta`` /
``..._stop`` triple per text or ``tool_use`` block, ``message_delta`` with the stop reason and
usage, ``message_stop``) or returned whole, and the API's check that every ``tool_use`` block is
answered by a ``tool_result`` block at the start of the next (user) message, else 400.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .fake_openai import Completion, ErrorResponse, LoopbackServer, RecordedRequest, ScriptEntry

__all__ = ["FakeAnthropic", "validate_messages_request"]


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def validate_messages_request(body: Any) -> str | None:
    """What the real Messages API would reject in ``body``, or None if it is valid."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        if message.get("role") not in {"user", "assistant"}:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if message["role"] != "assistant":
            continue
        ids = [b.get("id") for b in _blocks(message) if b.get("type") == "tool_use"]
        if not ids:
            continue
        following = messages[index + 1] if index + 1 < len(messages) else None
        answered = set()
        if following is not None and following.get("role") == "user":
            for block in _blocks(following):
                if block.get("type") != "tool_result":
                    break
                answered.add(block.get("tool_use_id"))
        missing = [i for i in ids if i not in answered]
        if missing:
            return (
                f"messages.{index + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    return None


class FakeAnthropic:
    """``async with FakeAnthropic() as server:``; give clients ``base_url=server.base_url``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: list[ScriptEntry] = []
        self.port = 0
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        self._loopback = LoopbackServer(self.app)

    @property
    def base_url(self) -> str:
        """The ``base_url`` for ``ChatAnthropic`` (the SDK appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def script(self, *entries: ScriptEntry) -> None:
        self._script.extend(entries)

    async def __aenter__(self) -> FakeAnthropic:
        await self._loopback.start()
        self.port = self._loopback.port
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._loopback.stop()

    async def _messages(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        record = RecordedRequest(
            body=body if isinstance(body, dict) else {}, headers=dict(request.headers)
        )
        self.requests.append(record)
        problem = validate_messages_request(body)
        if problem is not None:
            record.status, record.error = 400, problem
            return self._error(400, "invalid_request_error", problem)
        assert isinstance(body, dict)
        entry = (
            self._script.pop(0)
            if self._script
            else ErrorResponse(status=500, message="fake Anthropic: the test's script is empty")
        )
        if isinstance(entry, ErrorResponse):
            record.status, record.error = entry.status, entry.message
            return self._error(entry.status, "api_error", entry.message, dict(entry.headers))
        record.status = 200
        if body.get("stream"):
            return StreamingResponse(
                self._sse(entry, body["model"]), media_type="text/event-stream"
            )
        return JSONResponse(self._whole(entry, body["model"]))

    @staticmethod
    def _error(
        status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        body = {"type": "error", "error": {"type": type_, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)

    @staticmethod
    def _content(entry: Completion) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if entry.text:
            content.append({"type": "text", "text": entry.text})
        for call in entry.tool_calls:
            arguments = json.loads(call.arguments_json)
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}
            )
        return content

    def _whole(self, entry: Completion, model: str) -> dict[str, Any]:
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._content(entry),
            "stop_reason": "tool_use" if entry.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": entry.usage[0], "output_tokens": entry.usage[1]},
        }

    async def _sse(self, entry: Completion, model: str) -> AsyncIterator[bytes]:
        def event(data: dict[str, Any]) -> bytes:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

        start = {**self._whole(entry, model), "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": entry.usage[0], "output_tokens": 1}
        yield event({"type": "message_start", "message": start})
        index = 0
        if entry.text:
            block = {"type": "text", "text": ""}
            yield event({"type": "content_block_start", "index": index, "content_block": block})
            for i in range(0, len(entry.text), entry.chunk_size):
                if entry.delay:
                    await asyncio.sleep(entry.delay)
                delta = {"type": "text_delta", "text": entry.text[i : i + entry.chunk_size]}
                yield event({"type": "content_block_delta", "index": index, "delta": delta})
            yield event({"type": "content_block_stop", "index": index})
            index += 1
        for call in entry.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            yield event({"type": "content_block_start", "index": index, "content_block": block})
            arguments = call.arguments_json
            for i in range(0, len(arguments), entry.args_piece):
                piece = arguments[i : i + entry.args_piece]
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield event({"type": "content_block_delta", "index": index, "delta": delta})
            yield event({"type": "content_block_stop", "index": index})
            index += 1
        stop = "tool_use" if entry.tool_calls else "end_turn"
        yield event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                # cumulative, as the current API sends it (langchain reads usage from here)
                "usage": {"input_tokens": entry.usage[0], "output_tokens": entry.usage[1]},
            }
        )
        yield event({"type": "message_stop"})
