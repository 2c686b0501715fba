"""The exception tree of sagents.

Every error sagents raises on purpose derives from :class:`SagentsError`, with one distinct type
for each decision a caller has to make::

    SagentsError
    ├── ConfigurationError            fix the code that built the object
    │   ├── InvalidAgent              Agent(...) got a bad field (the message names it)
    │   ├── InvalidMiddleware         a middleware failed its own validation
    │   └── InvalidOption             an unknown or mistyped start option
    ├── StateError                    stored or received data is not a valid state
    │   └── UnsupportedStateVersion   written by a newer sagents: upgrade, do not edit it
    ├── InvalidDecision               human decisions or answers do not match the interrupt
    ├── Halt                          not a failure: raised by a tool or hook to end a run cleanly
    ├── RunError                      a run ended in error (the state before it is kept)
    │   ├── MaxRunsExceeded           the model kept calling tools past ``max_runs``
    │   ├── UntilToolNotCalled        the model stopped without calling ``until_tool``
    │   └── ModelCallFailed           the model failed after retries and fallbacks
    ├── PersistenceError              a persistence adapter could not do it
    │   ├── PersistenceFailed         the storage failed (nothing was written): retry later
    │   ├── ConversationNotFound      no such conversation in the caller's scope
    │   ├── ConversationExists        that conversation id is taken: use another
    │   ├── ConversationOwnedElsewhere  another process runs it: retry later or go there
    │   └── StateConflict             storage refused a save (stale, fenced, deleted): reload
    ├── FileSystemError               a virtual-filesystem operation was refused
    │   └── PathNotAllowed            a path tried to leave its scope or base directory
    ├── ScriptExhausted               a ScriptedChatModel ran out of scripted replies
    ├── SupervisionError              the supervision tree refused or lost a child
    │   ├── SupervisorGaveUp          too many restarts: the supervisor stopped (escalates)
    │   ├── SupervisorNotRunning      not started, stopping or ended: build a new one
    │   ├── SupervisorAlreadyStarted  a supervisor runs once
    │   ├── ChildAlreadyStarted       that child id is present: use it or terminate it
    │   ├── ChildNotFound             no child with that id
    │   └── ChildExitedBeforeReady    a child ended before it said it was ready
    ├── InvalidTransition             the agent's status does not allow that call now
    ├── AgentNotRunning               no server runs that agent id: start it
    ├── AgentAlreadyRunning           a server already runs that agent id: use it
    ├── RegistryUnavailable           the runtime is starting or stopping: retry, never start
    └── AgentUnavailable              its host did not answer (died, timed out): retry

Messages say what to do next, because they end up in logs read by someone who did not write the
call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "AgentAlreadyRunning",
    "AgentNotRunning",
    "AgentUnavailable",
    "ChildAlreadyStarted",
    "ChildExitedBeforeReady",
    "ChildNotFound",
    "ConfigurationError",
    "ConversationExists",
    "ConversationNotFound",
    "ConversationOwnedElsewhere",
    "FileSystemError",
    "Halt",
    "InvalidAgent",
    "InvalidDecision",
    "InvalidMiddleware",
    "InvalidOption",
    "InvalidTransition",
    "MaxRunsExceeded",
    "ModelCallFailed",
    "PathNotAllowed",
    "PersistenceError",
    "PersistenceFailed",
    "RegistryUnavailable",
    "RunError",
    "SagentsError",
    "ScriptExhausted",
    "StateConflict",
    "StateError",
    "SupervisionError",
    "SupervisorAlreadyStarted",
    "SupervisorGaveUp",
    "SupervisorNotRunning",
    "UnsupportedStateVersion",
    "UntilToolNotCalled",
]


class SagentsError(Exception):
    """Root of every error sagents raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its attributes and without calling __init__ again, whatever its
        # signature: errors cross process boundaries (a distributed backend's hosts).
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[SagentsError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: values from outside (a stored state, a
    request) go into error messages, and a megabyte value must not become a megabyte message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigurationError(SagentsError):
    """An object was built with invalid configuration; fix the calling code."""


class InvalidAgent(ConfigurationError):
    """``Agent(...)`` received an invalid field.

    Attributes:
        field: the name of the offending field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"Agent.{field}: {message}")
        self.field = field


class InvalidMiddleware(InvalidAgent):
    """A middleware entry is not a middleware or failed its own validation."""

    def __init__(self, message: str) -> None:
        super().__init__("middleware", message)


class InvalidOption(ConfigurationError):
    """An option is unknown or has the wrong type."""


class StateError(SagentsError):
    """Data offered as a ``State`` (usually from storage) is malformed."""


class UnsupportedStateVersion(StateError):
    """The state was written by a newer version of sagents."""


class InvalidDecision(SagentsError):
    """Human-approval decisions do not match the pending interrupt; the interrupt is kept."""


class RunError(SagentsError):
    """A run ended in error. The state before the failing step is kept intact."""


class MaxRunsExceeded(RunError):
    """The model asked for tools again after ``max_runs`` model calls."""


class UntilToolNotCalled(RunError):
    """The model finished without calling the agent's ``until_tool``."""


class ModelCallFailed(RunError):
    """The model call failed on every attempt and every fallback model."""


class FileSystemError(SagentsError):
    """A virtual-filesystem operation was refused (missing file, size limit, bad path)."""


class PathNotAllowed(FileSystemError):
    """A path would leave its scope or base directory, or is malformed."""


class ScriptExhausted(SagentsError):
    """A ``ScriptedChatModel`` was called more often than its script has replies."""


class Halt(SagentsError):
    """Raise from a tool, a middleware hook or a custom step to end the run cleanly: the
    agent becomes ``idle`` (not ``error``) and a ``RunHalted`` event carries ``reason``.

    Not a failure, though it sits in this tree (so that everything sagents defines as an
    exception shares one root): the loop catches it before its failure handling. Raised in a
    tool, the call's result says the run was halted and the run ends after the turn's other
    calls; raised in a hook or step, the run ends there. Every call of the last model turn is
    answered, so the history stays valid.

    Args:
        reason: why the run stops, for the user and the logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = str(reason)


class InvalidTransition(SagentsError):
    """The agent's current status does not allow the requested operation."""


class AgentNotRunning(SagentsError):
    """No server runs that agent id in this runtime; start it (e.g. ``Session.ensure_running``)."""


class AgentAlreadyRunning(SagentsError):
    """A server already runs that agent id; use ``runtime.agent(agent_id)`` instead."""


class RegistryUnavailable(SagentsError):
    """The runtime is starting or shutting down: retry later, and never start a duplicate."""


class AgentUnavailable(SagentsError):
    """The process or node running the agent did not answer (it died, or the call timed out).

    Retryable: whether the call took effect is unknown. The next ``Session.ensure_running``
    restarts the agent on a live host from its persisted state once the dead host is
    forgotten; never read this as "not running".
    """

    retryable = True


class SupervisionError(SagentsError):
    """The supervision tree refused an operation or lost a child."""


class SupervisorGaveUp(SupervisionError):
    """A supervisor exceeded its restart intensity and stopped all its children.

    Its ``__cause__`` is the last crash (``None`` if the last exit was a normal one of a permanent
    child). A parent supervisor treats this as a crash of that child.
    """


class SupervisorNotRunning(SupervisionError):
    """The supervisor is not running (not started yet, stopping, or ended); start a new one."""


class SupervisorAlreadyStarted(SupervisionError):
    """A ``Supervisor`` runs once; build a fresh one (a ``ChildSpec.start`` factory does)."""


class ChildAlreadyStarted(SupervisionError):
    """A child with this id is already present; use it, or terminate it first."""


class ChildNotFound(SupervisionError):
    """The supervisor has no child with this id (never added, terminated, or temporary and gone)."""


class ChildExitedBeforeReady(SupervisionError):
    """A child's ``run()`` returned or was cancelled before it called ``ready.started()``."""


class PersistenceError(SagentsError):
    """A persistence adapter could not do what was asked."""


class PersistenceFailed(PersistenceError):
    """The storage backend failed (unreachable, timed out, refused a statement).

    The operation had no effect (transactions roll back); retrying later may succeed. The
    driver's exception is chained as ``__cause__``.
    """


class ConversationNotFound(PersistenceError):
    """No conversation with that id exists in the caller's scope.

    Raised by writes that cannot create it: a conversation id that belongs to another scope is
    reported as not found. Use a new conversation id.
    """


class ConversationExists(PersistenceError):
    """A conversation with that id already exists; create it with another id (or none)."""


class ConversationOwnedElsewhere(PersistenceError):
    """Another process (another web worker, another host) holds the conversation's ownership
    lease: it runs the conversation, and a second copy would fork it.

    Retryable: the lease expires ``ttl`` seconds after its holder stopped renewing it (a crash),
    and is released at once by a clean shutdown. Route the request to the owner, or retry later.

    Attributes:
        owner: who holds the lease (``host:pid:runtime``), or None when unknown.
        expires_at: when the lease runs out unless renewed (UTC), or None when unknown.
    """

    retryable = True

    def __init__(
        self, message: str, *, owner: str | None = None, expires_at: datetime | None = None
    ) -> None:
        super().__init__(message)
        self.owner = owner
        self.expires_at = expires_at


class StateConflict(PersistenceError):
    """Storage refused a state save: a newer state is stored (the writer is stale), the
    conversation was deleted, or another process took its ownership (the writer is fenced).

    The agent server that gets it reports it (``StatusChanged(ERROR)`` and a ``SaveRefused``
    event on the main channel) and stops, because work it does from then on could never be saved.
    Start the conversation again (``Session.ensure_running``) to continue from the stored state.

    Attributes:
        reason: ``"stale"``, ``"deleted"`` or ``"owned_elsewhere"``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
