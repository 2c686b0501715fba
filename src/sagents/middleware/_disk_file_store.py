"""``DiskFileStore``: the FileSystem's files persisted under a base directory.

It keeps the same in-memory index as :class:`~sagents.middleware.MemoryFileStore` (loaded from
the base directory when opened) and writes changes back after a short *debounce*, so tools answer
at memory speed and a burst of edits costs one disk write per file. The timer starts at the
first change after a flush and later changes ride along rather than pushing it back, so a steady
stream of edits can never starve the disk. Every disk path is re-derived from the normalised
virtual path and resolved; it must equal its lexical form under the resolved base directory, so
no symbolic link is ever followed, whether it points outside (refused loudly, also when found at
open) or inside (skipped at open, refused on write). Path rules live in ``sagents._files``.

A change the disk cannot hold is refused *before* it enters the index: the path is checked
against the operating system's limits (``PATH_MAX`` for the whole path under the base directory,
``NAME_MAX`` per segment, both in bytes). Otherwise one over-long name would be accepted in
memory, fail at every flush, and block the files written after it. Each file of a flush is
written on its own: one that fails stays pending and is reported, the others reach the disk.
With ``debounce=0`` the write happens inside the call, and a failure fails that call alone and
leaves the index as it was.

A large tree can be opened *lazily* (``lazy=True``): the walk then records each file's name,
size and mtime only, and a file's content is read from disk on its first read (and kept). Such a
file has no pending change until it is written, so reading it from disk always gives what the
index stands for; moving it reads it first, since a move is written as a new file.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import os
import stat
import tempfile
import threading
from collections.abc import Callable

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed
from sagents._files import IndexedFileStore, _Index, _refuse, normalize_path

__all__ = ["DiskFileStore"]

_log = logging.getLogger(__name__)

# Atomic writes go through a temporary file in the target's directory; files named like this are
# ours (a crash between write and rename leaves one behind), so they are skipped when loading and
# refused as virtual file names.
_TMP_PREFIX = ".sagents-"
_TMP_SUFFIX = ".tmp"
# The longest temporary file name mkstemp makes: the prefix, eight random characters, the suffix.
_TMP_NAME_BYTES = len(_TMP_PREFIX) + 8 + len(_TMP_SUFFIX)
# Linux's limits, used where the file system does not say (os.pathconf): PATH_MAX counts the
# terminating NUL byte, so a path may have at most PATH_MAX - 1 bytes.
_DEFAULT_PATH_MAX = 4096
_DEFAULT_NAME_MAX = 255

# path -> (version, content or None for a deletion)
_Batch = dict[str, tuple[int, str | None]]


class DiskFileStore(IndexedFileStore):
    """A :class:`FileStore` persisted as ordinary files under a base directory.

    Open it with ``await DiskFileStore.open(base_dir)`` (calling the class directly gives a store
    that refuses every call until loaded). Reads come from memory; changes land in memory at once
    and reach the disk ``debounce`` seconds after the first unflushed change, or at
    :meth:`flush` / :meth:`aclose`. Files are written one by one: a file a background flush
    could not write stays pending (and is logged) without holding back the others; the next
    flush retries it, and :meth:`flush` / :meth:`aclose` raise if that fails too. With
    ``debounce=0`` a change is written before the call returns, and a change the disk refuses
    fails its call and leaves the store as it was. Paths the disk could not hold (too long under
    the base directory) are refused before anything changes. The store owns its single flush
    task and awaits it on :meth:`flush` and :meth:`aclose`.

    Use it as ``async with await DiskFileStore.open(path) as store: ...`` so it is always closed.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        debounce: float = 0.5,
        max_file_size: int = 1_000_000,
        max_files: int = 10_000,
        lazy: bool = False,
    ) -> None:
        if not isinstance(debounce, int | float) or not math.isfinite(debounce) or debounce < 0:
            raise ConfigurationError(f"debounce must be a number of seconds >= 0, got {debounce!r}")
        self._index = _Index(max_file_size=max_file_size, max_files=max_files)
        self._base = os.path.realpath(os.fspath(base_dir))
        self._debounce = float(debounce)
        self._lazy = lazy
        self._state = "new"  # "new" -> "open" -> "closed"
        # path -> (version, content or None for a deletion), newest change per path only.
        self._pending: _Batch = {}
        self._version = 0
        # The version of each path last applied on disk, guarded by a thread lock because
        # disk work runs in worker threads: a flush whose awaiting task was cancelled can still
        # be running when the next one starts, and must never overwrite newer content.
        self._on_disk: dict[str, int] = {}
        self._disk_lock = threading.Lock()
        # The version of the newest change of each path that reached the index, so that undoing
        # a refused write never undoes a newer one made meanwhile.
        self._latest: dict[str, int] = {}
        self._path_max = _DEFAULT_PATH_MAX
        self._name_max = _DEFAULT_NAME_MAX
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
        lazy: bool = False,
    ) -> DiskFileStore:
        """Open the store at ``base_dir`` (created if missing) and load its files.

        Args:
            base_dir: the directory holding the files; it belongs to the store.
            debounce: seconds between the first unflushed change and its write to disk;
                ``0`` writes every change before the call returns.
            max_file_size: the largest file accepted, in UTF-8 bytes.
            max_files: the most files the store holds.
            lazy: load only the names, sizes and times of the files now, and each file's
                content on its first read (then kept). Opening a large tree then costs its
                names, not its bytes; a file that is not UTF-8 text is refused when it is
                read rather than when the store opens.

        Returns:
            The open store.

        Raises:
            ConfigurationError: an option is out of range.
            PathNotAllowed: a symbolic link under ``base_dir`` points outside it.
            FileSystemError: a file under ``base_dir`` cannot be held (not UTF-8 text, too
                large, a name that is not a valid path, not a regular file) or the directory
                cannot be read; remove or fix it, or raise the limit.
        """
        store = cls(
            base_dir,
            debounce=debounce,
            max_file_size=max_file_size,
            max_files=max_files,
            lazy=lazy,
        )
        await asyncio.to_thread(store._load)
        store._state = "open"
        return store

    @property
    def base_dir(self) -> str:
        """The resolved base directory."""
        return self._base

    def disk_path(self, path: str) -> str:
        """The file on disk that holds the virtual ``path``.

        Raises:
            PathNotAllowed: ``path`` is invalid, reserved, too long for the disk under the base
                directory, or would go through a symbolic link (inside or outside the base
                directory).
        """
        virtual = normalize_path(path)
        name = virtual.rpartition("/")[2]
        if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
            raise _refuse(path, "names like '.sagents-*.tmp' are reserved for temporary files")
        segments = virtual[1:].split("/")
        for segment in segments:
            if len(os.fsencode(segment)) > self._name_max:
                raise _refuse(
                    path, f"a segment is longer than {self._name_max} bytes, this disk's limit"
                )
        candidate = os.path.join(self._base, *segments)
        # The temporary file of an atomic write sits beside the target and may have a longer
        # name, so room for it is kept too.
        size = (
            len(os.fsencode(candidate))
            - len(os.fsencode(name))
            + max(len(os.fsencode(name)), _TMP_NAME_BYTES)
        )
        if size >= self._path_max:
            raise PathNotAllowed(
                f"path {virtual[:80]!r} is not allowed: under the base directory it would be "
                f"{size} bytes on disk, over this disk's limit of {self._path_max - 1}; "
                "use a shorter path"
            )
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
            self._path_max = _pathconf(self._base, "PC_PATH_MAX", _DEFAULT_PATH_MAX)
            self._name_max = _pathconf(self._base, "PC_NAME_MAX", _DEFAULT_NAME_MAX)
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
        if self._lazy:
            info = self._check_disk_file(full)
            self._index.put_unloaded(virtual, info.st_size, info.st_mtime)
        else:
            content, info = self._read_disk_file(full)
            self._index.put(virtual, content, modified=info.st_mtime)

    def _check_disk_file(self, full: str) -> os.stat_result:
        """``lstat`` of a file to load: a regular file within the size limit."""
        try:
            info = os.lstat(full)
        except OSError as exc:
            raise FileSystemError(f"cannot load {full}: {exc}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise FileSystemError(f"cannot load {full}: it is not a regular file; remove it")
        if info.st_size > self._index.max_file_size:
            raise FileSystemError(
                f"cannot load {full}: it is {info.st_size} bytes, over the limit of "
                f"{self._index.max_file_size}; remove it or raise max_file_size"
            )
        return info

    def _read_disk_file(self, full: str) -> tuple[str, os.stat_result]:
        """The text of a file to load, and its ``lstat`` (in a worker thread)."""
        info = self._check_disk_file(full)
        try:
            with builtins.open(full, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise FileSystemError(f"cannot load {full}: {exc}") from exc
        try:
            return data.decode("utf-8"), info
        except UnicodeDecodeError:
            raise FileSystemError(
                f"cannot load {full}: it is not UTF-8 text; only text files can live under "
                "the base directory"
            ) from None

    async def _fetch(self, path: str) -> str:
        """The content of a file the lazy index knows by name only, read from disk."""

        def read() -> str:
            return self._read_disk_file(self.disk_path(path))[0]

        return await asyncio.to_thread(read)

    # -- the store -----------------------------------------------------------------------------

    async def write(self, path: str, content: str) -> None:
        """See :meth:`FileStore.write`; also refuses a path the disk could not hold.

        Raises:
            PathNotAllowed: also when the path goes through a symbolic link or is too long for
                the disk under the base directory.
            FileSystemError: also, with ``debounce=0``, when the disk refused the file (the
                store is then unchanged).
        """
        self._check_open()
        virtual = normalize_path(path)
        self._index.check_put(virtual, content)
        await asyncio.to_thread(self.disk_path, virtual)
        undo = self._undo_for(virtual)
        self._index.put(virtual, content)
        await self._changed({virtual: content}, undo)

    async def delete(self, path: str) -> None:
        """See :meth:`FileStore.delete`."""
        self._check_open()
        virtual = normalize_path(path)
        self._index.entry(virtual)
        await asyncio.to_thread(self.disk_path, virtual)
        undo = self._undo_for(virtual)
        self._index.remove(virtual)
        await self._changed({virtual: None}, undo)

    async def move(self, src: str, dst: str) -> None:
        """See :meth:`FileStore.move`; also refuses paths that go through a symlink."""
        self._check_open()
        source, destination = normalize_path(src), normalize_path(dst)
        await self._loaded(source)  # a lazily loaded file is written anew under its new name
        self._index.check_move(source, destination)
        await asyncio.to_thread(self.disk_path, source)
        await asyncio.to_thread(self.disk_path, destination)
        if source == destination:
            return
        undo_source, undo_destination = self._undo_for(source), self._undo_for(destination)
        self._index.move(source, destination)

        def undo(changed: set[str]) -> None:
            # The destination first: the source may live where the destination's directory was.
            undo_destination(changed)
            undo_source(changed)

        await self._changed({source: None, destination: self._index.get(destination)}, undo)

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

    # -- flushing ------------------------------------------------------------------------------

    def _undo_for(self, path: str) -> Callable[[set[str]], None]:
        """A function putting ``path`` back in the index as it is now, if it is in ``changed``."""
        previous = self._index.current(path)

        def undo(changed: set[str]) -> None:
            if path in changed:
                self._index.restore(path, previous)

        return undo

    def _versioned(self, changes: dict[str, str | None]) -> _Batch:
        batch: _Batch = {}
        for path, content in changes.items():
            self._version += 1
            batch[path] = (self._version, content)
            self._latest[path] = self._version
        return batch

    async def _changed(
        self, changes: dict[str, str | None], undo: Callable[[set[str]], None]
    ) -> None:
        """Record changes already made in the index; write them now when ``debounce`` is 0.

        ``undo`` puts the given paths back as they were before the change, when the disk
        refuses it.
        """
        batch = self._versioned(changes)
        if self._debounce != 0:
            self._pending.update(batch)
            self._schedule()
            return
        try:
            await self._write_batch(batch)
        except FileSystemError:
            # Undo only what no newer change has replaced meanwhile. What the disk did apply
            # of this change (the deletion half of a move whose write failed) is put back on
            # disk too, so that the index and the disk agree again.
            mine = {path for path, (version, _) in batch.items() if self._latest[path] == version}
            undo(mine)
            applied = {path for path in mine if self._on_disk.get(path) == batch[path][0]}
            if applied:
                index = self._index
                reverted = self._versioned(
                    {path: index.get(path) if index.contains(path) else None for path in applied}
                )
                try:
                    await self._write_batch(reverted)
                except FileSystemError:
                    self._pending.update(reverted)  # the next flush retries, and reports it
            raise
        except BaseException:
            # Cancelled while the disk works: the write may or may not land, so it stays
            # pending and the next flush makes sure of it (versions make that idempotent).
            self._pending.update(batch)
            raise

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
                failures = await asyncio.to_thread(self._apply, batch)
            except BaseException:
                for path, change in batch.items():
                    self._pending.setdefault(path, change)  # a newer change wins
                raise
            for path in failures:
                self._pending.setdefault(path, batch[path])  # retried by the next flush
            if failures:
                raise _summary(failures)

    async def _write_batch(self, batch: _Batch) -> None:
        """Write ``batch`` now (``debounce=0``); raise if any of it failed."""
        async with self._flush_lock:
            failures = await asyncio.to_thread(self._apply, batch)
        if failures:
            raise _summary(failures)

    def _apply(self, batch: _Batch) -> dict[str, FileSystemError]:
        """Apply changes to disk (in a worker thread): deletions first, then writes.

        Deleting first matters when a file replaces a directory of the same name (or the
        reverse): the final state never has both, but the old one must go before the new one.
        Each change is applied on its own, so one the disk refuses never blocks the others.

        Returns:
            The error of each change that could not be applied, by path.
        """
        failures: dict[str, FileSystemError] = {}
        with self._disk_lock:
            ordered = sorted(batch.items(), key=lambda item: item[1][1] is not None)
            for path, (version, content) in ordered:
                if self._on_disk.get(path, -1) >= version:
                    continue
                try:
                    target = self.disk_path(path)
                    try:
                        if content is None:
                            self._remove_file(target)
                        else:
                            self._write_file(target, content)
                    except OSError as exc:
                        raise FileSystemError(f"cannot save {path} to {target}: {exc}") from exc
                except FileSystemError as exc:
                    failures[path] = exc
                    continue
                self._on_disk[path] = version
        return failures

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


def _pathconf(path: str, name: str, default: int) -> int:
    """A limit of the file system holding ``path``, or ``default`` where it has none."""
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf
        return default
    return value if value > 0 else default


def _summary(failures: dict[str, FileSystemError]) -> FileSystemError:
    """One error for the changes of a flush the disk refused."""
    errors = list(failures.values())
    if len(errors) == 1:
        return errors[0]
    paths = ", ".join(sorted(failures)[:5])
    error = FileSystemError(
        f"{len(errors)} files could not be saved ({paths}...); the first error: {errors[0]}; "
        "they stay pending and the next flush retries them"
    )
    error.__cause__ = errors[0]
    return error
