"""Ownership leases: the rules both adapters apply (see :class:`ConversationLeases`).

A lease row per conversation holds its owner, a fencing token and an expiry. The adapters only
store rows and read the clock; what a row *means* is decided here, once, so the memory and SQL
adapters cannot drift apart:

* **Taking** a lease succeeds when there is no row, when the row expired, or when the caller
  already owns it; the token always increases, so an earlier holder (a crashed server of the
  same runtime included) is fenced from then on.
* **Fencing** a save: a writer that names a token must still hold exactly that lease (expired or
  not: an expired lease nobody took over is still the writer's, and the token is what proves
  it); a writer without a token is refused only while somebody else's lease is live.
* **Releasing** keeps the row (expired, marked released) so that its token keeps increasing
  across owners: a deleted row would restart the count and let a stale token match again. A
  lease taken over without that mark is *recovered*: its holder died, and what it stored last
  (display rows ahead of the state) needs reconciling.

Expiry is compared on the adapter's wall clock (UTC); processes sharing a database need clocks
that agree to well within the lease's ``ttl`` (NTP does this by milliseconds).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sagents._errors import ConversationOwnedElsewhere, StateConflict

__all__ = [
    "LeaseRow",
    "check_owner",
    "check_ttl",
    "fence",
    "recovered",
    "take",
    "takes_lease_token",
]


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A stored lease."""

    owner: str
    token: int
    expires_at: datetime
    released: bool = False


def check_ttl(ttl: float) -> timedelta:
    """``ttl`` as a duration.

    Raises:
        ValueError: not a positive, finite number of seconds.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")
    return timedelta(seconds=ttl)


def check_owner(owner: str) -> None:
    """Raise ValueError unless ``owner`` is a non-empty string of at most 255 characters."""
    if not isinstance(owner, str) or not owner or len(owner) > 255:
        raise ValueError("a lease owner must be a non-empty string of at most 255 characters")


def recovered(row: LeaseRow | None) -> bool:
    """Whether taking over ``row`` recovers from a holder that never released it."""
    return row is not None and not row.released


def take(
    row: LeaseRow | None, conversation_id: str, owner: str, ttl: timedelta, now: datetime
) -> LeaseRow:
    """The row after ``owner`` takes the lease.

    Raises:
        ConversationOwnedElsewhere: another owner holds it and it has not expired.
    """
    if row is not None and row.owner != owner and row.expires_at > now:
        raise ConversationOwnedElsewhere(
            f"conversation {conversation_id!r} runs in another process ({row.owner}) until "
            f"{row.expires_at.isoformat()} unless renewed; send the request there, or retry "
            "after that owner stops",
            owner=row.owner,
            expires_at=row.expires_at,
        )
    return LeaseRow(owner=owner, token=1 if row is None else row.token + 1, expires_at=now + ttl)


def fence(
    conversation_id: str,
    row: LeaseRow | None,
    token: int | None,
    now: datetime,
    *,
    exists: bool,
) -> None:
    """Refuse a save that would fork the conversation.

    Args:
        row: the conversation's lease row, if any.
        token: the writer's fencing token, or None when it holds no lease.
        exists: whether the conversation exists.

    Raises:
        StateConflict: the writer lost its lease, the conversation was deleted under it, or
            (without a token) another owner's lease is live.
    """
    if token is not None:
        if not exists:
            raise StateConflict(
                f"conversation {conversation_id!r} was deleted while its agent ran; the save "
                "was refused so that it is not created again",
                reason="deleted",
            )
        if row is None or row.token != token:
            holder = "nobody" if row is None else row.owner
            raise StateConflict(
                f"this writer no longer owns conversation {conversation_id!r} (its lease now "
                f"belongs to {holder}); the save was refused: start the conversation again to "
                "continue from the stored state",
                reason="owned_elsewhere",
            )
        return
    if row is not None and row.expires_at > now:
        raise StateConflict(
            f"conversation {conversation_id!r} is owned by {row.owner} until "
            f"{row.expires_at.isoformat()}; a writer without its lease may not save it",
            reason="owned_elsewhere",
        )


@functools.cache
def takes_lease_token(adapter: type, method: str) -> bool:
    """Whether ``adapter``'s write ``method`` takes a ``lease_token`` keyword.

    Both shipped adapters' writes do; the protocols leave it out, so that an application's
    adapter written without it keeps working, unfenced (as does a subclass overriding a write
    without it): callers pass a token only where this says it is taken.
    """
    try:
        parameters = inspect.signature(getattr(adapter, method)).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "lease_token" in parameters
