"""What both persistence adapters share: the checks they apply, the head/rows encoding of a
state, and a clock that never repeats a timestamp.

Kept apart from either adapter so that the SQL one does not depend on the in-memory one, and
so that what one accepts the other accepts too: both call the same checks.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import orjson

from sagents._errors import StateError
from sagents._messages import message_to_json
from sagents._state import State
from sagents.persistence._protocols import DisplayMessage, Scope, StateSnapshot, ToolCallStatus
from sagents.persistence._scope import SCOPE_KEY_MARK, scope_key

__all__ = [
    "MAX_ID_LENGTH",
    "TOOL_CALL_STATUSES",
    "MonotonicClock",
    "check_display_messages",
    "check_id",
    "check_limit",
    "check_scope",
    "check_status",
    "check_target",
    "decode_state",
    "encode_head",
    "encode_messages",
    "is_ahead",
    "is_delta",
    "json_copy",
    "loads",
    "new_id",
    "to_utc",
]

TOOL_CALL_STATUSES: frozenset[str] = frozenset(get_args(ToolCallStatus))


def encode_head(state: State) -> dict[str, Any]:
    """The state without its messages: ``State.to_dict()`` minus ``messages`` (cheap: no rows)."""
    head = state.replace(messages=[]).to_dict()
    del head["messages"]
    return head


def encode_messages(state: State, start: int = 0) -> list[dict[str, Any]]:
    """``state.messages[start:]`` in their stored JSON form (only those are serialised)."""
    return [message_to_json(m) for m in state.messages[start:]]


def loads(text: str) -> Any:
    """Decode JSON text that sagents stored: with orjson (about ten times faster than ``json``
    on a long conversation's rows), or ``json`` for what orjson refuses and ``json.dumps``
    wrote (integers beyond 64 bits, lone surrogates).

    Raises:
        ValueError: ``text`` is not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode_state(head: Mapping[str, Any], messages: Sequence[Any]) -> State:
    """Rebuild a state from its head and message rows, through ``State.from_dict`` validation.

    Raises:
        StateError: the stored data is malformed.
    """
    if not isinstance(head, Mapping):
        raise StateError(f"stored state head must be an object, got {type(head).__name__}")
    return State.from_dict({**head, "messages": list(messages)})


def is_delta(snapshot: StateSnapshot, stored_version: int | None, stored_count: int) -> bool:
    """Whether ``snapshot`` may be written as a delta on top of what is stored.

    Only when it builds on exactly the stored version, and its unchanged prefix exists in storage
    and in the state; anything else (including an incoherent prefix) is a full rewrite, which is
    always correct.
    """
    prefix = snapshot.unchanged_prefix
    return (
        stored_version is not None
        and snapshot.base_version == stored_version
        and 0 <= prefix <= stored_count
        and prefix <= len(snapshot.state.messages)
    )


#: The longest id (conversation, scope key, tool call, display message) the SQL schema stores.
MAX_ID_LENGTH = 255


def check_id(value: str | None, what: str) -> None:
    """Raise ValueError unless ``value`` is None or a non-empty string of at most 255 characters.

    Both adapters check, so that an id that fits in memory also fits in a ``VARCHAR(255)``.
    """
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{what} must be a non-empty string of at most {MAX_ID_LENGTH} characters, "
            f"got {value!r:.80}"
        )


def check_scope(scope: Scope) -> str | None:
    """The key both adapters keep ``scope`` by (see :func:`scope_key`).

    Both key by it, the in-memory adapter included, so that they tell apart the same scopes:
    ``1`` and ``True`` are equal in Python but two tenants in SQL, and so in memory too.

    Raises:
        ConfigurationError: the scope has no key (see :func:`scope_key`).
        ValueError: a text scope that is empty or longer than 255 characters (as stored).
    """
    key = scope_key(scope)
    if isinstance(scope, str) and not isinstance(scope, enum.Enum):  # text: its own key
        check_id(scope, "scope")
        if key is not None and len(key) > MAX_ID_LENGTH:
            raise ValueError(
                f"scope {scope!r:.80} starts with {SCOPE_KEY_MARK!r}, so it is stored escaped, "
                f"in more than {MAX_ID_LENGTH} characters; use a shorter scope"
            )
    return key


def check_target(scope: Scope, conversation_id: str) -> str | None:
    """The key of ``scope`` (see :func:`check_scope`), once ``conversation_id`` is checked too.

    Raises:
        ConfigurationError: the scope has no key.
        ValueError: a malformed text scope or conversation id.
    """
    key = check_scope(scope)
    check_id(conversation_id, "conversation_id")
    return key


def check_status(status: str) -> None:
    """Raise ValueError unless ``status`` is a :data:`ToolCallStatus`."""
    if status not in TOOL_CALL_STATUSES:
        allowed = ", ".join(sorted(TOOL_CALL_STATUSES))
        raise ValueError(f"unknown tool call status {status!r}; use one of {allowed}")


def check_limit(limit: int) -> None:
    """Raise ValueError for a page size below 1."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def check_display_messages(conversation_id: str, messages: Sequence[DisplayMessage]) -> None:
    """Raise ValueError if a message names another conversation than the one appended to."""
    for i, message in enumerate(messages):
        check_id(message.id, f"messages[{i}].id")
        check_id(message.tool_call_id, f"messages[{i}].tool_call_id")
        if message.conversation_id != conversation_id:
            raise ValueError(
                f"messages[{i}].conversation_id is {message.conversation_id!r}, but they are "
                f"appended to {conversation_id!r}"
            )


def is_ahead(row_version: int | None, state_version: int | None) -> bool:
    """Whether a display row belongs to a message newer than the stored state."""
    return row_version is not None and (state_version is None or row_version > state_version)


def to_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def new_id() -> str:
    """A fresh id for a conversation or a display message."""
    return uuid.uuid4().hex


class MonotonicClock:
    """UTC wall-clock time that never repeats or goes back within one store.

    Conversations are paged on ``updated_at``; two rows with the same timestamp could straddle a
    page boundary and one would be skipped. Within one process that cannot happen.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


def json_copy(value: Any, what: str) -> Any:
    """A deep copy of ``value`` through JSON, as a database would store it.

    Raises:
        StateError: ``value`` is not JSON (a set, a datetime, NaN...).
    """
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StateError(f"{what} cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise StateError(f"{what} is nested too deeply to be stored as JSON") from None
