"""Filesystem servers: one file store per filesystem scope.

Agents of one scope share their files: the runtime runs one :class:`FileSystemServer` per scope
under its own ``filesystems`` supervisor, started when the first agent of that scope starts and
stopped when the last one ends. A server owns its store and closes it when it stops, which for a
:class:`~sagents.middleware.DiskFileStore` flushes pending writes. A crashed server is restarted
alone and builds a fresh store through its factory, so a durable scope reloads its files.

Which scope an agent gets:

* the ``filesystem_scope`` it was started with, when given: sharing across conversations is
  what the application asked for (a sub-agent is started with its parent's);
* otherwise, when its middleware needs a store (:class:`~sagents._files.FileStoreUser`), its
  conversation's, a :class:`~sagents._files.ConversationFiles` (or its own, keyed by agent id,
  without a conversation). Files belong to the conversation by default, because the obvious
  alternative, one store per middleware instance, shares one tenant's files with every other
  conversation a factory builds with that instance;
* otherwise none, and the agent pays for no server at all.

Where a scope's files live: in the runtime's ``filesystem_store`` factory when the application
gave one (for every scope, a conversation's included); otherwise, for a conversation whose
``agent_persistence`` also stores files (a :class:`~sagents.persistence.FilePersistence`, as
both shipped adapters do), in that persistence, so that the files last as long as the messages
that mention them; otherwise in memory, for as long as the scope's agents run. A conversation's
persisted files are written under the lease its agent holds (see ``_ownership.py``): a process
that lost the conversation cannot overwrite the new owner's files, and the refusal stops its
agent.

Tools reach the store through ``ToolContext.services["filesystem"]``, resolved on every call, so
they always see the current incarnation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Protocol

from sagents._files import ConversationFiles, FileStore, FileStoreUser, MemoryFileStore
from sagents.persistence._files import FilePersistence, PersistedFileStore
from sagents.persistence._protocols import ConversationLeases
from sagents.runtime._child import Ready

if TYPE_CHECKING:
    from sagents.execution._agent import Agent
    from sagents.runtime._options import AgentOptions
    from sagents.runtime._ownership import Ownership

__all__ = [
    "FileStoreFactory",
    "FilesystemGuard",
    "FileSystemServer",
    "default_filesystem_scope",
    "file_store_factory",
    "memory_file_store",
]

#: ``async (scope) -> FileStore``: builds (or reopens) the store of a scope.
FileStoreFactory = Callable[[Hashable], Awaitable[FileStore]]


class FilesystemGuard(Protocol):
    """Keeps a shared scope's files in one process at a time (see
    ``Runtime.guard_filesystems``): two processes holding one scope would each keep their own
    view of its files, and each overwrite the other's changes."""

    async def claim(self, scope: Hashable) -> None:
        """Before this process brings ``scope`` up; raises when another process holds it."""

    def release(self, scope: Hashable) -> None:
        """Once this process's server of ``scope`` has ended."""


def shared_scope(scope: Hashable) -> bool:
    """Whether agents of several conversations may use ``scope`` (a conversation's own files
    are used by its agent and its sub-agents, which run where it runs)."""
    return not isinstance(scope, ConversationFiles)


async def memory_file_store(scope: Hashable) -> FileStore:
    """An in-memory store per scope (gone when the scope's server stops)."""
    return MemoryFileStore()


def default_filesystem_scope(agent: Agent, options: AgentOptions) -> ConversationFiles | None:
    """The scope of an agent started without ``filesystem_scope``: its conversation's files,
    or None when none of its middleware needs a store."""
    if not any(
        isinstance(middleware, FileStoreUser) and middleware.needs_file_store()
        for middleware in agent.middleware_instances
    ):
        return None
    if options.conversation_id is not None:
        return ConversationFiles(scope=options.scope, conversation_id=options.conversation_id)
    return ConversationFiles(scope=options.scope, agent_id=agent.agent_id)


def file_store_factory(
    scope: Hashable,
    options: AgentOptions,
    configured: FileStoreFactory | None,
    *,
    ownership: Ownership | None = None,
) -> FileStoreFactory:
    """Where the files of ``scope`` live, for its first agent (started with ``options``).

    Args:
        scope: the filesystem scope.
        options: the start options of the agent that brings the scope up.
        configured: the runtime's ``filesystem_store``, if the application gave one.
        ownership: the runtime's leases: a conversation's persisted files are written under
            the lease its agent holds there (None: unfenced).
    """
    if configured is not None:
        return configured
    persistence = options.agent_persistence
    if (
        isinstance(scope, ConversationFiles)
        and scope.conversation_id is not None
        and isinstance(persistence, FilePersistence)
    ):
        tenant, conversation_id = scope.scope, scope.conversation_id
        # One writer for every incarnation of the scope's server: a restarted one keeps
        # naming the last token seen.
        writer = (
            ownership.writer(persistence, conversation_id)
            if ownership is not None and isinstance(persistence, ConversationLeases)
            else None
        )

        async def persisted(_: Hashable) -> FileStore:
            if writer is None:
                return await PersistedFileStore.open(persistence, tenant, conversation_id)
            return await PersistedFileStore.open(
                persistence,
                tenant,
                conversation_id,
                lease_token=writer.lease_token,
                on_refused=writer.refused,
            )

        return persisted
    return memory_file_store


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

    @property
    def stopping(self) -> bool:
        """Whether the server was asked to stop (its store is closing or closed)."""
        return self._stopped.is_set()

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
