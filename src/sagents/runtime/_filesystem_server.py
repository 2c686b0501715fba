"""Filesystem servers: one shared file store per scope (rules L50, L53).

Agents of one scope (say ``("project", 42)``) share their files: the runtime runs one
:class:`FileSystemServer` per scope under its own ``filesystems`` supervisor, started when the
first agent of that scope starts and stopped when the last one ends. A server owns its store and
closes it when it stops, which for a :class:`~sagents.middleware.DiskFileStore` flushes pending
writes. A crashed server is restarted alone and builds a fresh store through the factory, so a
disk-backed scope reloads its files from disk (L53).

Tools reach the store through ``ToolContext.services["filesystem"]``, resolved on every call, so
they always see the current incarnation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from sagents.middleware._file_store import FileStore, MemoryFileStore
from sagents.runtime._child import Ready

__all__ = ["FileStoreFactory", "FileSystemServer", "memory_file_store"]

#: ``async (scope) -> FileStore``: builds (or reopens) the store of a scope.
FileStoreFactory = Callable[[Hashable], Awaitable[FileStore]]


async def memory_file_store(scope: Hashable) -> FileStore:
    """The default factory: an in-memory store per scope (gone when the scope's server stops)."""
    return MemoryFileStore()


class FileSystemServer:
    """Owns the file store of one scope while agents of that scope run."""

    def __init__(
        self,
        scope: Hashable,
        factory: FileStoreFactory,
        on_ready: Callable[[FileSystemServer], None],
    ) -> None:
        self.scope = scope
        self._factory = factory
        self._on_ready = on_ready
        self._store: FileStore | None = None
        self._stopped = asyncio.Event()

    @property
    def store(self) -> FileStore:
        if self._store is None:
            raise RuntimeError(f"the filesystem server of {self.scope!r} is not ready")
        return self._store

    async def run(self, ready: Ready) -> None:
        self._store = await self._factory(self.scope)
        try:
            self._on_ready(self)
            ready.started(self)
            await self._stopped.wait()
        finally:
            # Shielded: closing flushes pending writes, which a shutdown must not cut short.
            await asyncio.shield(self._store.aclose())

    async def stop(self) -> None:
        self._stopped.set()
