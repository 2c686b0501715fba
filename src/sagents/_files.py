"""Files of the virtual filesystem: path rules, the ``FileStore`` plug point, the memory store.

This is the neutral, lowest layer of the agents' files: the FileSystem middleware (above, in
``sagents.middleware``) gives the model tools over a :class:`FileStore`, the runtime (beside it)
keeps one store per filesystem scope, and persistence adapters store what a
:class:`FileStore` holds. Keeping the protocol, the path rules and the in-memory index here, and
not in the middleware package, lets the runtime and the persistence layer use them without
importing any middleware.

Paths are *virtual*: POSIX-like, rooted at ``/``, the root of the agent's scope. They are checked
and normalised by :func:`normalize_path` before anything else happens, and a path that could mean
something outside the scope (``..``, ``~``, a drive letter, a backslash, a NUL byte) is refused
with :class:`PathNotAllowed` rather than "cleaned up": a model that writes ``../secrets`` has made
a mistake worth telling it about, and a resolver that quietly maps it somewhere else is exactly
the kind of cleverness path-traversal bugs live in. Directories are implicit (a directory exists
while a file lives under it), so a path names either a file or a directory, never both. Lengths
are counted in UTF-8 bytes, as file systems count them: a path of 1,000 four-byte characters is
4,000 bytes, too long for most disks even though it is only 1,000 characters.

Which files an agent sees is decided by its *filesystem scope*: by default the files of its
conversation (:class:`ConversationFiles`), shared across conversations only when asked for (an
explicit store given to the middleware, or an explicit ``filesystem_scope`` start option).

Stores hold text only (``str``) and enforce a per-file size limit (in UTF-8 bytes) and a
file-count limit. Every store answers :meth:`FileStore.stat` with a :class:`FileInfo` (size,
modification time, a MIME type guessed from the name) without reading the content: the index
keeps each file's size and time beside it. That is also what lets a store load *lazily*: its
index may hold a file's name, size and time before its content, which is then fetched on the
first read (:meth:`IndexedFileStore._fetch`), so opening a large tree costs its names, not its
bytes.
"""

from __future__ import annotations

import builtins
import functools
import mimetypes
import re
import time
import unicodedata
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed
from sagents._resource import AsyncResource

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_SEGMENT_BYTES",
    "ConversationFiles",
    "FileInfo",
    "FileStore",
    "FileStoreUser",
    "IndexedFileStore",
    "MemoryFileStore",
    "guess_mime_type",
    "normalize_path",
]

#: Longest accepted virtual path, in UTF-8 bytes (and so also in characters). Short enough that
#: a disk store under a base directory of up to ~3,000 bytes stays within the 4,096-byte
#: ``PATH_MAX`` of Linux.
MAX_PATH_LENGTH = 1024
#: Longest accepted path segment, in UTF-8 bytes (the usual file-name limit of disk filesystems).
MAX_SEGMENT_BYTES = 255

_DRIVE = re.compile(r"[A-Za-z]:")
_EXAMPLE = "a valid path looks like '/notes/todo.md' or 'notes/todo.md'"


def _refuse(path: object, problem: str) -> PathNotAllowed:
    shown = repr(path)
    if len(shown) > 80:  # a 100 kB path must not become a 100 kB error message
        shown = shown[:77] + "..."
    return PathNotAllowed(f"path {shown} is not allowed: {problem}; {_EXAMPLE}")


def normalize_path(path: str, *, directory: bool = False) -> str:
    """Check a virtual path and return its normal form.

    ``"notes/a.md"``, ``"/notes/a.md"`` and ``"//notes/./a.md"`` all become ``"/notes/a.md"``:
    the result starts with ``/``, has no empty, ``.`` or ``..`` segment and no trailing slash.

    Args:
        path: a path as a model or a caller wrote it.
        directory: whether a directory is meant (as in ``ls``); only then is the root ``"/"``
            itself a valid answer.

    Returns:
        The normalised path.

    Raises:
        PathNotAllowed: ``path`` is not a string, is empty, contains a control character or a
            backslash, starts with ``~`` or a drive letter, has a ``..`` segment, is longer than
            :data:`MAX_PATH_LENGTH` UTF-8 bytes or has a segment longer than
            :data:`MAX_SEGMENT_BYTES` bytes, or is the root where a file is meant.
    """
    if not isinstance(path, str):
        raise _refuse(path, f"a path must be a string, not {type(path).__name__}")
    if not path.strip():
        raise _refuse(path, "it is empty")
    # Checked before anything else so that a megabyte of slashes costs nothing (a character is
    # at least one byte, so this never refuses a path the byte limit below would accept).
    if len(path) > MAX_PATH_LENGTH:
        raise _refuse(path, f"it is {len(path)} characters long, over {MAX_PATH_LENGTH} bytes")
    for char in path:
        # Cc: NUL and other control characters (they truncate or corrupt names on disk);
        # Cs: lone surrogates, which cannot be encoded as a file name at all.
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise _refuse(path, f"it contains the control character {char!r}")
    if "\\" in path:
        raise _refuse(path, "backslashes are not path separators here; use '/'")
    if path.startswith("~"):
        raise _refuse(path, "'~' (a home directory) is not part of this filesystem")
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if segments and _DRIVE.match(segments[0]):
        raise _refuse(path, "drive letters are not part of this filesystem")
    for segment in segments:
        if segment == "..":
            raise _refuse(path, "'..' segments are not allowed (paths cannot leave the root)")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _refuse(path, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    if not segments:
        if directory:
            return "/"
        raise _refuse(path, "'/' is the root directory, not a file")
    normal = "/" + "/".join(segments)
    size = len(normal.encode("utf-8"))
    if size > MAX_PATH_LENGTH:
        raise _refuse(
            path, f"it is {size} bytes long in UTF-8, over {MAX_PATH_LENGTH}; use a shorter path"
        )
    return normal


# Text formats the standard library's built-in table does not know (it is used without the
# system's mime.types files, so that the answer is the same on every machine).
_TEXT_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".ts": "text/x-typescript",
    ".tsx": "text/x-typescript",
    ".jsx": "text/javascript",
    ".rs": "text/x-rust",
    ".go": "text/x-go",
    ".sql": "application/sql",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".log": "text/plain",
}


@functools.cache
def _mime_table() -> mimetypes.MimeTypes:
    return mimetypes.MimeTypes()


def guess_mime_type(path: str) -> str:
    """The MIME type of a file, guessed from its name; ``"text/plain"`` when the name says
    nothing (stores hold text only).

    Uses the standard library's built-in table plus a few text formats it lacks, never the
    machine's ``mime.types`` files, so every machine gives the same answer.
    """
    name = path.rpartition("/")[2]
    suffix = name[name.rfind(".") :].lower() if "." in name[1:] else ""
    if suffix in _TEXT_TYPES:
        return _TEXT_TYPES[suffix]
    guessed, _ = _mime_table().guess_type(name, strict=False)
    return guessed or "text/plain"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInfo:
    """What a store knows about one file, without its content.

    Attributes:
        path: the normalised virtual path.
        size: the content's size in UTF-8 bytes.
        modified: when it last changed, in seconds since the epoch; None when the store cannot
            tell (a file loaded from a persistence that does not record it).
        mime_type: guessed from the name (:func:`guess_mime_type`).
    """

    path: str
    size: int
    modified: float | None
    mime_type: str


def _parents(path: str) -> Iterator[str]:
    """The directories holding ``path``, innermost first, without the root."""
    while (path := path.rpartition("/")[0]) != "":
        yield path


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationFiles:
    """The default filesystem scope of an agent: the files of its conversation.

    A runtime gives an agent whose FileSystem has no store of its own, started without a
    ``filesystem_scope``, this scope, so that two conversations never see each other's files
    (even when one factory builds both with one middleware instance). Its sub-agents inherit it.
    A ``Runtime(filesystem_store=...)`` factory receives it as the scope to open.

    Attributes:
        scope: the tenant (``AgentOptions.scope``: any hashable value); None for
            single-tenant applications.
        conversation_id: the conversation; None for an agent started without one.
        agent_id: the agent, only when there is no conversation id (its files are then its own).
    """

    scope: Hashable | None = None
    conversation_id: str | None = None
    agent_id: str | None = None


@runtime_checkable
class FileStoreUser(Protocol):
    """A middleware whose tools use the store of the agent's filesystem scope.

    The runtime asks this at start: an agent that needs a store gets one for its conversation
    (unless a ``filesystem_scope`` names another), and an agent that does not pays nothing.
    """

    def needs_file_store(self) -> bool:
        """Whether the tools read ``ToolContext.services["filesystem"]``."""
        ...


class FileStore(Protocol):
    """Storage for the virtual filesystem: text files addressed by virtual paths.

    Every method accepts paths as a caller wrote them and normalises them with
    :func:`normalize_path`, so an implementation is itself the boundary that keeps paths inside
    its scope.
    """

    async def read(self, path: str) -> str:
        """The content of the file at ``path``.

        Raises:
            FileSystemError: no such file (or it is a directory).
            PathNotAllowed: ``path`` is not a valid path.
        """
        ...

    async def write(self, path: str, content: str) -> None:
        """Create or replace the file at ``path``.

        Raises:
            FileSystemError: ``content`` is too large or not text, too many files, or ``path``
                collides with a directory (or a file where a directory is needed).
            PathNotAllowed: ``path`` is not a valid path.
        """
        ...

    async def delete(self, path: str) -> None:
        """Delete the file at ``path``.

        Raises:
            FileSystemError: no such file.
            PathNotAllowed: ``path`` is not a valid path.
        """
        ...

    async def move(self, src: str, dst: str) -> None:
        """Rename the file ``src`` to ``dst``, which must not exist yet.

        Raises:
            FileSystemError: ``src`` does not exist or ``dst`` does.
            PathNotAllowed: either path is not a valid path.
        """
        ...

    async def exists(self, path: str) -> bool:
        """Whether a file exists at ``path`` (a directory is not a file)."""
        ...

    async def stat(self, path: str) -> FileInfo:
        """Size, modification time and MIME type of the file at ``path``, without reading it.

        Raises:
            FileSystemError: no such file (or it is a directory).
            PathNotAllowed: ``path`` is not a valid path.
        """
        ...

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """The paths of all files under the directory ``prefix_dir``, at any depth, sorted."""
        ...

    async def flush(self) -> None:
        """Make every change made so far durable (a no-op for stores without a backing store)."""
        ...

    async def aclose(self) -> None:
        """Flush and release the store; later calls raise ``FileSystemError``."""
        ...


class _Entry:
    """One file of an index: its content (None until a lazy store fetches it), its size in
    UTF-8 bytes and when it last changed."""

    __slots__ = ("content", "modified", "size")

    def __init__(self, content: str | None, size: int, modified: float | None) -> None:
        self.content = content
        self.size = size
        self.modified = modified


class _Index:
    """The files of a store in memory, with the limits and the file/directory rules.

    ``_dirs`` counts the files under each directory, so that "is this a directory?" and "is a
    parent of this a file?" cost O(depth) instead of a scan of every path. An entry whose
    content is None is known by name only (a lazy store fetches it on first read); every
    operation that needs the text (:meth:`get`, :meth:`check_move`) requires it to be there.
    """

    __slots__ = ("_clock", "_dirs", "_files", "max_file_size", "max_files")

    def __init__(
        self, *, max_file_size: int, max_files: int, clock: Callable[[], float] = time.time
    ) -> None:
        if not isinstance(max_file_size, int) or max_file_size <= 0:
            raise ConfigurationError(f"max_file_size must be a positive int, got {max_file_size!r}")
        if not isinstance(max_files, int) or max_files <= 0:
            raise ConfigurationError(f"max_files must be a positive int, got {max_files!r}")
        self.max_file_size = max_file_size
        self.max_files = max_files
        self._clock = clock
        self._files: dict[str, _Entry] = {}
        self._dirs: dict[str, int] = {}

    def check_content(self, path: str, content: str) -> int:
        """Raise unless ``content`` may be stored; return its size in UTF-8 bytes."""
        if not isinstance(content, str):
            raise FileSystemError(
                f"cannot write {path}: only text is stored, got {type(content).__name__}"
            )
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError:
            raise FileSystemError(
                f"cannot write {path}: the content is not valid Unicode text (lone surrogates)"
            ) from None
        self.check_size(path, size)
        return size

    def check_size(self, path: str, size: int) -> None:
        if size > self.max_file_size:
            raise FileSystemError(
                f"cannot write {path}: the content is {size} bytes, over the limit of "
                f"{self.max_file_size} bytes; split it into smaller files"
            )

    def check_new(self, path: str) -> None:
        """Raise unless a file may be created at ``path`` (which does not exist yet)."""
        if path in self._dirs:
            raise FileSystemError(f"cannot create {path}: it is a directory")
        for parent in _parents(path):
            if parent in self._files:
                raise FileSystemError(
                    f"cannot create {path}: {parent} is a file, so it cannot hold other files"
                )
        if len(self._files) >= self.max_files:
            raise FileSystemError(
                f"cannot create {path}: the store already holds {self.max_files} files, its "
                "limit; delete files you no longer need"
            )

    def check_put(self, path: str, content: str) -> None:
        """Raise unless :meth:`put` would succeed; nothing changes."""
        self.check_content(path, content)
        if path not in self._files:
            self.check_new(path)

    def entry(self, path: str) -> _Entry:
        """The entry of the file at ``path``, loaded or not."""
        try:
            return self._files[path]
        except KeyError:
            if path in self._dirs:
                raise FileSystemError(f"{path} is a directory, not a file") from None
            raise FileSystemError(f"no such file: {path}; use ls to see the files") from None

    def current(self, path: str) -> _Entry | None:
        """The entry at ``path``, or None (never raises)."""
        return self._files.get(path)

    def get(self, path: str) -> str:
        content = self.entry(path).content
        if content is None:  # a store bug: lazy stores fetch before they ask
            raise RuntimeError(f"the content of {path} was not loaded")
        return content

    def info(self, path: str) -> FileInfo:
        entry = self.entry(path)
        return FileInfo(
            path=path, size=entry.size, modified=entry.modified, mime_type=guess_mime_type(path)
        )

    def contains(self, path: str) -> bool:
        return path in self._files

    def put(self, path: str, content: str, *, modified: float | None = None) -> None:
        size = self.check_content(path, content)
        self._insert(path, _Entry(content, size, self._clock() if modified is None else modified))

    def put_unloaded(self, path: str, size: int, modified: float | None) -> None:
        """Know the file at ``path`` by name, size and time; its content is fetched later."""
        self.check_size(path, size)
        self._insert(path, _Entry(None, size, modified))

    def restore(self, path: str, entry: _Entry | None) -> None:
        """Put back ``entry`` (as :meth:`current` returned it) at ``path``, or nothing."""
        if path in self._files:
            self.remove(path)
        if entry is not None:
            self._insert(path, entry)

    def _insert(self, path: str, entry: _Entry) -> None:
        if path not in self._files:
            self.check_new(path)
            for parent in _parents(path):
                self._dirs[parent] = self._dirs.get(parent, 0) + 1
        self._files[path] = entry

    def remove(self, path: str) -> None:
        self.entry(path)  # the error for a missing file or a directory
        del self._files[path]
        for parent in _parents(path):
            if self._dirs[parent] == 1:
                del self._dirs[parent]
            else:
                self._dirs[parent] -= 1

    def check_move(self, src: str, dst: str) -> str:
        """Raise unless ``src`` can be moved to ``dst``; return the content of ``src``.

        Nothing changes, so a store can check first, save the move elsewhere, and only then
        apply it. The source counts as gone: a file may move into the directory its own name
        frees (``/a/b`` to ``/a``) or under its own name (``/a`` to ``/a/b``).
        """
        content = self.get(src)
        if src == dst:
            return content
        if dst in self._files:
            raise FileSystemError(
                f"cannot move {src} to {dst}: {dst} already exists; delete it first"
            )
        if dst in self._dirs and not (self._dirs[dst] == 1 and src.startswith(dst + "/")):
            raise FileSystemError(f"cannot create {dst}: it is a directory")
        for parent in _parents(dst):
            if parent in self._files and parent != src:
                raise FileSystemError(
                    f"cannot create {dst}: {parent} is a file, so it cannot hold other files"
                )
        return content

    def move(self, src: str, dst: str) -> None:
        self.check_move(src, dst)
        if src != dst:
            # The entry itself moves, so the file keeps its modification time (as mv does).
            entry = self._files[src]
            self.remove(src)
            self._insert(dst, entry)

    def listing(self, directory: str) -> builtins.list[str]:
        if directory == "/":
            return sorted(self._files)
        prefix = directory + "/"
        return sorted(path for path in self._files if path.startswith(prefix))


class IndexedFileStore(AsyncResource):
    """What every shipped store shares: the files in an in-memory index (reads are answered
    from it), and a life of its own (``new`` until loaded, ``open``, ``closed``).

    Subclasses set ``_index`` and ``_state`` and implement the writes, which is where they
    differ: in memory only, debounced to disk, or written through to a persistence. A store
    that loads lazily puts names in its index without content and implements :meth:`_fetch`.
    """

    _index: _Index
    _state: str  # "new" -> "open" -> "closed"

    @property
    def max_file_size(self) -> int:
        """The largest file accepted, in UTF-8 bytes."""
        return self._index.max_file_size

    def _check_open(self) -> None:
        if self._state == "new":
            raise FileSystemError(
                f"the store was not loaded; create it with {type(self).__name__}.open()"
            )
        if self._state == "closed":
            raise FileSystemError("the file store is closed")

    async def _fetch(self, path: str) -> str:
        """The content of ``path`` from the backing store (lazy stores override this).

        Raises:
            FileSystemError: it cannot be read.
        """
        raise RuntimeError(f"{type(self).__name__} does not load files lazily")

    async def _loaded(self, path: str) -> str:
        """The content of the (normalised) ``path``, fetched first if the index has only its
        name; the fetched content is kept in the index."""
        entry = self._index.entry(path)
        if entry.content is not None:
            return entry.content
        content = await self._fetch(path)
        # The file may have changed while it was fetched: keep the text only if the entry is
        # still the one it was fetched for (a newer write brought its own content).
        if self._index.current(path) is entry and entry.content is None:
            entry.content = content
            entry.size = len(content.encode("utf-8", errors="surrogatepass"))
        return content

    async def read(self, path: str) -> str:
        """See :meth:`FileStore.read`."""
        self._check_open()
        return await self._loaded(normalize_path(path))

    async def exists(self, path: str) -> bool:
        """See :meth:`FileStore.exists`."""
        self._check_open()
        return self._index.contains(normalize_path(path))

    async def stat(self, path: str) -> FileInfo:
        """See :meth:`FileStore.stat`; answered from the index, never from the content."""
        self._check_open()
        return self._index.info(normalize_path(path))

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """See :meth:`FileStore.list`."""
        self._check_open()
        return self._index.listing(normalize_path(prefix_dir, directory=True))


class MemoryFileStore(IndexedFileStore):
    """A :class:`FileStore` held in memory only; its files vanish with it.

    Args:
        max_file_size: the largest file accepted, in UTF-8 bytes.
        max_files: the most files the store holds.
        clock: gives the modification times :meth:`stat` reports (seconds since the epoch);
            ``time.time`` by default.

    Raises:
        ConfigurationError: a limit is not a positive int.
    """

    def __init__(
        self,
        *,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = _Index(max_file_size=max_file_size, max_files=max_files, clock=clock)
        self._state = "open"

    async def write(self, path: str, content: str) -> None:
        """See :meth:`FileStore.write`."""
        self._check_open()
        self._index.put(normalize_path(path), content)

    async def delete(self, path: str) -> None:
        """See :meth:`FileStore.delete`."""
        self._check_open()
        self._index.remove(normalize_path(path))

    async def move(self, src: str, dst: str) -> None:
        """See :meth:`FileStore.move`."""
        self._check_open()
        self._index.move(normalize_path(src), normalize_path(dst))

    async def flush(self) -> None:
        """Nothing to flush: the memory is the store."""
        self._check_open()

    async def aclose(self) -> None:
        """Close the store; later calls raise ``FileSystemError``. Idempotent."""
        self._state = "closed"
