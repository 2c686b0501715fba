"""A conversation's files, kept by the conversation's persistence.

A conversation refers to the files its agent wrote ("see /plan.md"), so they must last exactly as
long as its messages: an agent that shuts down for inactivity, or a process that restarts, must
find them again, and deleting the conversation must delete them. Two pieces do that:

* :class:`FilePersistence`, the plug point a persistence adapter implements next to
  ``AgentPersistence``: load the files of a (scope, conversation), save a batch of changes.
  ``MemoryPersistence`` and ``SqlPersistence`` implement it (a ``files`` table in the same
  database, rows deleted with their conversation).
* :class:`PersistedFileStore`, the :class:`~sagents.middleware.FileStore` the runtime gives a
  conversation's agents when their persistence stores files: an in-memory index, loaded once
  when the conversation starts, that writes each change through before the tool call returns.

A persistence that can also list a conversation's files without their content and load one
file (:class:`FileIndexPersistence`) gets a *lazy* store: opening it loads the names, sizes and
times only, and each file's content is loaded on its first read, so a conversation with a large
tree of files starts as fast as one with a few.

Write-through rather than a debounce (as ``DiskFileStore`` does): a tool call reports success
only once its change is stored, so what the model was told is what a restart finds, and a storage
failure fails that very call (the index is left unchanged), where a debounced failure would
surface later, to nobody who could act on it. Nothing is ever pending, so a shutdown has nothing
to flush. The cost is one small transaction per changed file, next to a model call that takes
seconds. Only the changed file is written (a delta): a conversation's other files are not
touched.

Writes are fenced like the conversation's state saves: the store names the fencing token of the
lease its process holds on the conversation (``lease_token``, asked at each write, since the
agent holding it may restart and take a new one), so a process that stalled while another took
the conversation over cannot overwrite the new owner's files, nor bring a deleted conversation
back. A refused write fails its tool call (``FileSystemError``, the ``StateConflict`` chained)
*and* is reported through ``on_refused``, by which the runtime stops the agent as it does for
any refused save: failing the call alone would let the agent carry on with work nobody can
store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, cast, runtime_checkable

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed, StateConflict
from sagents._files import FileInfo, IndexedFileStore, _Index, normalize_path
from sagents.persistence._leases import takes_lease_token
from sagents.persistence._protocols import Scope

__all__ = [
    "FileIndexPersistence",
    "FilePersistence",
    "PersistedFileStore",
    "check_file_changes",
]


@runtime_checkable
class FilePersistence(Protocol):
    """Stores the files of a conversation, within a scope (the tenant).

    Files belong to their conversation: a caller from another scope sees none, and deleting the
    conversation (``ConversationStore.delete_conversation``) deletes them.
    """

    async def load_files(self, scope: Scope, conversation_id: str) -> dict[str, str]:
        """The files of the conversation, by normalised virtual path; ``{}`` when it has none
        (or belongs to another scope)."""
        ...

    async def save_files(
        self, scope: Scope, conversation_id: str, changes: Mapping[str, str | None]
    ) -> None:
        """Apply ``changes`` atomically: each path gets its new content, or is deleted (None).

        Creates the conversation in ``scope`` if it does not exist yet.

        An adapter with ownership leases should also take ``lease_token: int | None = None``
        as a keyword (both shipped adapters do): with a token, the changes are refused with
        ``StateConflict`` unless that lease is still the conversation's, and a missing
        (deleted) conversation is not created again. :class:`PersistedFileStore` passes the
        token of the lease its process holds, to an adapter whose ``save_files`` takes one.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: written under a ``lease_token`` its writer no longer holds, or to a
                deleted conversation; nothing was written.
            PersistenceFailed: the storage failed; nothing was written.
            ValueError: a path is not a normalised virtual path, or a content is not text.
        """
        ...


@runtime_checkable
class FileIndexPersistence(Protocol):
    """A :class:`FilePersistence` that can also answer for one file at a time, so that a
    :class:`PersistedFileStore` over it loads lazily (names first, contents on first read)."""

    async def list_files(self, scope: Scope, conversation_id: str) -> dict[str, FileInfo]:
        """What is known of each file of the conversation (size, time), without contents;
        ``{}`` when it has none (or belongs to another scope)."""
        ...

    async def load_file(self, scope: Scope, conversation_id: str, path: str) -> str | None:
        """The content of one file; None when it does not exist (any more)."""
        ...


def check_file_changes(changes: Mapping[str, str | None]) -> dict[str, bytes | None]:
    """Check a batch of file changes; return the contents as UTF-8 (None for a deletion).

    Both adapters call it, so that what one accepts the other stores too.

    Raises:
        ValueError: a path is not a normalised virtual path, or a content is not text (or not
            valid Unicode: lone surrogates).
    """
    encoded: dict[str, bytes | None] = {}
    for path, content in changes.items():
        try:
            valid = isinstance(path, str) and normalize_path(path) == path
        except PathNotAllowed:
            valid = False
        if not valid:
            raise ValueError(f"file path {path!r:.80} is not a normalised virtual path")
        if content is None:
            encoded[path] = None
            continue
        if not isinstance(content, str):
            raise ValueError(f"the content of {path} must be text, got {type(content).__name__}")
        try:
            encoded[path] = content.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"the content of {path} is not valid Unicode text") from None
    return encoded


class _FencedFiles(Protocol):
    """A file persistence whose ``save_files`` takes the writer's lease token (both shipped
    adapters)."""

    async def save_files(
        self,
        scope: Scope,
        conversation_id: str,
        changes: Mapping[str, str | None],
        *,
        lease_token: int | None = None,
    ) -> None: ...


class PersistedFileStore(IndexedFileStore):
    """The files of one conversation, written through to a :class:`FilePersistence`.

    Open it with ``await PersistedFileStore.open(persistence, scope, conversation_id)``. Reads
    come from memory (a lazy store loads each file from the persistence on its first read and
    keeps it); every change is stored before the call returns, and one the storage
    refuses raises :class:`FileSystemError` and changes nothing. Changes are serialised, so the
    storage sees them in the order the index does.

    Args:
        persistence: where the files are stored.
        scope: the tenant the conversation belongs to.
        conversation_id: the conversation.
        max_file_size: the largest file accepted, in UTF-8 bytes.
        max_files: the most files the store holds.
        lease_token: asked at each write: the fencing token of the conversation's lease this
            process holds, named on the write (to a persistence whose ``save_files`` takes
            one); None (or no function): the write is not fenced.
        on_refused: called with the ``StateConflict`` when the storage refused a write made
            under that token, before the write fails with ``FileSystemError``.
    """

    def __init__(
        self,
        persistence: FilePersistence,
        scope: Scope,
        conversation_id: str,
        *,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
        lease_token: Callable[[], int | None] | None = None,
        on_refused: Callable[[StateConflict], None] | None = None,
    ) -> None:
        self._persistence = persistence
        self._scope = scope
        self._conversation_id = conversation_id
        self._lease_token = lease_token
        self._on_refused = on_refused
        self._index = _Index(max_file_size=max_file_size, max_files=max_files)
        self._lock = asyncio.Lock()
        self._state = "new"  # "new" -> "open" -> "closed"

    @classmethod
    async def open(
        cls,
        persistence: FilePersistence,
        scope: Scope,
        conversation_id: str,
        *,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
        lazy: bool | None = None,
        lease_token: Callable[[], int | None] | None = None,
        on_refused: Callable[[StateConflict], None] | None = None,
    ) -> PersistedFileStore:
        """Load the conversation's files (or only their names) and return the open store.

        Args:
            persistence: where the files are stored.
            scope: the tenant the conversation belongs to.
            conversation_id: the conversation.
            max_file_size: the largest file accepted, in UTF-8 bytes.
            max_files: the most files the store holds.
            lazy: load only the files' names, sizes and times now and each content on its
                first read. By default, whenever ``persistence`` can
                (:class:`FileIndexPersistence`).
            lease_token: the fencing token each write names (see the class).
            on_refused: told of a write the storage refused as fenced (see the class).

        Raises:
            ConfigurationError: ``lazy=True`` with a persistence that cannot load lazily.
            FileSystemError: a stored file does not fit the limits (raise them) or has an
                invalid path.
            PersistenceFailed: the storage failed.
        """
        can_index = isinstance(persistence, FileIndexPersistence)
        if lazy and not can_index:
            raise ConfigurationError(
                f"{type(persistence).__name__} cannot load files lazily (it has no list_files "
                "/ load_file); open the store with lazy=False"
            )
        store = cls(
            persistence,
            scope,
            conversation_id,
            max_file_size=max_file_size,
            max_files=max_files,
            lease_token=lease_token,
            on_refused=on_refused,
        )
        try:
            if can_index and lazy is not False:
                index = await cast(FileIndexPersistence, persistence).list_files(
                    scope, conversation_id
                )
                for path in sorted(index):
                    info = index[path]
                    store._index.put_unloaded(normalize_path(path), info.size, info.modified)
            else:
                files = await persistence.load_files(scope, conversation_id)
                for path in sorted(files):
                    normal = normalize_path(path)
                    store._index.put(normal, files[path])
                    # When the file was written is not stored: unknown until it changes.
                    store._index.entry(normal).modified = None
        except FileSystemError as exc:
            raise FileSystemError(
                f"cannot load the files of conversation {conversation_id!r}: {exc}"
            ) from exc
        store._state = "open"
        return store

    @property
    def conversation_id(self) -> str:
        """The conversation whose files these are."""
        return self._conversation_id

    async def write(self, path: str, content: str) -> None:
        """See :meth:`FileStore.write`; stored before it returns.

        Raises:
            FileSystemError: also when the storage refused the change (nothing changed).
        """
        self._check_open()
        virtual = normalize_path(path)
        async with self._lock:
            self._check_open()
            self._index.check_put(virtual, content)
            await self._save({virtual: content}, virtual, lambda: self._index.put(virtual, content))

    async def delete(self, path: str) -> None:
        """See :meth:`FileStore.delete`; stored before it returns."""
        self._check_open()
        virtual = normalize_path(path)
        async with self._lock:
            self._check_open()
            self._index.entry(virtual)
            await self._save({virtual: None}, virtual, lambda: self._index.remove(virtual))

    async def move(self, src: str, dst: str) -> None:
        """See :meth:`FileStore.move`; stored (both halves at once) before it returns."""
        self._check_open()
        source, destination = normalize_path(src), normalize_path(dst)
        async with self._lock:
            self._check_open()
            await self._loaded(source)  # a lazily loaded file is saved anew under its new name
            content = self._index.check_move(source, destination)
            if source == destination:
                return
            await self._save(
                {source: None, destination: content},
                source,
                lambda: self._index.move(source, destination),
            )

    async def flush(self) -> None:
        """Wait for a change being stored; everything else already is."""
        self._check_open()
        async with self._lock:
            pass

    async def aclose(self) -> None:
        """Wait for a change being stored, then close the store. Idempotent."""
        if self._state == "closed":
            return
        async with self._lock:
            self._state = "closed"

    async def _fetch(self, path: str) -> str:
        """The content of a file the lazy index knows by name only, from the persistence."""
        persistence = cast(FileIndexPersistence, self._persistence)
        try:
            content = await persistence.load_file(self._scope, self._conversation_id, path)
        except Exception as exc:
            raise FileSystemError(
                f"cannot load {path} of conversation {self._conversation_id!r}: {exc}; try again"
            ) from exc
        if content is None:
            raise FileSystemError(
                f"{path} of conversation {self._conversation_id!r} is no longer stored; "
                "use ls to see the files"
            )
        return content

    async def _save(
        self, changes: dict[str, str | None], what: str, apply: Callable[[], None]
    ) -> None:
        """Store ``changes``, then ``apply`` them to the index; raise if the storage refused."""
        save = asyncio.ensure_future(self._write(changes))
        try:
            # Shielded: a cancelled tool call must not leave the storage and the index apart.
            await asyncio.shield(save)
        except asyncio.CancelledError:
            await asyncio.wait([save])
            if not save.cancelled():
                error = save.exception()
                if error is None:
                    apply()
                elif isinstance(error, StateConflict):
                    self._refused(error)  # the call is gone, but the agent must still stop
            raise
        except StateConflict as conflict:
            self._refused(conflict)
            raise FileSystemError(
                f"cannot save {what} in conversation {self._conversation_id!r}: {conflict}; "
                "nothing was changed"
            ) from conflict
        except Exception as exc:
            raise FileSystemError(
                f"cannot save {what} in conversation {self._conversation_id!r}: {exc}; "
                "nothing was changed, try again"
            ) from exc
        apply()

    def _write(self, changes: dict[str, str | None]) -> Awaitable[None]:
        """The persistence's ``save_files`` of ``changes``, under the lease token if any."""
        token = None if self._lease_token is None else self._lease_token()
        persistence = self._persistence
        if token is not None and takes_lease_token(type(persistence), "save_files"):
            return cast(_FencedFiles, persistence).save_files(
                self._scope, self._conversation_id, changes, lease_token=token
            )
        return persistence.save_files(self._scope, self._conversation_id, changes)

    def _refused(self, conflict: StateConflict) -> None:
        if self._on_refused is not None:
            self._on_refused(conflict)
