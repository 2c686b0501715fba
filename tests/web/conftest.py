"""Fixtures of the web tests: a real uvicorn server on a free port, SQLite in tmp_path.

Everything runs on real time (a server, sockets, a browser); waits are for conditions, with
short timeouts, never sleeps used as assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from langchain_core.language_models import BaseChatModel
from playwright.async_api import Browser, async_playwright
from starlette.types import ASGIApp
from websockets.asyncio.client import ClientConnection, connect

from sagents.web import WebConfig, WebServices, create_app
from sagents.web._identity import COOKIE_NAME

OUTPUT = Path(__file__).parent / "output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the tests own the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Demo:
    """A running demo server."""

    url: str
    services: WebServices
    config: WebConfig

    def client(self) -> httpx.AsyncClient:
        """A new browser-like HTTP client (it gets its own identity on its first request)."""
        return httpx.AsyncClient(base_url=self.url, timeout=10)

    def ws_url(self, conversation_id: str, **query: Any) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        base = self.url.replace("http", "ws", 1)
        return f"{base}/api/conversations/{conversation_id}/ws?{params}"

    def socket(self, client: httpx.AsyncClient, conversation_id: str, **query: Any) -> Any:
        """A websocket on a conversation, with ``client``'s identity cookie."""
        cookie = client.cookies.get(COOKIE_NAME)
        headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
        return connect(
            self.ws_url(conversation_id, **query), additional_headers=headers, open_timeout=5
        )


def demo_config(tmp_path: Path, **overrides: Any) -> WebConfig:
    base = WebConfig(
        data_dir=tmp_path / "data",
        secret=b"test-secret-0123456789abcdef",
        model_delay=0.005,
        grace_period=0.3,
        inactivity_timeout=None,
        drain_timeout=2.0,
        max_frame_bytes=4096,
    )
    return replace(base, **overrides)


@contextlib.asynccontextmanager
async def running_demo(
    config: WebConfig, *, model: BaseChatModel | None = None, port: int = 0
) -> AsyncIterator[Demo]:
    """The demo on uvicorn at 127.0.0.1:``port`` (0: a free one), with ``model`` if given."""
    app = create_app(config, model=model)
    async with serving(app, port=port) as url:
        yield Demo(url=url, services=app.state.services, config=config)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, port: int = 0) -> AsyncIterator[str]:
    """``app`` on uvicorn at 127.0.0.1:``port`` (0: a free one), with its lifespan; yields its
    base URL (``http://127.0.0.1:PORT``, no trailing slash)."""
    server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            ws_max_size=1 << 20,
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("the server did not start")
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


StartDemo = Callable[..., Awaitable[Demo]]


@pytest.fixture
async def start_demo(tmp_path: Path) -> AsyncIterator[StartDemo]:
    """Start a demo server with configuration overrides (one per test)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Demo:
            return await stack.enter_async_context(running_demo(demo_config(tmp_path, **overrides)))

        yield start


@pytest.fixture
async def demo(start_demo: StartDemo) -> Demo:
    return await start_demo()


async def next_frame(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The next frame matching ``predicate`` (earlier frames are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if predicate(frame):
                return dict(frame)


def is_event(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(frame: dict[str, Any]) -> bool:
        if frame.get("type") != "event" or frame["event"]["type"] != kind:
            return False
        return all(frame["event"].get(k) == v for k, v in fields.items())

    return match


def is_status(status: str) -> Callable[[dict[str, Any]], bool]:
    return is_event("status_changed", status=status)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0, step: float = 0.05
) -> None:
    """Poll ``condition`` until it holds (for state only visible over HTTP)."""
    async with asyncio.timeout(timeout):
        while True:
            if await condition():
                return
            await asyncio.sleep(step)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright. Without it the test skips, except
    under CI, where a missing browser is a failure."""
    if not Path(CHROMIUM).exists():
        if in_ci():
            pytest.fail(f"{CHROMIUM} is missing; CI installs it with scripts/browser")
        pytest.skip(f"{CHROMIUM} is missing (run scripts/browser to install it)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
