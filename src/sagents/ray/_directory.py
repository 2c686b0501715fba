"""``Directory``: which host runs each agent, cluster-wide; at most one host per agent id.

One named actor per namespace. Every method but :meth:`Directory.changes` runs to its end
without awaiting, so each is atomic on the actor's event loop: two web workers placing the same
conversation at once get the same host, and that host's runtime lets exactly one start win.

An agent is *placed* before it starts (so concurrent starts agree on its host) and *running*
once its host's registry has it; a placement that never becomes a start is forgotten after
``placement_timeout``. Processes keep a mirror of the running agents, updated by long-polling
:meth:`changes`: health checks (``list_running_agents``...) read the mirror, never the actor.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any

__all__ = ["DIRECTORY_NAME", "Directory", "host_of_hash"]

DIRECTORY_NAME = "sagents-directory"

#: Changes kept for mirrors that are a little behind; one further behind gets a full snapshot.
_CHANGE_LOG = 10_000


def host_of_hash(agent_id: str, hosts: list[str]) -> str:
    """``agent_id``'s host by rendezvous hashing: stable while the hosts stay, and only the
    agents of a host that leaves move."""
    return max(hosts, key=lambda host: hashlib.blake2b(f"{host}\0{agent_id}".encode()).digest())


class Directory:
    """The cluster's agent directory (a Ray actor; see the module docstring)."""

    def __init__(self, placement: str = "least_loaded", placement_timeout: float = 60.0) -> None:
        self._placement = placement
        self._placement_timeout = placement_timeout
        self._hosts: dict[str, int] = {}  # host name -> agents placed or running there
        self._running: dict[str, str] = {}  # agent id -> host
        self._placed: dict[str, tuple[str, float]] = {}  # agent id -> (host, deadline)
        self._draining: set[str] = set()  # hosts that take no new agents
        self._owners: dict[str, str] = {}  # host -> the owner id of its runtime's leases
        self._dead_owners: set[str] = set()  # owner ids of hosts found dead
        self._transfers: dict[str, str] = {}  # agent id -> the host it is leaving (drain)
        self._files: dict[str, str] = {}  # shared filesystem scope (its repr) -> its host
        self._version = 0
        self._log: deque[tuple[int, str, str | None]] = deque(maxlen=_CHANGE_LOG)
        self._changed: asyncio.Event | None = None

    # -- hosts -----------------------------------------------------------------------------

    def add_host(self, host: str, owner: str | None = None) -> None:
        self._hosts.setdefault(host, 0)
        if owner is not None:
            self._owners[host] = owner
        self._draining.discard(host)  # (re)started: it takes agents again

    def drain(self, host: str) -> None:
        """``host`` takes no new agents (its own leave as it stops them)."""
        if host in self._hosts:
            self._draining.add(host)

    def transfer(self, agent_id: str, host: str) -> str:
        """``agent_id`` leaves the draining ``host``: placed now on another host (its next
        start goes there), which is returned; the move is remembered for that start."""
        if agent_id in self._placed and self._placed[agent_id][0] == host:
            del self._placed[agent_id]
        running = self._running.pop(agent_id, None)
        try:
            target = self.place(agent_id)
        finally:
            if running is not None:
                self._running[agent_id] = running
        self._transfers[agent_id] = host
        return target

    def hosts(self) -> dict[str, int]:
        """Host name -> number of agents placed or running there."""
        return dict(self._hosts)

    def forget_host(self, host: str) -> list[str]:
        """Remove a dead host and everything it ran; the agents it ran. Its leases' owner is
        remembered as dead (see :meth:`is_dead_owner`)."""
        owner = self._owners.pop(host, None)
        if owner is not None:
            self._dead_owners.add(owner)
        self._hosts.pop(host, None)
        self._draining.discard(host)
        lost = [agent_id for agent_id, on in self._running.items() if on == host]
        for agent_id in lost:
            self._set(agent_id, None)
        for agent_id, (on, _) in list(self._placed.items()):
            if on == host:
                del self._placed[agent_id]
        self.release_files(host)
        return lost

    # -- shared filesystem scopes ----------------------------------------------------------

    def claim_files(self, scope: str, host: str) -> str | None:
        """``host`` is to bring up the shared filesystem ``scope``: None when it may (the
        scope is now its own), else the host that holds it."""
        holder = self._files.get(scope)
        if holder is None or holder == host or holder not in self._hosts:
            self._files[scope] = host
            return None
        return holder

    def release_files(self, host: str, scope: str | None = None) -> None:
        """``host`` no longer holds ``scope`` (None: any scope)."""
        if scope is not None:
            if self._files.get(scope) == host:
                del self._files[scope]
            return
        for held in [s for s, h in self._files.items() if h == host]:
            del self._files[held]

    # -- agents ----------------------------------------------------------------------------

    def place(self, agent_id: str, pinned: str | None = None) -> str:
        """The host ``agent_id`` runs on, or is to start on: where it runs or was placed, else
        ``pinned`` (a host name), else one chosen by the placement policy.

        Raises:
            RuntimeError: no host is available.
        """
        host = self._running.get(agent_id)
        if host is not None:
            return host
        now = time.monotonic()
        placed = self._placed.get(agent_id)
        if placed is not None and placed[1] > now and placed[0] in self._hosts:
            if placed[0] not in self._draining:
                return placed[0]
            del self._placed[agent_id]  # placed on a host that began to drain: place again
            self._count(placed[0], -1)
        hosts = [name for name in self._hosts if name not in self._draining]
        if not hosts:
            raise RuntimeError("no sagents host is available; start the backend's hosts")
        if pinned is not None and pinned in hosts:
            host = pinned
        elif self._placement == "hash":
            host = host_of_hash(agent_id, sorted(hosts))
        else:
            host = min(hosts, key=lambda name: (self._hosts[name], name))
        self._placed[agent_id] = (host, now + self._placement_timeout)
        self._hosts[host] += 1
        return host

    def unplace(self, agent_id: str, host: str) -> None:
        """A placement on ``host`` that did not become a start (the start failed)."""
        placed = self._placed.get(agent_id)
        if placed is not None and placed[0] == host:
            del self._placed[agent_id]
            self._count(host, -1)

    def registered(self, agent_id: str, host: str) -> tuple[int, str | None]:
        """``host``'s runtime registered ``agent_id``: the directory's version after it, and
        the host a drain moved the agent from (None: it was not moved)."""
        placed = self._placed.pop(agent_id, None)
        if placed is None or placed[0] != host:
            self._count(host, +1)  # started without a placement here (e.g. a restart)
        if placed is not None and placed[0] != host:
            self._count(placed[0], -1)
        self._set(agent_id, host)
        return self._version, self._transfers.pop(agent_id, None)

    def unregistered(self, agent_id: str, host: str) -> tuple[int, str | None]:
        """``agent_id`` left ``host``'s registry (stopped, expired, crashed for good): the
        directory's version after it (and None, as :meth:`registered` returns)."""
        if self._running.get(agent_id) == host:
            self._set(agent_id, None)
            self._count(host, -1)
        return self._version, None

    def is_dead_owner(self, owner: str) -> bool:
        """Whether ``owner`` (a runtime's lease owner id) belonged to a host found dead: its
        leases may be taken over at once."""
        return owner in self._dead_owners

    def lookup(self, agent_id: str) -> str | None:
        return self._running.get(agent_id)

    # -- mirrors ---------------------------------------------------------------------------

    async def changes(self, after: int, timeout: float) -> tuple[int, Any]:
        """``(version, changes)`` once the directory is newer than ``after`` (or ``timeout``
        passed): ``changes`` is a list of ``(agent_id, host or None)`` since ``after``, or a
        dict of every running agent when ``after`` is too old (or -1)."""
        if self._version == after:
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return self._version, []
        log = self._log
        if after < 0 or not log or log[0][0] > after + 1:
            return self._version, dict(self._running)
        return self._version, [(agent_id, host) for v, agent_id, host in log if v > after]

    def _set(self, agent_id: str, host: str | None) -> None:
        if host is None:
            self._running.pop(agent_id, None)
        else:
            self._running[agent_id] = host
        self._version += 1
        self._log.append((self._version, agent_id, host))
        changed = self._changed
        if changed is not None:
            changed.set()
            self._changed = None  # waiters woke; the next wait makes a fresh event

    def _count(self, host: str, delta: int) -> None:
        if host in self._hosts:
            self._hosts[host] = max(0, self._hosts[host] + delta)
