"""``AgentInfo``: a frozen snapshot of one agent server for health checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sagents._status import Status
from sagents.persistence._protocols import Scope

__all__ = ["AgentInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInfo:
    """What ``runtime.agent_info(agent_id)`` reports.

    Attributes:
        agent_id: the agent.
        status: its current status.
        message_count: messages in its state.
        has_interrupt: whether a human decision is pending.
        uptime: seconds since this server instance started.
        conversation_id: the conversation it serves, if any.
        subscriber_count: live subscriptions (main and debug channels).
        viewer_count: viewers on its presence topic (0 without presence tracking).
        inactivity_remaining: seconds before an inactivity shutdown; None when disabled or while
            a run is in progress (a run never times out).
        queued_messages: messages waiting for the current run to finish.
        todo_count: todos in its state.
        metadata: the ``metadata`` start option.
        scope: the tenant the agent serves (the ``scope`` start option): the value itself, any
            hashable value; :func:`sagents.persistence.scope_key` gives its stable text.
        instance: identifies this server instance: a restarted agent (whose events are
            numbered from 1 again) has a new one, also when it restarts in another process.
        node: where it runs, with a distributed backend (a Ray host's name); None in one
            process.
    """

    agent_id: str
    status: Status
    message_count: int
    has_interrupt: bool
    uptime: float
    conversation_id: str | None = None
    subscriber_count: int = 0
    viewer_count: int = 0
    inactivity_remaining: float | None = None
    queued_messages: int = 0
    todo_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    scope: Scope = None
    instance: int = 0
    node: str | None = None
