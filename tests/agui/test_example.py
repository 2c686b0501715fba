"""``examples/agui_app.py``, the example of ``docs/protocols.md``, runs as written."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import ModuleType

import httpx
import pytest

from tests.agui.conftest import AguiClient
from tests.examples import load_example


def load() -> ModuleType:
    return load_example("agui_app.py")


@pytest.fixture
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    app = load().app
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        )


async def test_the_example_app_runs_a_conversation_per_user(
    app_client: httpx.AsyncClient,
) -> None:
    app_client.headers["X-User"] = "ada"
    ada = AguiClient(app_client)
    first = await ada.say("Herons")
    assert first.status == 200
    assert first.text().startswith("Let me plan how to research 'Herons'.")
    assert first.interrupts()
    done = await ada.approve_all(first)
    assert done.last["outcome"] == {"type": "success"}
    # Another user's scope does not reach ada's conversation.
    bob = AguiClient(app_client, ada.thread_id)
    app_client.headers["X-User"] = "bob"
    refused_run = await bob.say("Let me in")
    assert refused_run.last["type"] == "RUN_ERROR"
    assert refused_run.last["code"] == "not_found"
    del app_client.headers["X-User"]
    assert (await AguiClient(app_client).say("Who am I?")).status == 422
