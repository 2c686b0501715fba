"""The one model and the one tool every system is measured with.

:class:`FakeToolModel` is a real langchain-core ``BaseChatModel`` (so ``ainvoke``/``astream`` go
through langchain-core's callback machinery exactly as a provider's would), deterministic and
stateless: it answers from the last message of the prompt, so one instance serves any number of
conversations at once. A turn is one user message → a reply calling ``echo`` → the tool result →
a final text reply: two model calls and one tool call.

``latency`` (seconds) makes every call ``await asyncio.sleep(latency)`` first (W4: a provider's
round trip); ``chunks`` splits a streamed text answer into that many deltas (W7). The token usage
is reported, as a provider does, so a system that tracks usage pays for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

__all__ = ["FakeToolModel", "echo", "make_model"]

_USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


@tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


class FakeToolModel(BaseChatModel):
    """Zero-latency tool-calling model: user message → ``echo`` call; tool result → text."""

    latency: float = 0.0
    chunks: int = 1
    #: Answer every prompt with text (a model without tools, W7).
    always_text: bool = False
    #: Called with (chunk index, perf_counter) as each streamed text delta is produced (W7).
    on_delta: Callable[[int, float], None] | None = None

    @property
    def _llm_type(self) -> str:
        return "bench-fake"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # As a provider integration does: tools converted once, bound to every call.
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _answer(self, messages: Sequence[BaseMessage]) -> tuple[str, dict[str, Any] | None]:
        last = messages[-1]
        if isinstance(last, ToolMessage) or self.always_text:
            return f"done: {last.content}", None
        text = last.content if isinstance(last.content, str) else str(last.content)
        # Unique per conversation position, so HITL decisions and checkpoints never collide.
        return "", {"name": "echo", "args": {"text": text}, "id": f"call_{len(messages)}"}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, call = self._answer(messages)
        message = AIMessage(
            content=text,
            tool_calls=[tool_call(**call)] if call else [],
            usage_metadata=_USAGE,  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._generate(messages, stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(messages)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.latency:
            await asyncio.sleep(self.latency)
        for index, chunk in enumerate(self._chunks(messages)):
            if self.chunks > 1:
                if self.on_delta is not None:
                    self.on_delta(index, time.perf_counter())
                await asyncio.sleep(0)  # a network stream: each delta arrives on its own
            yield chunk

    def _chunks(self, messages: Sequence[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        text, call = self._answer(messages)
        if call is not None:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        tool_call_chunk(
                            name=call["name"],
                            args=json.dumps(call["args"]),
                            id=call["id"],
                            index=0,
                        )
                    ],
                    usage_metadata=_USAGE,  # type: ignore[arg-type]
                    chunk_position="last",
                )
            )
            return
        n = max(1, self.chunks)
        for i in range(n):
            last = i == n - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=text if n == 1 else f"{i} ",
                    usage_metadata=_USAGE if last else None,  # type: ignore[arg-type]
                    chunk_position="last" if last else None,
                )
            )


def make_model(
    *, latency: float = 0.0, chunks: int = 1, always_text: bool = False
) -> FakeToolModel:
    """A fresh model (one per benchmark process; all systems get the same class and tool)."""
    return FakeToolModel(latency=latency, chunks=chunks, always_text=always_text)
