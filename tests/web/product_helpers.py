"""Helpers of the product tests (issue 14): a model that holds its first reply mid-stream until
the test lets it go, a model that fails on demand, a port nothing listens on. (The demo server
with a chosen model and port is ``tests.web.conftest.running_demo``.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import PrivateAttr

from sagents.execution import _scripted_model, demo_model
from sagents.execution._scripted_model import Fail, Reply, Responder, ScriptedChatModel


def _demo_responder() -> Responder:
    responder = demo_model(delay=0.001).responder
    if responder is None:  # pragma: no cover - demo_model always answers with a responder
        raise RuntimeError("demo_model has no responder")
    return responder


#: The demo's scripted answers, streamed in chunks of four characters.
DEMO_RESPONDER = _demo_responder()


def closed_port() -> int:
    """A local port nothing listens on (a connection to it is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class GatedModel(ScriptedChatModel):
    """The demo's scripted model, whose streamed reply stops before chunk ``hold_at`` until
    :meth:`release`; :meth:`wait_held` returns once one is stopped there. Only the first reply
    stops, or, with ``every_turn``, each reply to a new message of the person's (released one
    at a time)."""

    hold_at: int = 4
    every_turn: bool = False
    _go: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)
    _held: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        new_turn = isinstance(messages[-1], HumanMessage)
        holds = new_turn if self.every_turn else not self._go.is_set()
        index = 0
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            if holds and index == self.hold_at:
                self._held.set()
                await self._go.wait()
                if self.every_turn:
                    self._go.clear()
            index += 1
            yield chunk

    async def wait_held(self) -> None:
        async with asyncio.timeout(15):
            await self._held.wait()

    def release(self) -> None:
        if self.every_turn:
            self._held.clear()  # the next wait_held waits for the next reply
        self._go.set()


# The inherited fields are annotated with names of the scripted model's module.
GatedModel.model_rebuild(_types_namespace=vars(_scripted_model))


def gated_model(hold_at: int = 4) -> GatedModel:
    return GatedModel(responder=DEMO_RESPONDER, record_prompts=False, hold_at=hold_at)


class Switch:
    """Whether the flaky model fails (the test turns it off to let a retry succeed)."""

    def __init__(self) -> None:
        self.failing = True


def flaky_model(switch: Switch) -> ScriptedChatModel:
    """The demo's model, failing every call while ``switch.failing``."""

    def respond(messages: list[BaseMessage]) -> Reply | Fail:
        if switch.failing:
            return Fail(error=ConnectionError("the provider is unreachable (a test's model)"))
        return DEMO_RESPONDER(messages)

    return ScriptedChatModel(responder=respond, record_prompts=False)
