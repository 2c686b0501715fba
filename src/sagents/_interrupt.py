"""Interrupts and the human decisions that answer them.

An :class:`Interrupt` is plain data kept in ``State.interrupt``, so it is persisted with the state
and survives a restart: the approval a user gives tomorrow resumes the run paused today.
Decisions are small frozen dataclasses; :func:`parse_decisions` also accepts their JSON form
(``{"type": "approve"}``, ``{"type": "edit", "arguments": {...}}``,
``{"type": "reject", "message": "..."}``) because decisions usually arrive from a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from sagents._errors import InvalidDecision, StateError

__all__ = [
    "ActionRequest",
    "Approve",
    "Decision",
    "DecisionType",
    "Edit",
    "Interrupt",
    "Reject",
    "parse_decisions",
]

DecisionType: TypeAlias = Literal["approve", "edit", "reject"]
ALL_DECISIONS: tuple[DecisionType, ...] = get_args(DecisionType)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequest:
    """One tool call waiting for a human decision."""

    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    allowed_decisions: tuple[DecisionType, ...] = ALL_DECISIONS
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "allowed_decisions": list(self.allowed_decisions),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRequest:
        """Rebuild a request from its JSON form; every field is checked, nothing coerced.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"an action request must be an object, got {type(data).__name__}")
        unknown = set(data) - _REQUEST_KEYS
        if unknown:
            raise StateError(f"unknown action request field(s): {_names(unknown)}")
        for key in ("tool_call_id", "name"):
            if not isinstance(data.get(key), str):
                raise StateError(f"an action request needs {key!r} as a string")
        arguments = data.get("arguments")
        if not isinstance(arguments, dict):
            raise StateError("an action request needs 'arguments' as an object")
        allowed = data.get("allowed_decisions", ALL_DECISIONS)
        if not isinstance(allowed, list | tuple) or any(a not in ALL_DECISIONS for a in allowed):
            raise StateError(
                f"action request 'allowed_decisions' must list some of {', '.join(ALL_DECISIONS)}"
            )
        description = data.get("description")
        if not isinstance(description, str | None):
            raise StateError("action request 'description' must be a string or null")
        return cls(
            tool_call_id=data["tool_call_id"],
            name=data["name"],
            arguments=dict(arguments),
            allowed_decisions=tuple(allowed),
            description=description,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt:
    """A run paused for human approval.

    Attributes:
        action_requests: the pending calls, one decision expected for each, in this order.
        kind: who raised it (``"human_approval"``, or e.g. ``"sub_agent"``).
        data: extra JSON data for the raiser (e.g. which sub-agent is waiting).
    """

    action_requests: tuple[ActionRequest, ...]
    kind: str = "human_approval"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action_requests": [r.to_dict() for r in self.action_requests],
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interrupt:
        """Rebuild an interrupt from its JSON form.

        Raises:
            StateError: the data is malformed.
        """
        if not isinstance(data, Mapping):
            raise StateError(f"an interrupt must be an object, got {type(data).__name__}")
        unknown = set(data) - {"kind", "action_requests", "data"}
        if unknown:
            raise StateError(f"unknown interrupt field(s): {_names(unknown)}")
        kind = data.get("kind", "human_approval")
        if not isinstance(kind, str):
            raise StateError("interrupt 'kind' must be a string")
        requests = data.get("action_requests")
        if not isinstance(requests, list):
            raise StateError("an interrupt needs a list 'action_requests'")
        extra = data.get("data", {})
        if not isinstance(extra, dict):
            raise StateError("interrupt 'data' must be an object")
        return cls(
            action_requests=tuple(ActionRequest.from_dict(r) for r in requests),
            kind=kind,
            data=dict(extra),
        )


@dataclass(frozen=True, slots=True)
class Approve:
    """Run the call as the model asked."""

    type: Literal["approve"] = "approve"


@dataclass(frozen=True, slots=True)
class Edit:
    """Run the call with these arguments instead."""

    arguments: dict[str, Any]
    type: Literal["edit"] = "edit"


@dataclass(frozen=True, slots=True)
class Reject:
    """Do not run the call; the model is told, with ``message`` when given."""

    message: str | None = None
    type: Literal["reject"] = "reject"


Decision: TypeAlias = Approve | Edit | Reject

_REQUEST_KEYS = frozenset({"tool_call_id", "name", "arguments", "allowed_decisions", "description"})
_TYPES: dict[type, str] = {Approve: "approve", Edit: "edit", Reject: "reject"}


def _names(keys: set[Any]) -> str:
    # Keys come from outside: a megabyte key must not become a megabyte message.
    shown = sorted(repr(k)[:40] for k in keys)[:5]
    return ", ".join(shown) + (" ..." if len(keys) > 5 else "")


def _is_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON a store keeps as given: finite numbers, string keys, no sets,
    bytes or objects, nested at most 100 levels."""
    if depth > 100:
        return False
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int | float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def _parse_one(index: int, raw: Decision | Mapping[str, Any]) -> Decision:
    if isinstance(raw, Approve | Edit | Reject):
        decision: Decision = raw
    elif isinstance(raw, Mapping):
        kind = raw.get("type")
        extra = set(raw) - {"type", "arguments", "message"}
        if extra:
            raise InvalidDecision(
                f"decision {index}: unknown field(s) {sorted(extra)}; "
                "use 'type', 'arguments' (edit) or 'message' (reject)"
            )
        if kind not in ALL_DECISIONS:
            raise InvalidDecision(
                f"decision {index}: type {kind!r} is not one of 'approve', 'edit', 'reject'"
            )
        if "arguments" in raw and kind != "edit":
            raise InvalidDecision(f"decision {index}: only an edit takes 'arguments'")
        if "message" in raw and kind != "reject":
            raise InvalidDecision(f"decision {index}: only a reject takes a 'message'")
        if kind == "approve":
            decision = Approve()
        elif kind == "edit":
            decision = Edit(arguments=raw.get("arguments"))  # type: ignore[arg-type]
        elif kind == "reject":
            decision = Reject(message=raw.get("message"))
        else:
            raise InvalidDecision(
                f"decision {index}: type {kind!r} is not one of 'approve', 'edit', 'reject'"
            )
    else:
        raise InvalidDecision(
            f"decision {index}: expected Approve/Edit/Reject or a dict, got {type(raw).__name__}"
        )
    if decision.type != _TYPES[type(decision)]:
        # The run applies a decision by its class: its type must say the same, or the policy
        # (allowed decisions) would be checked against one thing and another done.
        raise InvalidDecision(
            f"decision {index}: a {type(decision).__name__} must have type "
            f"{_TYPES[type(decision)]!r}, not {decision.type!r}"
        )
    if isinstance(decision, Edit) and not isinstance(decision.arguments, dict):
        raise InvalidDecision(f"decision {index}: an edit needs 'arguments' as an object")
    if isinstance(decision, Edit) and not _is_json(decision.arguments):
        raise InvalidDecision(
            f"decision {index}: edited arguments must be JSON (string keys, finite numbers, "
            "no sets or bytes, at most 100 levels deep)"
        )
    if isinstance(decision, Reject) and not isinstance(decision.message, str | None):
        raise InvalidDecision(f"decision {index}: a reject 'message' must be a string")
    return decision


def parse_decisions(
    interrupt: Interrupt, decisions: Sequence[Decision | Mapping[str, Any]]
) -> tuple[Decision, ...]:
    """Validate ``decisions`` against ``interrupt``: one per action request, each allowed.

    Raises:
        InvalidDecision: wrong count, unknown or disallowed type, or a malformed edit/reject.
    """
    if isinstance(decisions, str | bytes | bytearray | Mapping) or not isinstance(
        decisions, Sequence
    ):
        raise InvalidDecision("decisions must be a list with one decision per pending call")
    expected = len(interrupt.action_requests)
    if len(decisions) != expected:
        names = ", ".join(r.name for r in interrupt.action_requests)
        raise InvalidDecision(
            f"expected {expected} decision(s), one per pending call ({names}), got {len(decisions)}"
        )
    parsed = tuple(_parse_one(i, raw) for i, raw in enumerate(decisions))
    for i, (request, decision) in enumerate(zip(interrupt.action_requests, parsed, strict=True)):
        if decision.type not in request.allowed_decisions:
            raise InvalidDecision(
                f"decision {i} for {request.name!r}: {decision.type!r} is not allowed; "
                f"allowed: {', '.join(request.allowed_decisions)}"
            )
    return parsed
