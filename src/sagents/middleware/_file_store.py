"""The FileSystem middleware's view of file stores: a re-export of :mod:`sagents._files`.

The path rules, the :class:`FileStore` protocol and :class:`MemoryFileStore` live in the neutral
``sagents._files`` (mounts in ``sagents._mounts``) so that the runtime and the persistence layer
can use them without importing any middleware; this module keeps the names where the middleware
package has always offered them.
"""

from __future__ import annotations

from sagents._files import (
    MAX_PATH_LENGTH,
    MAX_SEGMENT_BYTES,
    ConversationFiles,
    FileInfo,
    FileStore,
    FileStoreUser,
    MemoryFileStore,
    normalize_path,
)
from sagents._mounts import Mount, MountedFileStore

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_SEGMENT_BYTES",
    "ConversationFiles",
    "FileInfo",
    "FileStore",
    "FileStoreUser",
    "MemoryFileStore",
    "Mount",
    "MountedFileStore",
    "normalize_path",
]
