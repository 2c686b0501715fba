"""The demo application: :func:`create_app` builds it, :func:`serve` runs it.

``create_app`` wires the pieces — :class:`~sagents.web._services.WebServices` started and
closed by the lifespan, the middleware (outermost first: cross-origin writes to the API are
refused, bodies over ``max_body_bytes`` are refused unparsed, the identity cookie is read or
issued), the :func:`~sagents.web.conversation_router` at ``/api`` with the cookie's identity as
the scope (the list, the snapshot and the websocket: the demo is one user of the library's
router), the demo's own REST routes, the AG-UI endpoint (``/agui``, with the ``agui`` extra),
the health probes, the static page (plain ES modules and CSS shipped in the package: no build
step and nothing fetched from a CDN) and, when enabled, the live debugger at ``/debug``.

``serve`` runs it on uvicorn and makes SIGTERM (and Ctrl-C) a graceful shutdown in this order:
readiness flips to 503 at once, uvicorn stops accepting and closes the sockets, then the
lifespan lets running agents finish (``drain_timeout``), stops every agent (each saves its
state) and closes the database; then the process exits.

``serve_workers`` runs it in several uvicorn worker processes over one Ray cluster (a local one
unless ``WebConfig.ray_address`` names one): the agents live on the cluster's hosts, so any
worker serves any conversation. This process prepares the tables and the hosts first, and
stops the hosts it started (each agent saved) once the workers have exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import errno
import logging
import math
import os
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from langchain_core.language_models import BaseChatModel
from starlette.staticfiles import StaticFiles

from sagents._errors import ConfigurationError
from sagents.web import _api, _health
from sagents.web._agui import mount_agui
from sagents.web._config import WebConfig
from sagents.web._debugger import debugger_app
from sagents.web._identity import IdentityMiddleware, Signer, cookie_identity, load_secret
from sagents.web._limits import BodyLimitMiddleware
from sagents.web._origin import SameOriginMiddleware
from sagents.web._router import conversation_router
from sagents.web._services import RAY_NAMESPACE, WebServices

__all__ = ["WORKER_CONFIG_ENV", "bind", "create_app", "serve", "serve_workers", "worker_app"]

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
    conversations = conversation_router(
        services.runtime,
        services.session_config,
        scope=cookie_identity,
        store=services.store,
        before_action=services.before_action,
        max_frame_bytes=config.max_frame_bytes,
        max_message_chars=config.max_message_chars,
    )
    app.include_router(conversations, prefix="/api")
    app.include_router(_api.router)
    app.include_router(_health.router)
    mount_agui(app, services)  # POST /agui, when the agui extra is installed

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
        log_level: uvicorn's log level. The ``sagents`` loggers print INFO and up to stderr,
            unless this process configured logging itself.

    Raises:
        ConfigurationError: the port is in use.
    """
    import uvicorn

    services: WebServices = app.state.services
    listener = bind(host, port)
    config = _uvicorn_config(app, services.config, host=host, port=port, log_level=log_level)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            services.begin_drain()  # readiness flips before anything else
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once it has shut down, so that the process dies of
            # it; the shutdown here is complete and graceful, so the command exits with 0.
            self._captured_signals.clear()

    server = Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[listener]))
    try:
        # uvicorn has no "started" event to wait on; this only runs during start-up.
        while not server.started:
            if task.done():
                await task  # start-up failed: raise its error
                raise SystemExit(1)  # uvicorn reported the failure and gave up
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready(_url(host, listener))
        await task
    finally:
        if not task.done():
            server.should_exit = True
            await task


def serve_workers(
    config: WebConfig,
    *,
    workers: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    on_cluster: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the demo from ``workers`` processes (uvicorn's workers, on one socket) over one
    Ray cluster, until SIGTERM or Ctrl-C: any worker serves any conversation, since the
    agents run on the cluster's hosts. Blocks; call it from the main thread.

    With no ``config.ray_address`` a local Ray is started here, and its hosts are stopped
    (every agent saved) after the workers have exited; a cluster given by address is left
    running. ``on_cluster`` is called with the cluster's address (another server process joins
    it with ``WebConfig(ray_address=...)``, e.g. ``sagents demo --ray-address``).

    Raises:
        ConfigurationError: the port is in use, or the workers did not start.
    """
    import ray
    from uvicorn.supervisors import Multiprocess

    listener = bind(host, port)
    owns_cluster = config.ray_address is None
    try:
        ray.init(
            address=config.ray_address,
            namespace=RAY_NAMESPACE,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    except ConnectionError as exc:
        raise ConfigurationError(
            f"cannot join the Ray cluster at {config.ray_address}: {exc}. A cluster with "
            "token authentication (Ray's default for a local one) needs RAY_AUTH_MODE=token "
            "here, and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
        ) from exc
    try:
        if owns_cluster:
            gcs = ray.get_runtime_context().gcs_address
            config = dataclasses.replace(config, ray_address=gcs)
        if on_cluster is not None:
            on_cluster(str(config.ray_address))
        if config.secret is None:
            load_secret(config.data_dir)  # once here, rather than raced by the workers
        cluster = _ClusterOwner(config, owns_cluster=owns_cluster)
        cluster.start_and_wait()  # the tables and the hosts, before any worker serves
        try:
            os.environ[WORKER_CONFIG_ENV] = config.to_json()
            # uvicorn stops a worker with SIGTERM, which it handles gracefully; Ray's crash
            # handler would first print a stack dump for it, as for a fault.
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
            uv = _uvicorn_config(
                f"{__name__}:worker_app",
                config,
                host=host,
                port=port,
                log_level=log_level,
                factory=True,
                workers=workers,
            )
            supervisor = Multiprocess(uv, sockets=[listener])
            served = threading.Event()
            url = _url(host, listener)
            announcer = threading.Thread(
                target=_announce,
                args=(url, supervisor.should_exit, served, on_ready),
                daemon=True,
            )
            announcer.start()
            supervisor.run()
        finally:
            cluster.stop()
    finally:
        ray.shutdown()
    if not served.is_set():
        raise ConfigurationError("the demo's workers stopped before serving: see their errors")


#: Where :func:`serve_workers` puts the configuration for its worker processes.
WORKER_CONFIG_ENV = "SAGENTS_DEMO_CONFIG"


def worker_app() -> FastAPI:
    """The app of one worker process of :func:`serve_workers` (uvicorn's app factory),
    built from the configuration in ``SAGENTS_DEMO_CONFIG``."""
    text = os.environ.get(WORKER_CONFIG_ENV)
    if text is None:
        raise ConfigurationError(
            f"{WORKER_CONFIG_ENV} is not set: worker_app is started by serve_workers "
            "(sagents demo --workers N)"
        )
    return create_app(WebConfig.from_json(text))


class _ClusterOwner:
    """The services of the process that started the workers, on a thread with its own event
    loop: it prepares the tables and the hosts before the workers start, and after they have
    exited lets the runs finish and, if it started the cluster, stops its hosts."""

    def __init__(self, config: WebConfig, *, owns_cluster: bool) -> None:
        self._services = WebServices(config, owns_cluster=owns_cluster)
        self._thread = threading.Thread(target=self._run, name="sagents cluster owner")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start_and_wait(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self._services.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._services.aclose()


def _announce(
    url: str,
    stopped: threading.Event,
    served: threading.Event,
    on_ready: Callable[[str], None] | None,
) -> None:
    """Set ``served`` and call ``on_ready(url)`` once a worker answers ready."""
    while not stopped.wait(0.1):
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}health/ready", timeout=2) as response,
        ):
            if response.status == 200:
                served.set()
                if on_ready is not None:
                    on_ready(url)
                return


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` for uvicorn.

    Raises:
        ConfigurationError: the port is in use or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use (another demo?): stop that process, or pick "
                "another port with --port (0 picks a free one)"
            ) from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.set_inheritable(True)  # uvicorn's worker processes serve it too
    return listener


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus sagents' own loggers on stderr when nothing else shows them.

    Without a handler, what sagents logs (a run that failed, with the model's error; a save
    that did not finish) reaches only Python's last-resort handler: bare messages, with no
    time, level or source, and none of its INFO lines. So, in the process that serves and in
    each worker (uvicorn applies this configuration in both), the ``sagents`` loggers get a
    handler of their own, one line per record. A process that configured logging itself (a
    handler on the root or the ``sagents`` logger) keeps its configuration.
    """
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    if logging.getLogger().handlers or logging.getLogger("sagents").handlers:
        return log_config
    log_config["formatters"]["sagents"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"
    }
    log_config["handlers"]["sagents"] = {
        "class": "logging.StreamHandler",
        "formatter": "sagents",
        "stream": "ext://sys.stderr",
    }
    # Not propagated: a root handler added later would print each line twice.
    log_config["loggers"]["sagents"] = {
        "handlers": ["sagents"],
        "level": "INFO",
        "propagate": False,
    }
    return log_config


def _uvicorn_config(
    app: FastAPI | str, config: WebConfig, *, host: str, port: int, log_level: str, **more: Any
) -> Any:
    import uvicorn

    frame_limit = config.max_frame_bytes
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=_log_config(),
        lifespan="on",
        ws="websockets-sansio",
        # Frames far above the app's own limit are cut by the protocol (close 1009); the app
        # answers frames just above its limit with an error frame instead.
        ws_max_size=max(4 * frame_limit, 1 << 20),
        timeout_graceful_shutdown=max(1, math.ceil(config.drain_timeout)),
        **more,
    )


def _url(host: str, listener: socket.socket) -> str:
    return f"http://{_url_host(host)}:{listener.getsockname()[1]}/"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
