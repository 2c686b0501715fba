"""Built-in middleware: TodoList, FileSystem, HumanInTheLoop (and the ``Middleware`` base)."""

from sagents._public import publish as _publish
from sagents.execution._middleware import Middleware
from sagents.middleware._disk_file_store import DiskFileStore
from sagents.middleware._file_store import FileStore, MemoryFileStore, normalize_path
from sagents.middleware._file_system import FileSystem
from sagents.middleware._human_in_the_loop import HumanInTheLoop
from sagents.middleware._todo_list import TodoList

__all__ = [
    "DiskFileStore",
    "FileStore",
    "FileSystem",
    "HumanInTheLoop",
    "MemoryFileStore",
    "Middleware",
    "TodoList",
    "normalize_path",
]

_publish(globals(), __all__, __name__)
