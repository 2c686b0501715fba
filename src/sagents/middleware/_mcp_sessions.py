"""The MCP client sessions of one agent server, each held open by a task of its own.

:class:`~sagents.middleware.MCPTools` keeps one :class:`AgentSessions` per agent server (by its
middleware context): a :class:`LiveSession` per MCP server, opened at the server's start or by
the first call after a failure, and closed at its end.

A session is held open by a task because anyio's context managers (the transport, the session)
must be left by the task that entered them, while calls come from the run's tool tasks. The
middleware owns these tasks and its ``on_server_stop`` awaits them. A task is *asked* to close
(an event), never cancelled once its session is open: the transport's own close is bounded
(stdio: stdin closed, two seconds for the process to exit, then SIGTERM, then SIGKILL), whereas a
cancellation arriving in the middle of it leaves ``mcp``'s stdio client waiting for a process it
no longer terminates. Only a session still opening is cancelled, and only once. Should a server
end without the stop hook having run for its sessions (its agent replaced by one without this
middleware), they are closed when the server's middleware context is released.

A session that fails is replaced on the next call. A call that finds its session already gone
(the server died while idle: the request never left) is made once on a new session; a call the
server died during is not repeated, since it may have had its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sagents.execution._containment import contained, describe
from sagents.execution._middleware_context import MiddlewareContext, set_middleware_context
from sagents.execution._tool_context import set_tool_context

if TYPE_CHECKING:
    from langchain_mcp_adapters.sessions import Connection
    from mcp import ClientSession
    from mcp.types import CallToolResult

__all__ = ["AgentSessions", "LiveSession", "Unavailable", "reason"]

_log = logging.getLogger("sagents.middleware.mcp")


class Unavailable(Exception):
    """The MCP server cannot take the call (the text says why); the call becomes an error
    result."""


class AgentSessions:
    """The MCP sessions of one agent server: one per MCP server, opened at its start or by the
    first call after a failure, closed at its end."""

    __slots__ = ("_connect_timeout", "_context", "_live", "_retired", "_servers", "_tasks")

    def __init__(
        self,
        servers: Mapping[str, Connection],
        connect_timeout: float,
        tasks: set[asyncio.Task[None]],
        context: MiddlewareContext,
    ) -> None:
        self._servers = servers
        self._connect_timeout = connect_timeout
        self._tasks = tasks  # the middleware's: every session task until it is done
        # Weak: this object is the value of a weak-keyed entry for that very context. Its
        # release closes what is left (see the module docstring).
        self._context = weakref.ref(context, self._context_released)
        self._live: dict[str, LiveSession] = {}
        self._retired: list[LiveSession] = []  # replaced after a failure; may be closing

    def live(self, server: str) -> LiveSession:
        """The server's session, a new one if there is none or it failed."""
        current = self._live.get(server)
        if current is None or not current.usable:
            if current is not None:
                current.close()
                self._retired = [s for s in self._retired if not s.closed]
                self._retired.append(current)
            current = self._live[server] = LiveSession(
                server, self._servers[server], self._connect_timeout, self._tasks
            )
        return current

    async def open_all(self, servers: Iterable[str]) -> None:
        """Open a session to each of ``servers``, concurrently; return once each is open or
        has failed (a failure is logged: the next call tries again)."""
        await asyncio.gather(*(self.live(server).opened() for server in servers))

    async def call(
        self, server: str, name: str, arguments: dict[str, Any] | None, progress_callback: Any
    ) -> CallToolResult:
        """Call tool ``name`` of ``server`` on this agent server's session.

        Raises:
            Unavailable: the server could not be reached, or the connection closed during the
                call.
        """
        import anyio
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        live = self.live(server)
        session = await live.ready()
        try:
            return await session.call_tool(name, arguments, progress_callback=progress_callback)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # The session had ended before the request left (its server died while idle):
            # nothing was sent, so a new session may take the call.
            live.fail("its connection had closed")
            session = await self.live(server).ready()
            return await session.call_tool(name, arguments, progress_callback=progress_callback)
        except McpError as exc:
            if exc.error.code != CONNECTION_CLOSED:
                raise
            live.fail("the connection closed during a call")
            raise Unavailable(
                "the connection closed during the call (the server may have crashed), so it may "
                "or may not have run; the next call starts the server again"
            ) from exc

    def _sessions(self) -> list[LiveSession]:
        sessions = [*self._live.values(), *self._retired]
        self._live.clear()
        self._retired.clear()
        return sessions

    async def aclose(self) -> None:
        """Close every session and wait for them to be closed."""
        sessions = self._sessions()
        for session in sessions:
            session.close()
        await asyncio.gather(*(session.wait_closed() for session in sessions))

    def _context_released(self, _: weakref.ref[MiddlewareContext]) -> None:
        for session in self._sessions():
            session.close()


class LiveSession:
    """One client session to one MCP server for one agent server, held open by its own task
    (see the module docstring)."""

    __slots__ = (
        "_closing",
        "_config",
        "_deadline",
        "_ready",
        "_stop",
        "_task",
        "_timeout",
        "failure",
        "server",
        "session",
    )

    def __init__(
        self, server: str, config: Connection, timeout: float, tasks: set[asyncio.Task[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        self.server = server
        self._config = config
        self._timeout = timeout
        self._deadline = loop.time() + timeout
        self.session: ClientSession | None = None
        #: Why the session is unusable (None while it opens or is open).
        self.failure: str | None = None
        self._closing = False
        self._ready = asyncio.Event()  # open, or failed
        self._stop = asyncio.Event()
        # A copy of the caller's context (tracing, tenant), without sagents' own per-call
        # variables, which _hold clears: the task outlives the call that may have opened it.
        self._task = loop.create_task(
            contained(self._hold()),
            name=f"sagents-mcp-{server}",
            context=contextvars.copy_context(),
        )
        tasks.add(self._task)
        self._task.add_done_callback(tasks.discard)
        self._task.add_done_callback(_log_failure)

    @property
    def usable(self) -> bool:
        return self.failure is None and not self._closing and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._task.done()

    async def _hold(self) -> None:
        from langchain_mcp_adapters.sessions import create_session

        set_tool_context(None)
        set_middleware_context(None)
        try:
            async with create_session(self._config) as session:
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            if self.failure is None:
                self.failure = reason(exc)
                _log.warning("MCP server %r failed: %s", self.server, self.failure)
        finally:
            self.session = None
            if self.failure is None:
                self.failure = "its session was closed"
            self._ready.set()

    async def opened(self) -> None:
        """Wait until the session is open or has failed (a failure is logged, not raised)."""
        with contextlib.suppress(Unavailable):
            await self.ready()

    async def ready(self) -> ClientSession:
        """The open session.

        Raises:
            Unavailable: it could not be opened within the connect timeout, or it failed.
        """
        if not self._ready.is_set():
            try:
                async with asyncio.timeout_at(self._deadline):
                    await self._ready.wait()
            except TimeoutError:
                self.fail(f"it did not start and answer within {self._timeout:g} s")
        session = self.session
        if session is None or self.failure is not None or self._closing:
            raise Unavailable(self.failure or "its session was closed")
        return session

    def fail(self, why: str) -> None:
        """Mark the session unusable and close it (the next call opens a new one)."""
        if self.failure is None:
            self.failure = why
            _log.warning("MCP server %r failed: %s", self.server, why)
        self.close()

    def close(self) -> None:
        """Ask the task to close the session; one still opening is cancelled (only ever once:
        see the module docstring)."""
        if self._closing:
            return
        self._closing = True
        if self._ready.is_set():
            self._stop.set()
        else:
            self._task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.wait({self._task})


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        _log.error("an MCP session task failed", exc_info=error)


def reason(exc: BaseException) -> str:
    """What went wrong, read through the exception groups anyio wraps failures in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return describe(exc)
