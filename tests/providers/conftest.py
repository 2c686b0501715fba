"""Fixtures for the provider tests: a fake OpenAI server and real ``ChatOpenAI`` clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from .fake_openai import FakeOpenAI


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def chat_openai(openai_server: FakeOpenAI) -> AsyncIterator[Callable[..., ChatOpenAI]]:
    """Build real ``ChatOpenAI`` clients pointed at the fake server.

    ``max_retries=0`` leaves retries to sagents' ``RetryPolicy``; ``stream_usage=True`` asks for
    the usage chunk (it is only on by default for api.openai.com). The HTTP client is ours so it
    is closed at the end (and ignores proxy variables: the server is on loopback).
    """
    http = httpx.AsyncClient(trust_env=False, timeout=10.0)

    def build(**overrides: Any) -> ChatOpenAI:
        options: dict[str, Any] = {
            "base_url": openai_server.base_url,
            "api_key": "test",
            "model": "gpt-test",
            "max_retries": 0,
            "stream_usage": True,
            "http_async_client": http,
        }
        options.update(overrides)
        return ChatOpenAI(**options)

    yield build
    await http.aclose()
