"""A small MCP server for the MCPTools tests, written with ``mcp``'s FastMCP.

Run as a stdio subprocess (``python mcp_server.py``), or built in the test process for
streamable HTTP (:func:`build`). Its tools report on the process serving them, so a test can
tell one agent's server from another's and see it end; with ``SAGENTS_TEST_EXIT_LOG`` set, a
clean exit appends the process id to that file.
"""

from __future__ import annotations

import atexit
import os

import anyio
from mcp.server.fastmcp import Context, FastMCP


def build() -> FastMCP:
    server = FastMCP("sagents-test", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def pid() -> int:
        """The process id of this MCP server."""
        return os.getpid()

    @server.tool()
    def delete_everything(path: str) -> str:
        """Pretend to delete everything under ``path`` (a tool to put under approval)."""
        return f"deleted {path}"

    @server.tool()
    async def wait(seconds: float) -> str:
        """Answer after ``seconds``."""
        await anyio.sleep(seconds)
        return "waited"

    @server.tool()
    def fail(message: str) -> str:
        """Raise, so that the server answers with an error result."""
        raise ValueError(message)

    @server.tool()
    def crash() -> str:
        """End the server's process in the middle of the call."""
        os._exit(3)

    @server.tool()
    def session_id(ctx: Context) -> str:  # type: ignore[type-arg]
        """The MCP session id of this call (streamable HTTP only)."""
        request = ctx.request_context.request
        return "" if request is None else str(request.headers.get("mcp-session-id", ""))

    return server


def _record_clean_exit(path: str) -> None:
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")


if __name__ == "__main__":
    # A test can tell a clean exit (stdin closed) from a kill: only the first runs atexit.
    if exit_log := os.environ.get("SAGENTS_TEST_EXIT_LOG"):
        atexit.register(_record_clean_exit, exit_log)
    build().run()  # stdio: stdout carries the protocol
