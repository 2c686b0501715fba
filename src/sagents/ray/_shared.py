"""Models and tools shared by the agents a process starts on a host, sent once.

In one process the agents a factory builds share its model and tools: an idle agent costs
about a kilobyte. ``runtime.start_agent(agent)`` through the Ray backend sends the agent to a
host pickled, and unpickling gives each agent its own copy of the model and tools: tens of
kilobytes per agent. So the client pickles each model and tool once (:class:`SharedPickler`,
keyed by the content of its pickle), sends it to a host once, and an agent's payload refers to
it by key; the host keeps one object per key for as long as an agent uses it
(:class:`SharedObjects`, weak references) and gives it to every agent that refers to it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import weakref
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from ray import cloudpickle

__all__ = ["SharedMissing", "SharedObjects", "SharedPickler"]

#: What is sent once and shared (each instance is kept by its content).
_SHARED_TYPES = (BaseChatModel, BaseTool)


class SharedPickler:
    """The client's side: pickles payloads with their models and tools apart (see the module
    docstring). One per process."""

    def __init__(self) -> None:
        # id(obj) -> (a weak reference to it, its key, its pickle): an object's pickle is
        # made once while it lives.
        self._known: dict[int, tuple[weakref.ref[Any], str, bytes]] = {}

    def dumps(self, payload: Any) -> tuple[bytes, dict[str, bytes]]:
        """``payload`` pickled with references to its shared objects, and those objects'
        pickles by key."""
        buffer = io.BytesIO()
        pickler = _Pickler(buffer, self._known)
        pickler.dump(payload)  # type: ignore[no-untyped-call]
        return buffer.getvalue(), pickler.shared


class _Pickler(cloudpickle.Pickler):
    def __init__(
        self, file: io.BytesIO, known: dict[int, tuple[weakref.ref[Any], str, bytes]]
    ) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-untyped-call]
        self.known = known
        self.shared: dict[str, bytes] = {}

    def persistent_id(self, obj: Any) -> str | None:
        if not isinstance(obj, _SHARED_TYPES):
            return None
        known, ident = self.known, id(obj)
        entry = known.get(ident)
        if entry is None or entry[0]() is not obj:
            blob = bytes(cloudpickle.dumps(obj))  # type: ignore[no-untyped-call]
            key = hashlib.blake2b(blob, digest_size=16).hexdigest()
            entry = (weakref.ref(obj, _forgetter(known, ident)), key, blob)
            known[ident] = entry
        self.shared[entry[1]] = entry[2]
        return entry[1]


def _forgetter(
    known: dict[int, tuple[weakref.ref[Any], str, bytes]], ident: int
) -> Callable[[weakref.ref[Any]], None]:
    def forget(_: weakref.ref[Any]) -> None:
        known.pop(ident, None)

    return forget


class SharedObjects:
    """The host's side: one object per key while an agent uses it."""

    def __init__(self) -> None:
        self._objects: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def loads(self, payload: bytes, shared: dict[str, bytes]) -> Any:
        """Unpickle ``payload``; its shared objects are the ones kept here, else loaded from
        ``shared``.

        Raises:
            SharedMissing: a referenced object is neither kept here nor in ``shared`` (its
                last agent here has ended since the client sent it): send it again.
        """
        return _Unpickler(io.BytesIO(payload), self._objects, shared).load()


class _Unpickler(pickle.Unpickler):
    def __init__(
        self,
        file: io.BytesIO,
        objects: weakref.WeakValueDictionary[str, Any],
        shared: dict[str, bytes],
    ) -> None:
        super().__init__(file)
        self.objects = objects
        self.shared = shared
        self.held: dict[str, Any] = {}  # strong references while the payload is built

    def persistent_load(self, key: Any) -> Any:
        obj = self.held.get(key)
        if obj is None:
            obj = self.objects.get(key)
        if obj is None:
            blob = self.shared.get(key)
            if blob is None:
                raise SharedMissing(key)
            obj = self.objects[key] = pickle.loads(blob)
        self.held[key] = obj
        return obj


class SharedMissing(Exception):
    """The host no longer keeps a shared object the client thought it had sent."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
