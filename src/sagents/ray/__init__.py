"""Agents on every core of a machine, or on a cluster: the Ray backend.

``Runtime(backend=RayBackend())`` runs the runtime's agents on host actors of a Ray cluster
(a local one when no ``address`` is given): one agent per id cluster-wide, handles and
subscriptions routed to the host that runs the agent. Install with ``pip install
'sagents[ray]'``; see ``docs/distributed.md``.
"""

try:
    import ray as _ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("sagents.ray needs Ray: pip install 'sagents[ray]'") from exc

from sagents.ray._backend import RayBackend
from sagents.ray._presence import RayPresence

__all__ = ["RayBackend", "RayPresence"]
