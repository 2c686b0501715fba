"""``examples/agui_app.py``, the example of ``docs/protocols.md``, runs as written."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.agui.conftest import AguiClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agui_app.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agui_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
