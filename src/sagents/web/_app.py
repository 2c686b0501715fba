"""The demo application: :func:`create_app` builds it, :func:`serve` runs it.

``create_app`` wires the pieces — :class:`~sagents.web._services.WebServices` started and
closed by the lifespan, the middleware (outermost first: cross-origin writes to the API are
refused, bodies over ``max_body_bytes`` are refused unparsed, the identity cookie is read or
issued), the REST API, the websocket, the health probes, the static page (plain ES modules and
CSS shipped in the package: no build step and nothing fetched from a CDN) and, when enabled, the
live debugger at ``/debug``.

``serve`` runs it on uvicorn and makes SIGTERM (and Ctrl-C) a graceful shutdown in this order:
readiness flips to 503 at once, uvicorn stops accepting and closes the sockets, then the
lifespan lets running agents finish (``drain_timeout``), stops every agent (each saves its
state) and closes the database; then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from fastapi.responses import FileResponse
from langchain_core.language_models import BaseChatModel
from starlette.staticfiles import StaticFiles

from sagents.web import _api, _health
from sagents.web._config import WebConfig
from sagents.web._debugger import debugger_app
from sagents.web._identity import IdentityMiddleware, SameOriginMiddleware, Signer, load_secret
from sagents.web._limits import BodyLimitMiddleware
from sagents.web._services import WebServices
from sagents.web._socket import conversation_socket

__all__ = ["create_app", "serve"]

STATIC = Path(__file__).parent / "static"


def create_app(config: WebConfig | None = None, *, model: BaseChatModel | None = None) -> FastAPI:
    """Build the demo application.

    Args:
        config: the configuration (default: ``WebConfig()``, data in ``./sagents-data``).
        model: a chat model to use instead of the one the configuration names (tests).

    Returns:
        A FastAPI app; its ``state.services`` holds the runtime and the database.
    """
    config = config or WebConfig()
    services = WebServices(config, model=model)
    # An operator's tool, off by default; Starlette never runs a mounted app's lifespan, so this
    # one enters the debugger's (its telemetry handler is detached on shutdown).
    debugger = (
        debugger_app(services.runtime, token=config.debugger_token) if config.debugger else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if debugger is not None:
                await stack.enter_async_context(debugger)
            await services.start()
            try:
                yield
            finally:
                await services.aclose()

    app = FastAPI(title="sagents demo", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.services = services
    secret = config.secret if config.secret is not None else load_secret(config.data_dir)
    # Each add_middleware wraps the ones before it: the last added runs first.
    app.add_middleware(IdentityMiddleware, signer=Signer(secret))
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(SameOriginMiddleware, prefix="/api/")
    _api.install_error_handlers(app)
    app.include_router(_api.router)
    app.include_router(_health.router)
    app.add_api_websocket_route("/ws/conversations/{conversation_id}", conversation_socket)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if debugger is not None:
        app.mount("/debug", debugger)
    return app


async def serve(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` with uvicorn until SIGTERM or Ctrl-C, then shut down gracefully.

    Args:
        app: an app from :func:`create_app`.
        host: the interface to listen on.
        port: the port; 0 picks a free one.
        on_ready: called with the page's URL once the server listens.
        log_level: uvicorn's log level.
    """
    import uvicorn

    services: WebServices = app.state.services
    frame_limit = services.config.max_frame_bytes
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        ws="websockets-sansio",
        # Frames far above the app's own limit are cut by the protocol (close 1009); the app
        # answers frames just above its limit with an error frame instead.
        ws_max_size=max(4 * frame_limit, 1 << 20),
        timeout_graceful_shutdown=max(1, math.ceil(services.config.drain_timeout)),
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            services.begin_drain()  # readiness flips before anything else
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once it has shut down, so that the process dies of
            # it; the shutdown here is complete and graceful, so the command exits with 0.
            self._captured_signals.clear()

    server = Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        # uvicorn has no "started" event to wait on; this only runs during start-up.
        while not server.started:
            if task.done():
                await task  # start-up failed: raise its error
                raise SystemExit(1)  # uvicorn reported the failure and gave up
            await asyncio.sleep(0.02)
        if on_ready is not None:
            bound = server.servers[0].sockets[0].getsockname()
            on_ready(f"http://{_url_host(host)}:{bound[1]}/")
        await task
    finally:
        if not task.done():
            server.should_exit = True
            await task


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
