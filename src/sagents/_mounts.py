"""Mounts: several file stores under one tree.

A :class:`MountedFileStore` is itself a :class:`~sagents._files.FileStore` whose paths are
routed by prefix to other stores, so one agent can keep ``/memories`` in its conversation's
persistence, ``/scratch`` in memory and ``/docs`` in a read-only store shared by every
conversation, and its tools never know the difference. It is the Unix ``mount`` model: a store
mounted at ``/memories`` holds ``/memories/plan.md`` as ``/plan.md``, so an existing store (a
directory on disk, a conversation's persisted files) can be mounted anywhere as it is.

Rules, chosen so that a path always means one file:

* **The longest mount point wins.** With ``/`` and ``/memories`` mounted, ``/memories/a.md``
  lives in the second store, and a file the first store may hold under ``/memories`` is
  hidden (never listed, never reachable).
* **A mount point is a directory.** Writing a file at a mount point, or at a directory that
  holds one (``/a`` while ``/a/b`` is mounted), is refused; a path under no mount is refused
  with :class:`PathNotAllowed` naming the mount points.
* **Read-only mounts refuse every change** with :class:`PathNotAllowed` naming the mount, and a
  move out of one is refused too (it would delete the source).
* **Errors speak outer paths.** A mounted store reports its own paths; the messages are
  rewritten so that the model reads the path it wrote.
* **A move across mounts** is a copy then a delete, the one operation that is not atomic: when
  the delete fails, the copy is removed again and the error raised.

Closing the mounted store closes the stores it owns (``Mount(owned=False)`` for a store shared
with others, which its creator closes).
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed
from sagents._files import FileInfo, FileStore, normalize_path
from sagents._resource import AsyncResource

__all__ = ["Mount", "MountedFileStore"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """A store mounted in a :class:`MountedFileStore`.

    Attributes:
        store: the files.
        read_only: refuse every change (write, edit, move, delete) under this mount.
        owned: close ``store`` when the mounted store closes; False for a store shared with
            others (its creator closes it).
    """

    store: FileStore
    read_only: bool = False
    owned: bool = True


def _boundary(path: str) -> re.Pattern[str]:
    # A path as a word of a message: not part of a longer path or name.
    return re.compile(r"(?<![\w/.\-~])" + re.escape(path) + r"(?![\w/.\-~])")


@contextlib.contextmanager
def _outer_paths(point: str, *inner_paths: str) -> Iterator[None]:
    """Re-raise a ``FileSystemError`` of the store mounted at ``point`` with its paths (the
    ``inner_paths`` and their parents) written as outer paths."""
    try:
        yield
    except FileSystemError as exc:
        if point == "/":
            raise
        text = str(exc)
        seen: set[str] = set()
        for inner in inner_paths:
            while inner != "" and inner not in seen:  # the path and its parents
                seen.add(inner)
                inner = inner.rpartition("/")[0]
        for inner in sorted(seen, key=len, reverse=True):
            # A function replacement: the path is literal text, never a template.
            outer = point + inner
            text = _boundary(inner).sub(lambda _: outer, text)  # noqa: B023 - used at once
        raise type(exc)(text) from exc


class MountedFileStore(AsyncResource):
    """A :class:`FileStore` made of other stores mounted at path prefixes.

    ``MountedFileStore({"/": MemoryFileStore(), "/docs": Mount(store=docs, read_only=True)})``

    Args:
        mounts: mount point -> store, or a :class:`Mount` for options. Mount points are
            directory paths (``"/"`` mounts a store at the root).

    Raises:
        ConfigurationError: no mount, or two mount points that normalise to the same path.
        PathNotAllowed: a mount point is not a valid path.
    """

    def __init__(self, mounts: Mapping[str, FileStore | Mount]) -> None:
        if not mounts:
            raise ConfigurationError("MountedFileStore needs at least one mount")
        table: dict[str, Mount] = {}
        for raw, value in mounts.items():
            point = normalize_path(raw, directory=True)
            if point in table:
                raise ConfigurationError(f"two mounts at {point}; give each mount its own path")
            table[point] = value if isinstance(value, Mount) else Mount(store=value)
        # Longest first: routing takes the first that matches.
        self._points = sorted(table, key=len, reverse=True)
        self._mounts = MappingProxyType(dict(sorted(table.items())))
        self._closed = False

    @property
    def mounts(self) -> Mapping[str, Mount]:
        """The mounts by mount point (read-only)."""
        return self._mounts

    def mount_points(self) -> builtins.list[str]:
        """The mount points, sorted."""
        return sorted(self._mounts)

    # -- routing -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise FileSystemError("the file store is closed")

    def _route(self, path: str) -> tuple[str, Mount, str]:
        """``(mount point, mount, inner path)`` of the normalised file ``path``.

        Raises:
            FileSystemError: ``path`` is a mount point or holds one (a directory).
            PathNotAllowed: ``path`` is under no mount.
        """
        for point in self._points:
            if point == "/" or path.startswith(point + "/"):
                inner = path if point == "/" else path[len(point) :]
                self._check_not_a_mount_directory(path)
                return point, self._mounts[point], inner
        self._check_not_a_mount_directory(path)
        raise PathNotAllowed(
            f"path {path!r} is not allowed: it is under no mount; files live under "
            f"{', '.join(self.mount_points())}"
        )

    def _check_not_a_mount_directory(self, path: str) -> None:
        prefix = path + "/"
        for point in self._points:
            if point == path:
                raise FileSystemError(f"{path} is a directory (a mount point), not a file")
            if point.startswith(prefix):
                raise FileSystemError(f"{path} is a directory (it holds the mount {point})")

    def _writable(self, path: str, verb: str) -> tuple[str, Mount, str]:
        point, mount, inner = self._route(path)
        if mount.read_only:
            writable = [p for p, m in self._mounts.items() if not m.read_only]
            where = f"; write under {', '.join(writable)} instead" if writable else ""
            raise PathNotAllowed(f"cannot {verb} {path}: {point} is a read-only mount{where}")
        return point, mount, inner

    # -- the store -----------------------------------------------------------------------------

    async def read(self, path: str) -> str:
        """See :meth:`FileStore.read`."""
        self._check_open()
        point, mount, inner = self._route(normalize_path(path))
        with _outer_paths(point, inner):
            return await mount.store.read(inner)

    async def exists(self, path: str) -> bool:
        """See :meth:`FileStore.exists`; False for a mount point or a path under no mount."""
        self._check_open()
        virtual = normalize_path(path)
        try:
            _, mount, inner = self._route(virtual)
        except FileSystemError:
            return False
        return await mount.store.exists(inner)

    async def stat(self, path: str) -> FileInfo:
        """See :meth:`FileStore.stat`; the info carries the outer path."""
        self._check_open()
        virtual = normalize_path(path)
        point, mount, inner = self._route(virtual)
        with _outer_paths(point, inner):
            info = await mount.store.stat(inner)
        return FileInfo(
            path=virtual, size=info.size, modified=info.modified, mime_type=info.mime_type
        )

    async def write(self, path: str, content: str) -> None:
        """See :meth:`FileStore.write`.

        Raises:
            PathNotAllowed: also when ``path`` is under a read-only mount or under no mount.
        """
        self._check_open()
        point, mount, inner = self._writable(normalize_path(path), "write")
        with _outer_paths(point, inner):
            await mount.store.write(inner, content)

    async def delete(self, path: str) -> None:
        """See :meth:`FileStore.delete`; refused under a read-only mount."""
        self._check_open()
        point, mount, inner = self._writable(normalize_path(path), "delete")
        with _outer_paths(point, inner):
            await mount.store.delete(inner)

    async def move(self, src: str, dst: str) -> None:
        """See :meth:`FileStore.move`; across mounts, a copy then a delete (undone if the
        delete fails). Refused when either side is read-only."""
        self._check_open()
        source, destination = normalize_path(src), normalize_path(dst)
        src_point, src_mount, src_inner = self._writable(source, "move")
        dst_point, dst_mount, dst_inner = self._writable(destination, "move a file to")
        if src_point == dst_point:
            with _outer_paths(src_point, src_inner, dst_inner):
                await src_mount.store.move(src_inner, dst_inner)
            return
        with _outer_paths(src_point, src_inner):
            content = await src_mount.store.read(src_inner)
        if await dst_mount.store.exists(dst_inner):
            raise FileSystemError(
                f"cannot move {source} to {destination}: {destination} already exists; "
                "delete it first"
            )
        with _outer_paths(dst_point, dst_inner):
            await dst_mount.store.write(dst_inner, content)
        try:
            with _outer_paths(src_point, src_inner):
                await src_mount.store.delete(src_inner)
        except BaseException as exc:
            # Whatever stopped the delete (a cancellation included, which is re-raised), the
            # copy is removed again so that the file is not in both places; a failure of that
            # undo is noted on the error rather than hiding it.
            try:
                await dst_mount.store.delete(dst_inner)
            except Exception as undo_error:
                exc.add_note(f"{destination} could not be removed again: {undo_error}")
            raise

    async def list(self, prefix_dir: str = "/") -> builtins.list[str]:
        """See :meth:`FileStore.list`: the files of every mount under ``prefix_dir``, without
        the ones a deeper mount hides."""
        self._check_open()
        directory = normalize_path(prefix_dir, directory=True)
        found: builtins.list[str] = []
        for point, mount in self._mounts.items():
            if directory == "/" or point == directory or point.startswith(directory + "/"):
                inner_dir = "/"  # the whole mount is under the directory listed
            elif point == "/" or directory.startswith(point + "/"):
                inner_dir = directory if point == "/" else directory[len(point) :]
            else:
                continue
            base = "" if point == "/" else point
            for inner in await mount.store.list(inner_dir):
                outer = base + inner
                if self._owner(outer) == point:
                    found.append(outer)
        return sorted(found)

    def _owner(self, path: str) -> str | None:
        """The mount point a file path routes to, or None (a hidden or unroutable path)."""
        for point in self._points:
            if point == "/" or path.startswith(point + "/"):
                prefix = path + "/"
                if any(p == path or p.startswith(prefix) for p in self._points):
                    return None
                return point
        return None

    async def flush(self) -> None:
        """Flush every mounted store (all of them, even when one fails; the first error is
        raised)."""
        self._check_open()
        errors: builtins.list[Exception] = []
        for mount in self._mounts.values():
            try:
                await mount.store.flush()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def aclose(self) -> None:
        """Close the owned stores (all of them, even when one fails; the first error is
        raised). Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: builtins.list[Exception] = []
        for mount in self._mounts.values():
            if mount.owned:
                try:
                    await mount.store.aclose()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
