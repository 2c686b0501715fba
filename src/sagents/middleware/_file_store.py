"""Where the FileSystem middleware keeps its files, and the rules every path obeys (rule X23).

Paths are *virtual*: POSIX-like, rooted at ``/``, the root of the agent's scope. They are checked
and normalised by :func:`normalize_path` before anything else happens, and a path that could mean
something outside the scope (``..``, ``~``, a drive letter, a backslash, a NUL byte) is refused
with :class:`PathNotAllowed` rather than "cleaned up": a model that writes ``../secrets`` has made
a mistake worth telling it about, and a resolver that quietly maps it somewhere else is exactly
the kind of cleverness path-traversal bugs live in. Directories are implicit (a directory exists
while a file lives under it), so a path names either a file or a directory, never both.

A :class:`FileStore` is the plug point. Two implementations ship:

* :class:`MemoryFileStore` keeps files in a dict, for tests and throw-away agents.
* :class:`DiskFileStore` keeps the same in-memory index, loaded from a base directory when
  opened, and writes changes back after a short *debounce*: tools answer at memory speed and a
  burst of edits costs one disk write per file. The timer starts at the first change after a
  flush and later changes ride along, rather than each change pushing the timer back, so a steady
  stream of edits can never starve the disk. Every disk path is re-derived from the virtual path
  and resolved (``os.path.realpath``); it must equal its lexical form under the resolved base
  directory, so no symbolic link is ever followed, whether it points outside (refused loudly, also
  when found at open) or inside (skipped at open, refused on write).

Both hold text only (``str``, UTF-8 on disk) and enforce a per-file size limit (in UTF-8 bytes)
and a file-count limit.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import os
import re
import stat
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, Self

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_SEGMENT_BYTES",
    "DiskFileStore",
    "FileStore",
    "MemoryFileStore",
    "normalize_path",
]

_log = logging.getLogger(__name__)

#: Longest accepted virtual path, in characters.
MAX_PATH_LENGTH = 1024
#: Longest accepted path segment, in UTF-8 bytes (the usual file-name limit of disk filesystems).
MAX_SEGMENT_BYTES = 255

_DRIVE = re.compile(r"[A-Za-z]:")
_EXAMPLE = "a valid path looks like '/notes/todo.md' or 'notes/todo.md'"

# Atomic writes go through a temporary file in the target's directory; files named like this are
# ours (a crash between write and rename leaves one behind), so they are skipped when loading and
# refused as virtual file names.
_TMP_PREFIX = ".sagents-"
_TMP_SUFFIX = ".tmp"


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
            :data:`MAX_PATH_LENGTH` characters or has a segment longer than
            :data:`MAX_SEGMENT_BYTES` bytes, or is the root where a file is meant.
    """
    if not isinstance(path, str):
        raise _refuse(path, f"a path must be a string, not {type(path).__name__}")
    if not path.strip():
        raise _refuse(path, "it is empty")
    # Checked before anything else so that a megabyte of slashes costs nothing.
    if len(path) > MAX_PATH_LENGTH:
        raise _refuse(path, f"it is {len(path)} characters long, over {MAX_PATH_LENGTH}")
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
    return "/" + "/".join(segments)


def _parents(path: str) -> Iterator[str]:
    """The directories holding ``path``, innermost first, without the root."""
    while (path := path.rpartition("/")[0]) != "":
        yield path


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

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """The paths of all files under the directory ``prefix_dir``, at any depth, sorted."""
        ...

    async def flush(self) -> None:
        """Make every change made so far durable (a no-op for stores without a backing store)."""
        ...

    async def aclose(self) -> None:
        """Flush and release the store; later calls raise ``FileSystemError``."""
        ...


class _Index:
    """The files of a store in memory, with the limits and the file/directory rules.

    ``_dirs`` counts the files under each directory, so that "is this a directory?" and "is a
    parent of this a file?" cost O(depth) instead of a scan of every path.
    """

    __slots__ = ("_dirs", "_files", "max_file_size", "max_files")

    def __init__(self, *, max_file_size: int, max_files: int) -> None:
        if not isinstance(max_file_size, int) or max_file_size <= 0:
            raise ConfigurationError(f"max_file_size must be a positive int, got {max_file_size!r}")
        if not isinstance(max_files, int) or max_files <= 0:
            raise ConfigurationError(f"max_files must be a positive int, got {max_files!r}")
        self.max_file_size = max_file_size
        self.max_files = max_files
        self._files: dict[str, str] = {}
        self._dirs: dict[str, int] = {}

    def check_content(self, path: str, content: str) -> None:
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

    def get(self, path: str) -> str:
        try:
            return self._files[path]
        except KeyError:
            if path in self._dirs:
                raise FileSystemError(f"{path} is a directory, not a file") from None
            raise FileSystemError(f"no such file: {path}; use ls to see the files") from None

    def contains(self, path: str) -> bool:
        return path in self._files

    def put(self, path: str, content: str) -> None:
        self.check_content(path, content)
        if path not in self._files:
            self.check_new(path)
            for parent in _parents(path):
                self._dirs[parent] = self._dirs.get(parent, 0) + 1
        self._files[path] = content

    def remove(self, path: str) -> None:
        self.get(path)  # the error for a missing file or a directory
        del self._files[path]
        for parent in _parents(path):
            if self._dirs[parent] == 1:
                del self._dirs[parent]
            else:
                self._dirs[parent] -= 1

    def move(self, src: str, dst: str) -> None:
        content = self.get(src)
        if src == dst:
            return
        if dst in self._files:
            raise FileSystemError(
                f"cannot move {src} to {dst}: {dst} already exists; delete it first"
            )
        # Removing first lets a file move into the directory its own name frees ("/a" is a file
        # only while no "/a/..." exists); on failure the source is put back unchanged.
        self.remove(src)
        try:
            self.check_new(dst)
        except FileSystemError:
            self.put(src, content)
            raise
        self.put(dst, content)

    def listing(self, directory: str) -> builtins.list[str]:
        if directory == "/":
            return sorted(self._files)
        prefix = directory + "/"
        return sorted(path for path in self._files if path.startswith(prefix))

    def items(self) -> builtins.list[tuple[str, str]]:
        return list(self._files.items())


class MemoryFileStore:
    """A :class:`FileStore` held in memory only; its files vanish with it.

    Args:
        max_file_size: the largest file accepted, in UTF-8 bytes.
        max_files: the most files the store holds.

    Raises:
        ConfigurationError: a limit is not a positive int.
    """

    def __init__(self, *, max_file_size: int = 1_000_000, max_files: int = 10_000) -> None:
        self._index = _Index(max_file_size=max_file_size, max_files=max_files)
        self._closed = False

    @property
    def max_file_size(self) -> int:
        """The largest file accepted, in UTF-8 bytes."""
        return self._index.max_file_size

    def _check_open(self) -> None:
        if self._closed:
            raise FileSystemError("the file store is closed")

    async def read(self, path: str) -> str:
        """See :meth:`FileStore.read`."""
        self._check_open()
        return self._index.get(normalize_path(path))

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

    async def exists(self, path: str) -> bool:
        """See :meth:`FileStore.exists`."""
        self._check_open()
        return self._index.contains(normalize_path(path))

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """See :meth:`FileStore.list`."""
        self._check_open()
        return self._index.listing(normalize_path(prefix_dir, directory=True))

    async def flush(self) -> None:
        """Nothing to flush: the memory is the store."""
        self._check_open()

    async def aclose(self) -> None:
        """Close the store; later calls raise ``FileSystemError``. Idempotent."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class DiskFileStore:
    """A :class:`FileStore` persisted as ordinary files under a base directory.

    Open it with ``await DiskFileStore.open(base_dir)`` (calling the class directly gives a store
    that refuses every call until loaded). Reads come from memory; changes land in memory at once
    and reach the disk ``debounce`` seconds after the first unflushed change, or at
    :meth:`flush` / :meth:`aclose`. A failed background flush keeps its changes pending (and is
    logged); the next flush retries them, and :meth:`flush` / :meth:`aclose` raise if that fails
    too. The store owns its single flush task and awaits it on :meth:`flush` and :meth:`aclose`.

    Use it as ``async with await DiskFileStore.open(path) as store: ...`` so it is always closed.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        debounce: float = 0.5,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
    ) -> None:
        if not isinstance(debounce, int | float) or not math.isfinite(debounce) or debounce < 0:
            raise ConfigurationError(f"debounce must be a number of seconds >= 0, got {debounce!r}")
        self._index = _Index(max_file_size=max_file_size, max_files=max_files)
        self._base = os.path.realpath(os.fspath(base_dir))
        self._debounce = float(debounce)
        self._state = "new"  # "new" -> "open" -> "closed"
        # path -> (version, content or None for a deletion), newest change per path only.
        self._pending: dict[str, tuple[int, str | None]] = {}
        self._version = 0
        # The version of each path last applied on disk, guarded by a thread lock because
        # disk work runs in worker threads: a flush whose awaiting task was cancelled can still
        # be running when the next one starts, and must never overwrite newer content.
        self._on_disk: dict[str, int] = {}
        self._disk_lock = threading.Lock()
        self._flush_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        base_dir: str | os.PathLike[str],
        *,
        debounce: float = 0.5,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
    ) -> DiskFileStore:
        """Open the store at ``base_dir`` (created if missing) and load its files.

        Args:
            base_dir: the directory holding the files; it belongs to the store.
            debounce: seconds between the first unflushed change and its write to disk;
                ``0`` writes every change before the call returns.
            max_file_size: the largest file accepted, in UTF-8 bytes.
            max_files: the most files the store holds.

        Returns:
            The open store.

        Raises:
            ConfigurationError: an option is out of range.
            PathNotAllowed: a symbolic link under ``base_dir`` points outside it.
            FileSystemError: a file under ``base_dir`` cannot be held (not UTF-8 text, too
                large, a name that is not a valid path, not a regular file) or the directory
                cannot be read; remove or fix it, or raise the limit.
        """
        store = cls(base_dir, debounce=debounce, max_file_size=max_file_size, max_files=max_files)
        await asyncio.to_thread(store._load)
        store._state = "open"
        return store

    @property
    def base_dir(self) -> str:
        """The resolved base directory."""
        return self._base

    @property
    def max_file_size(self) -> int:
        """The largest file accepted, in UTF-8 bytes."""
        return self._index.max_file_size

    def disk_path(self, path: str) -> str:
        """The file on disk that holds the virtual ``path``.

        Raises:
            PathNotAllowed: ``path`` is invalid, reserved, or would go through a symbolic link
                (inside or outside the base directory).
        """
        virtual = normalize_path(path)
        name = virtual.rpartition("/")[2]
        if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
            raise _refuse(path, "names like '.sagents-*.tmp' are reserved for temporary files")
        candidate = os.path.join(self._base, *virtual[1:].split("/"))
        resolved = os.path.realpath(candidate)
        if resolved != candidate:
            inside = os.path.commonpath([self._base, resolved]) == self._base
            where = "inside" if inside else "outside"
            raise PathNotAllowed(
                f"path {virtual!r} is not allowed: on disk it goes through a symbolic link "
                f"(to {where} the base directory), and links are never followed; "
                "remove the link or use another path"
            )
        return candidate

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> None:
        """Create the base directory and read every file under it (runs in a worker thread)."""
        try:
            os.makedirs(self._base, exist_ok=True)
            walk = list(os.walk(self._base, onerror=_raise, followlinks=False))
        except OSError as exc:
            raise FileSystemError(f"cannot read the base directory {self._base}: {exc}") from exc
        for dirpath, dirnames, filenames in walk:
            for dirname in dirnames:
                # os.walk lists links to directories here without descending into them.
                self._check_link(os.path.join(dirpath, dirname))
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                if self._check_link(full):
                    continue  # a link inside the base: its target is loaded under its own name
                if filename.startswith(_TMP_PREFIX) and filename.endswith(_TMP_SUFFIX):
                    continue  # left by an interrupted write; the rename never happened
                self._load_file(full)

    def _check_link(self, full: str) -> bool:
        """Whether ``full`` is a symbolic link; raise if it leads outside the base."""
        if not os.path.islink(full):
            return False
        target = os.path.realpath(full)
        if os.path.commonpath([self._base, target]) != self._base:
            raise PathNotAllowed(
                f"{full} is a symbolic link to {target}, outside the base directory "
                f"{self._base}; remove it (links are never followed)"
            )
        return True

    def _load_file(self, full: str) -> None:
        relative = os.path.relpath(full, self._base)
        virtual = "/" + relative.replace(os.sep, "/")
        try:
            if normalize_path(virtual) != virtual:
                raise _refuse(virtual, "it is not in normal form")
        except PathNotAllowed as exc:
            raise FileSystemError(
                f"cannot load {full}: its name is not a valid path ({exc}); rename or remove it"
            ) from exc
        try:
            info = os.lstat(full)
            if not stat.S_ISREG(info.st_mode):
                raise FileSystemError(f"cannot load {full}: it is not a regular file; remove it")
            if info.st_size > self._index.max_file_size:
                raise FileSystemError(
                    f"cannot load {full}: it is {info.st_size} bytes, over the limit of "
                    f"{self._index.max_file_size}; remove it or raise max_file_size"
                )
            with builtins.open(full, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise FileSystemError(f"cannot load {full}: {exc}") from exc
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FileSystemError(
                f"cannot load {full}: it is not UTF-8 text; only text files can live under "
                "the base directory"
            ) from None
        self._index.put(virtual, content)

    # -- the store -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state == "new":
            raise FileSystemError("the store was not loaded; create it with DiskFileStore.open()")
        if self._state == "closed":
            raise FileSystemError("the file store is closed")

    async def read(self, path: str) -> str:
        """See :meth:`FileStore.read`."""
        self._check_open()
        return self._index.get(normalize_path(path))

    async def exists(self, path: str) -> bool:
        """See :meth:`FileStore.exists`."""
        self._check_open()
        return self._index.contains(normalize_path(path))

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """See :meth:`FileStore.list`."""
        self._check_open()
        return self._index.listing(normalize_path(prefix_dir, directory=True))

    async def write(self, path: str, content: str) -> None:
        """See :meth:`FileStore.write`; also refuses a path that goes through a symlink."""
        self._check_open()
        virtual = normalize_path(path)
        self._index.check_content(virtual, content)
        await asyncio.to_thread(self.disk_path, virtual)
        self._index.put(virtual, content)
        await self._changed({virtual: content})

    async def delete(self, path: str) -> None:
        """See :meth:`FileStore.delete`."""
        self._check_open()
        virtual = normalize_path(path)
        self._index.get(virtual)
        await asyncio.to_thread(self.disk_path, virtual)
        self._index.remove(virtual)
        await self._changed({virtual: None})

    async def move(self, src: str, dst: str) -> None:
        """See :meth:`FileStore.move`; also refuses paths that go through a symlink."""
        self._check_open()
        source, destination = normalize_path(src), normalize_path(dst)
        self._index.get(source)
        await asyncio.to_thread(self.disk_path, source)
        await asyncio.to_thread(self.disk_path, destination)
        self._index.move(source, destination)
        if source != destination:
            await self._changed({source: None, destination: self._index.get(destination)})

    async def flush(self) -> None:
        """Write every pending change to disk now, waiting for a flush already running.

        Raises:
            FileSystemError: the disk refused a change (the change stays pending).
            PathNotAllowed: a symbolic link appeared on the way to a file (it stays pending).
        """
        self._check_open()
        await self._flush_all()

    async def aclose(self) -> None:
        """Flush every pending change and close the store. Idempotent.

        Raises:
            FileSystemError: the final flush failed; the store is closed all the same.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        await self._flush_all()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- flushing ------------------------------------------------------------------------------

    async def _changed(self, changes: dict[str, str | None]) -> None:
        for path, content in changes.items():
            self._version += 1
            self._pending[path] = (self._version, content)
        if self._debounce == 0:
            await self._write_pending()
        else:
            self._schedule()

    def _schedule(self) -> None:
        # One flush at a time: a running flush reschedules itself when it finds new changes.
        if self._timer is None and self._task is None and self._state == "open":
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._debounce, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(
            self._background_flush(), name=f"DiskFileStore flush {self._base}"
        )

    async def _background_flush(self) -> None:
        failed = False
        try:
            await self._write_pending()
        except Exception:
            # Not swallowed: the changes stay pending and the next flush retries them; flush()
            # and aclose() raise if it fails again. Not rescheduled, so a broken disk is not
            # hammered every `debounce` seconds.
            failed = True
            _log.warning("background flush of %s failed", self._base, exc_info=True)
        finally:
            self._task = None
        if not failed and self._pending:
            self._schedule()

    async def _flush_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            # Shielded: cancelling this caller must not cancel the flush other callers rely on.
            await asyncio.shield(self._task)
        await self._write_pending()

    async def _write_pending(self) -> None:
        # The asyncio lock makes a flush that finds nothing pending wait for one in progress,
        # so that "flush() returned" means "on disk".
        async with self._flush_lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await asyncio.to_thread(self._apply, batch)
            except BaseException:
                for path, change in batch.items():
                    self._pending.setdefault(path, change)  # a newer change wins
                raise

    def _apply(self, batch: dict[str, tuple[int, str | None]]) -> None:
        """Apply changes to disk (in a worker thread): deletions first, then writes.

        Deleting first matters when a file replaces a directory of the same name (or the
        reverse): the final state never has both, but the old one must go before the new one.
        """
        with self._disk_lock:
            ordered = sorted(batch.items(), key=lambda item: item[1][1] is not None)
            for path, (version, content) in ordered:
                if self._on_disk.get(path, -1) >= version:
                    continue
                target = self.disk_path(path)
                try:
                    if content is None:
                        self._remove_file(target)
                    else:
                        self._write_file(target, content)
                except OSError as exc:
                    raise FileSystemError(f"cannot save {path} to {target}: {exc}") from exc
                self._on_disk[path] = version

    def _write_file(self, target: str, content: str) -> None:
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(content.encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
            # Atomic on POSIX and Windows: a reader sees the old file or the new, never half.
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _remove_file(self, target: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        # Prune directories left empty, so the tree on disk mirrors the implicit directories.
        directory = os.path.dirname(target)
        while directory != self._base:
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)


def _raise(error: OSError) -> None:
    raise error
