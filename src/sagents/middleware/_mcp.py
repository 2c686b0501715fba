"""``MCPTools``: the tools of MCP servers, over client sessions each agent server owns.

An MCP server (the Model Context Protocol) offers tools over stdio (a subprocess) or HTTP.
Two things are needed to give them to an agent, and they have different lives:

- **The tool definitions** (names, descriptions, argument schemas) are part of the agent: an
  :class:`~sagents.Agent` binds its tools to the model once, when it is built. So they are known
  before any agent runs: :meth:`MCPTools.discover` connects to each server once and lists them,
  or they are given (``MCPTools(servers, tools={...})``, e.g. from a cache). One ``MCPTools``
  then serves any number of agents, as one ``FileSystem()`` does.
- **The client sessions** belong to one agent server: ``on_server_start`` opens one per MCP
  server (a subprocess per agent for stdio), the tools call through the session of the server
  running them, and ``on_server_stop`` closes them on every ending (inactivity, no viewers, a
  stop, a crash, the runtime's shutdown). A restarted or restored agent opens new ones. So an
  agent holds a process only while it lives, and a hundred agents that end leave none behind.

Each session is held open by a task of its own, which the middleware owns and the stop hook
awaits; how, and why such a task is asked to close rather than cancelled, is told in
``_mcp_sessions.py``.

**Failures are tool errors.** A server that cannot be started, does not answer within
``connect_timeout``, or dies, never fails the agent's start nor crashes it: a call to it returns
an error result saying so, and the next call opens a new session. A call that finds the session
already gone (nothing was sent) is made once on a new session at once; a call the server died
during is not repeated, since it may have had its effect.

Under a plain ``Agent.run`` (no agent server, so no start or stop) each call opens its own session
and closes it. ``langchain-mcp-adapters`` converts the definitions and the results (text, images,
structured content, ``isError`` results as error tool messages); its ``MultiServerMCPClient``
is not used because its tools either open a session per call or are bound to one session whose
life is the caller's, and neither gives each agent server sessions that live and die with it.
The ``mcp`` and ``langchain-mcp-adapters`` packages (``pip install 'sagents[mcp]'``) are
imported when an ``MCPTools`` is built, never by ``import sagents``.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from langchain_core.tools import BaseTool

from sagents._errors import ConfigurationError, InvalidMiddleware, SagentsError
from sagents._state import State
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, get_middleware_context
from sagents.middleware._mcp_sessions import AgentSessions, Unavailable, reason

if TYPE_CHECKING:
    from langchain_mcp_adapters.sessions import Connection
    from mcp import ClientSession
    from mcp.types import CallToolResult
    from mcp.types import Tool as MCPTool

__all__ = ["MCPTools"]

_TRANSPORTS = frozenset({"stdio", "streamable_http", "streamable-http", "http", "sse", "websocket"})


def _require_adapters() -> None:
    try:
        import langchain_mcp_adapters.tools  # noqa: F401
        import mcp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"MCPTools needs the mcp and langchain-mcp-adapters packages ({exc}): "
            "pip install 'sagents[mcp]'"
        ) from None


class MCPTools(Middleware):
    """The tools of one or more MCP servers, with sessions owned by each agent server.

    Build it with :meth:`discover` (connects once and lists the tools), or with the definitions
    when they are known already. See the module docstring and ``docs/protocols.md``.

    Args:
        servers: server name -> connection, as ``langchain-mcp-adapters`` writes them:
            ``{"transport": "stdio", "command": "python", "args": ["server.py"]}`` (also
            ``env``, ``cwd``) or ``{"transport": "streamable_http", "url": "http://.../mcp"}``
            (also ``headers``, ``timeout``, ``auth``); ``"sse"`` and ``"websocket"`` work too.
        tools: server name -> its tool definitions: ``mcp.types.Tool`` objects or their JSON
            form, e.g. from an earlier :meth:`discover` (:attr:`definitions`), cached.
        include: server name -> the only tools of that server to give the agent (MCP names).
        exclude: server name -> tools of that server to leave out (names it lacks are ignored).
        tool_name_prefix: name the tools ``<server>_<tool>`` (for servers whose tool names
            collide); approvals and filters in other middleware then use these names.
        connect_timeout: seconds a server has to start and answer the MCP handshake.

    Raises:
        ConfigurationError: the ``mcp`` extra is not installed.
        InvalidMiddleware: a server's connection is malformed, ``include`` names a tool the
            server lacks, or two tools end up with one name.
    """

    key = "mcp_tools"

    def __init__(
        self,
        servers: Mapping[str, Connection],
        tools: Mapping[str, Sequence[MCPTool | Mapping[str, Any]]],
        *,
        include: Mapping[str, Collection[str]] | None = None,
        exclude: Mapping[str, Collection[str]] | None = None,
        tool_name_prefix: bool = False,
        connect_timeout: float = 30.0,
    ) -> None:
        _require_adapters()
        self.servers: dict[str, Connection] = dict(servers)
        self.tool_name_prefix = tool_name_prefix
        self.connect_timeout = connect_timeout
        _check_servers(self.servers)
        _check_timeout(connect_timeout)
        #: server name -> the definitions of the tools given to the agent (after filtering).
        self.definitions: dict[str, tuple[MCPTool, ...]] = _filtered(
            self.servers, tools, include, exclude
        )
        self._tools = self._build_tools()
        # The sessions of each agent server, by its middleware context (one per server
        # instance: a restarted server gets a new one); and the servers that ended.
        self._sessions: weakref.WeakKeyDictionary[MiddlewareContext, AgentSessions] = (
            weakref.WeakKeyDictionary()
        )
        self._ended: weakref.WeakSet[MiddlewareContext] = weakref.WeakSet()
        # Every session's task until it is done (the loop holds tasks only weakly).
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def discover(
        cls,
        servers: Mapping[str, Connection],
        *,
        include: Mapping[str, Collection[str]] | None = None,
        exclude: Mapping[str, Collection[str]] | None = None,
        tool_name_prefix: bool = False,
        connect_timeout: float = 30.0,
    ) -> MCPTools:
        """Connect to each server once, list its tools, and return the middleware for them.

        The sessions used to list are closed before this returns (a stdio server's process
        ends); each agent server opens its own. Do it once, at application start, and give the
        same middleware to every agent.

        Raises:
            ConfigurationError: the ``mcp`` extra is not installed.
            InvalidMiddleware: a server could not be reached or listed (the message names it
                and says why), or see the class.
        """
        _require_adapters()
        servers = dict(servers)
        _check_servers(servers)
        _check_timeout(connect_timeout)
        names = list(servers)
        listed = await asyncio.gather(
            *(_list_tools(name, servers[name], connect_timeout) for name in names),
            return_exceptions=True,
        )
        for result in listed:
            if isinstance(result, BaseException):
                raise result
        definitions: dict[str, Sequence[MCPTool | Mapping[str, Any]]] = dict(
            zip(names, cast("list[list[MCPTool]]", listed), strict=True)
        )
        return cls(
            servers,
            definitions,
            include=include,
            exclude=exclude,
            tool_name_prefix=tool_name_prefix,
            connect_timeout=connect_timeout,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its configuration (a distributed backend sends agents to other
        processes); the copy has no sessions, and opens its own there."""
        definitions = {
            server: [tool.model_dump(mode="json") for tool in tools]
            for server, tools in self.definitions.items()
        }
        return (
            _rebuild,
            (self.servers, definitions, self.tool_name_prefix, self.connect_timeout),
        )

    def validate(self) -> None:
        _check_servers(self.servers)
        _check_timeout(self.connect_timeout)

    def tools(self) -> Sequence[BaseTool]:
        # The same objects for every agent: the model's tool binding is then reused.
        return self._tools

    async def on_server_start(self, state: State) -> State | None:
        """Open a session to every server, concurrently. One that fails is logged and its tools
        return errors until a call manages to open it."""
        servers = [name for name, tools in self.definitions.items() if tools]
        await self._agent_sessions(get_middleware_context()).open_all(servers)
        return None

    async def on_server_stop(self, reason: str) -> None:
        """Close this agent server's sessions (and end its stdio servers' processes)."""
        context = get_middleware_context()
        self._ended.add(context)
        sessions = self._sessions.pop(context, None)
        if sessions is not None:
            await sessions.aclose()

    # -- calls ---------------------------------------------------------------------------------

    def _build_tools(self) -> tuple[BaseTool, ...]:
        from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool

        tools: dict[str, BaseTool] = {}
        for server, definitions in self.definitions.items():
            router = cast("ClientSession", _Router(self, server))
            for definition in definitions:
                tool = convert_mcp_tool_to_langchain_tool(
                    router,
                    definition,
                    server_name=server,
                    tool_name_prefix=self.tool_name_prefix,
                )
                if tool.name in tools:
                    raise InvalidMiddleware(
                        f"MCPTools: two tools are named {tool.name!r}; leave one out with "
                        "exclude=, or pass tool_name_prefix=True to name them <server>_<tool>"
                    )
                tools[tool.name] = tool
        return tuple(tools.values())

    def _agent_sessions(self, context: MiddlewareContext) -> AgentSessions:
        sessions = self._sessions.get(context)
        if sessions is None:
            sessions = self._sessions[context] = AgentSessions(
                self.servers, self.connect_timeout, self._tasks, context
            )
        return sessions

    async def _call_tool(
        self,
        server: str,
        name: str,
        arguments: dict[str, Any] | None,
        progress_callback: Any = None,
    ) -> CallToolResult:
        """Call tool ``name`` of ``server`` through the session of the agent server running
        this call (a session of its own under a plain ``Agent.run``). A server that is
        unavailable gives an error result (``isError``), which the model reads as a failed call.
        """
        context = _hosting_context()
        if context is None:
            return await self._call_once(server, name, arguments, progress_callback)
        if context in self._ended:
            return _error_result(
                f"the MCP server {server!r} was not called: this agent's server has stopped"
            )
        try:
            return await self._agent_sessions(context).call(
                server, name, arguments, progress_callback
            )
        except Unavailable as exc:
            return _error_result(f"the MCP server {server!r} is unavailable: {exc}")

    async def _call_once(
        self, server: str, name: str, arguments: dict[str, Any] | None, progress_callback: Any
    ) -> CallToolResult:
        from langchain_mcp_adapters.sessions import create_session

        result: CallToolResult | None = None
        failure: BaseException | None = None
        try:
            async with create_session(self.servers[server]) as session:
                async with asyncio.timeout(self.connect_timeout):
                    await session.initialize()
                try:
                    result = await session.call_tool(
                        name, arguments, progress_callback=progress_callback
                    )
                except Exception as exc:
                    # Kept rather than raised through the session, whose exit may swallow it.
                    failure = exc
        except Exception as exc:
            failure = failure or exc
        if failure is not None or result is None:
            why = "it gave no result" if failure is None else reason(failure)
            return _error_result(f"the MCP server {server!r} is unavailable: {why}")
        return result


class _Router:
    """Stands for a ``ClientSession`` in the tools ``langchain-mcp-adapters`` builds: they only
    call ``call_tool``, which this sends to the session of the agent server running the call.
    """

    __slots__ = ("_owner", "_server")

    def __init__(self, owner: MCPTools, server: str) -> None:
        self._owner = owner
        self._server = server

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        read_timeout_seconds: timedelta | None = None,
        progress_callback: Any = None,
        *,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        return await self._owner._call_tool(self._server, name, arguments, progress_callback)


# -- helpers ------------------------------------------------------------------------------------


def _rebuild(
    servers: dict[str, Connection],
    definitions: dict[str, Sequence[MCPTool | Mapping[str, Any]]],
    tool_name_prefix: bool,
    connect_timeout: float,
) -> MCPTools:
    return MCPTools(
        servers, definitions, tool_name_prefix=tool_name_prefix, connect_timeout=connect_timeout
    )


def _hosting_context() -> MiddlewareContext | None:
    """The context of the agent server running this call; None without one."""
    try:
        context = get_middleware_context()
    except SagentsError:
        return None
    return context if context.can_send else None


async def _list_tools(server: str, config: Connection, timeout: float) -> list[MCPTool]:
    from langchain_mcp_adapters.sessions import create_session

    tools: list[MCPTool] = []
    try:
        async with asyncio.timeout(timeout), create_session(config) as session:
            await session.initialize()
            cursor: str | None = None
            while True:
                page = await session.list_tools(cursor=cursor)
                tools.extend(page.tools)
                if not page.nextCursor:
                    break
                cursor = page.nextCursor
    except TimeoutError:
        raise InvalidMiddleware(
            f"MCPTools: the MCP server {server!r} did not list its tools within {timeout:g} s"
        ) from None
    except Exception as exc:
        raise InvalidMiddleware(
            f"MCPTools: the MCP server {server!r} could not list its tools: {reason(exc)}; "
            "check its connection (command, url)"
        ) from exc
    return tools


def _filtered(
    servers: Mapping[str, Connection],
    tools: Mapping[str, Sequence[MCPTool | Mapping[str, Any]]],
    include: Mapping[str, Collection[str]] | None,
    exclude: Mapping[str, Collection[str]] | None,
) -> dict[str, tuple[MCPTool, ...]]:
    for label, given in (("tools", tools), ("include", include), ("exclude", exclude)):
        unknown = sorted(set(given or ()) - set(servers))
        if unknown:
            raise InvalidMiddleware(
                f"MCPTools({label}=...) names servers {unknown} that are not in servers "
                f"({sorted(servers)})"
            )
    result: dict[str, tuple[MCPTool, ...]] = {}
    for server in servers:
        definitions = tuple(_definition(server, d) for d in tools.get(server, ()))
        names = [d.name for d in definitions]
        wanted = _names(include, server, "include")
        if wanted is not None:
            missing = sorted(wanted - set(names))
            if missing:
                raise InvalidMiddleware(
                    f"MCPTools(include=...): the MCP server {server!r} has no tools {missing}; "
                    f"its tools: {sorted(names)}"
                )
            definitions = tuple(d for d in definitions if d.name in wanted)
        unwanted = _names(exclude, server, "exclude")
        if unwanted:
            definitions = tuple(d for d in definitions if d.name not in unwanted)
        result[server] = definitions
    return result


def _definition(server: str, definition: Any) -> MCPTool:
    """An ``mcp.types.Tool``, from one or from its JSON form (a cached listing)."""
    from mcp.types import Tool

    if isinstance(definition, Tool):
        return definition
    if isinstance(definition, Mapping):
        try:
            return Tool.model_validate(definition)
        except ValueError as exc:
            raise InvalidMiddleware(
                f"MCPTools(tools=...): a tool of server {server!r} is not a valid MCP tool "
                f"definition: {exc}"
            ) from None
    raise InvalidMiddleware(
        f"MCPTools(tools=...): server {server!r} -> a list of mcp.types.Tool (or their JSON "
        f"form), got {type(definition).__name__}"
    )


def _names(
    given: Mapping[str, Collection[str]] | None, server: str, label: str
) -> frozenset[str] | None:
    if given is None or server not in given:
        return None
    names = given[server]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise InvalidMiddleware(
            f"MCPTools({label}=...) takes server -> a collection of tool names, "
            f"e.g. {{{server!r}: [...]}}"
        )
    return frozenset(names)


def _check_servers(servers: Mapping[str, Any]) -> None:
    if not servers:
        raise InvalidMiddleware("MCPTools needs at least one server")
    for name, config in servers.items():
        if not isinstance(name, str) or not name:
            raise InvalidMiddleware(f"MCPTools: server names are non-empty strings, got {name!r}")
        transport = config.get("transport") if isinstance(config, Mapping) else None
        if transport not in _TRANSPORTS:
            raise InvalidMiddleware(
                f"MCPTools: server {name!r} needs a connection with a transport among "
                f"{sorted(_TRANSPORTS)}, e.g. {{'transport': 'stdio', 'command': 'python', "
                f"'args': ['server.py']}}; got {config!r}"
            )
        needed = ("command", "args") if transport == "stdio" else ("url",)
        missing = [key for key in needed if key not in config]
        if missing:
            raise InvalidMiddleware(
                f"MCPTools: the {transport} connection of server {name!r} lacks {missing}"
            )


def _check_timeout(timeout: float) -> None:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidMiddleware(
            f"MCPTools(connect_timeout=...) must be a positive number, got {timeout!r}"
        )


def _error_result(text: str) -> CallToolResult:
    from mcp.types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=text)], isError=True)
