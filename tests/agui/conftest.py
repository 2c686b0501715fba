"""Fixtures of the AG-UI tests: the web demo's server (``tests/web/conftest.py``) and a client
speaking AG-UI over HTTP with httpx (the Node client is in ``test_client.py``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from tests.web.conftest import Demo, StartDemo, start_demo

__all__ = ["AguiClient", "Demo", "StartDemo", "start_demo"]

_events: TypeAdapter[Any] = TypeAdapter(Event)


@dataclass
class Run:
    """What one AG-UI run answered: the HTTP status and, for a stream, its events (each one
    validated by the protocol package's own ``Event`` model)."""

    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    def text(self) -> str:
        return "".join(e["delta"] for e in self.of("TEXT_MESSAGE_CONTENT"))

    def interrupts(self) -> list[dict[str, Any]]:
        outcome = self.last.get("outcome") or {}
        return list(outcome.get("interrupts", [])) if outcome.get("type") == "interrupt" else []


class AguiClient:
    """Runs of one thread, as the demo's browser identity of ``client``."""

    def __init__(self, client: httpx.AsyncClient, thread_id: str | None = None) -> None:
        self.client = client
        self.thread_id = thread_id or str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []

    def body(self, **fields: Any) -> dict[str, Any]:
        return {
            "threadId": self.thread_id,
            "runId": str(uuid.uuid4()),
            "messages": self.messages,
            "state": {},
            "tools": [],
            "context": [],
            "forwardedProps": {},
            **fields,
        }

    async def post(
        self, body: Mapping[str, Any] | bytes, headers: Mapping[str, str] | None = None
    ) -> Run:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        async with self.client.stream(
            "POST", "/agui", content=content, headers={**sent, **(headers or {})}
        ) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                run = Run(status=response.status_code)
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
                        _events.validate_python(data)
                        run.events.append(data)
                return run
            await response.aread()
            return Run(status=response.status_code, body=response.json())

    async def say(self, text: str, **fields: Any) -> Run:
        """Send ``text`` as a new user message (the client keeps the messages it sent)."""
        self.messages = [*self.messages, {"id": str(uuid.uuid4()), "role": "user", "content": text}]
        return await self.post(self.body(**fields))

    async def resume(self, entries: list[dict[str, Any]], **fields: Any) -> Run:
        return await self.post(self.body(resume=entries, **fields))

    async def approve_all(self, run: Run, payload: Any = None) -> Run:
        payload = {"type": "approve"} if payload is None else payload
        entries = [
            {"interruptId": i["id"], "status": "resolved", "payload": payload}
            for i in run.interrupts()
        ]
        return await self.resume(entries)


@pytest.fixture
async def demo(start_demo: StartDemo) -> Demo:
    # A long grace period: an AG-UI stream is a viewer, and the tests read the agent after it.
    return await start_demo(grace_period=30.0)


@pytest.fixture
async def agui(demo: Demo) -> Any:
    async with demo.client() as client:
        await client.get("/api/me")  # the identity cookie
        yield AguiClient(client)
