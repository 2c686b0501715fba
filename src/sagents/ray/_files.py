"""A filesystem scope's store, from any process of the cluster: :class:`RemoteFileStore`.

A scope's files are open in one process at a time, the host whose agents use them (a shared
``filesystem_scope`` is claimed in the directory; a conversation's own files live with its
agent). ``runtime.filesystem(scope)`` in a client process gives this proxy: each operation runs
on the host that has the scope open, found by asking the hosts (once, then remembered until
that host no longer has it), so what a web worker reads is what the agents wrote, whichever
host they run on.

Unlike the in-process store, the proxy cannot tell on creation whether the scope is open
anywhere (that takes a call): an operation on a scope no agent of the cluster uses raises the
same :class:`~sagents.SagentsError` that ``runtime.filesystem(scope)`` raises in one process.
"""

from __future__ import annotations

import builtins
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from sagents._errors import SagentsError
from sagents._files import FileInfo

if TYPE_CHECKING:
    from sagents.ray._backend import RayBackend

__all__ = ["FILE_METHODS", "FilesNotHere", "RemoteFileStore"]

#: The store operations a client may run on a host (``aclose`` is the host's).
FILE_METHODS = frozenset({"read", "write", "delete", "move", "exists", "stat", "list", "flush"})


class FilesNotHere(SagentsError):
    """The host asked has no agent using the scope (any more): the client looks again."""


class RemoteFileStore:
    """The :class:`~sagents.FileStore` of ``scope`` on whichever host has it open (see the
    module docstring). Closing it closes nothing: the host owns the store."""

    __slots__ = ("_backend", "_scope")

    def __init__(self, backend: RayBackend, scope: Hashable) -> None:
        self._backend = backend
        self._scope = scope

    def __repr__(self) -> str:
        return f"RemoteFileStore({self._scope!r})"

    async def _call(self, method: str, *args: Any) -> Any:
        return await self._backend.file_call(self._scope, method, args)

    async def read(self, path: str) -> str:
        content: str = await self._call("read", path)
        return content

    async def write(self, path: str, content: str) -> None:
        await self._call("write", path, content)

    async def delete(self, path: str) -> None:
        await self._call("delete", path)

    async def move(self, src: str, dst: str) -> None:
        await self._call("move", src, dst)

    async def exists(self, path: str) -> bool:
        found: bool = await self._call("exists", path)
        return found

    async def stat(self, path: str) -> FileInfo:
        info: FileInfo = await self._call("stat", path)
        return info

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        paths: builtins.list[str] = await self._call("list", prefix_dir)
        return paths

    async def flush(self) -> None:
        await self._call("flush")

    async def aclose(self) -> None:
        """Nothing to close here: the store lives on its host, with its agents."""
