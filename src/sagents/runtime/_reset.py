"""Resetting an agent: back to a fresh state without restarting its server.

``handle.reset()`` is a mailbox command like the others, so it never interleaves with a run or
a resume. What it does, in order:

1. a run in progress is cancelled (``StatusChanged(CANCELLED)``) and queued messages are
   dropped: the user asked to start over, not to finish first;
2. the files, by policy (below);
3. the state becomes a fresh one — no messages, todos, metadata or pending interrupt (a pending
   approval or question simply goes with the messages it belonged to) — and ``AgentReset`` is
   broadcast, then ``StatusChanged(IDLE)`` unless the agent was idle already;
4. the fresh state is saved like any lifecycle point (agent persistence; the ``auto_save``
   callback when it saves on idle), so a restart does not bring the old conversation back.

The server, its subscriptions, its sequence numbers and its options stay: a page that is
watching sees the events and clears what it shows.

**Files.** ``files="keep"`` (the default) leaves them: files often outlive a conversation's
messages on purpose, and deleting is the one step a reset cannot undo. ``files="clear"``
deletes every file of the agent's own filesystem scope — its conversation's files, which it
shares only with its sub-agents. A scope the application shares between conversations
(``filesystem_scope=``) is refused with ``InvalidOption`` rather than emptied for everyone, and
a store the application handed to ``FileSystem(store)`` itself is the application's and is not
touched. Files go before the state, so a store that fails midway leaves the conversation's
messages as they were (the run cancelled) and the reset can be tried again.

**Display rows** (``display_message_persistence``) are a transcript of what was shown and are
kept (the persistence protocol has no call to delete them): a row of type ``reset``
(``{"files": ...}``) is appended instead, broadcast like any row, so a page live or reloaded
shows what follows the last one. A watching page also gets ``AgentReset``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, get_args

from sagents._errors import FileSystemError, InvalidOption
from sagents._files import FileStore
from sagents._state import State
from sagents._status import Status
from sagents.events import AgentReset, Event
from sagents.runtime._filesystem_server import shared_scope
from sagents.runtime._options import AgentOptions

if TYPE_CHECKING:
    from sagents.runtime._recorder import Recorder
    from sagents.runtime._runner import Runner

__all__ = ["RESET_FILES", "ResetFiles", "ResetHost", "check_files", "reset"]

#: What a reset does with the agent's files (see the module docstring).
ResetFiles: TypeAlias = Literal["keep", "clear"]
RESET_FILES: tuple[ResetFiles, ...] = get_args(ResetFiles)


class ResetHost(Protocol):
    """What a reset needs from its agent server."""

    agent_id: str
    options: AgentOptions
    services: Mapping[str, Any]
    state: State
    status: Status
    last_result: Any
    recorder: Recorder

    def set_state(self, state: State) -> None: ...

    def set_status(self, status: Status, data: Any = None) -> None: ...

    def emit(self, event: Event) -> None: ...

    def touch(self) -> None: ...


def check_files(files: object) -> ResetFiles:
    """``files`` as a policy.

    Raises:
        InvalidOption: it is not one of :data:`RESET_FILES`.
    """
    if not isinstance(files, str) or files not in RESET_FILES:
        raise InvalidOption(f"reset(files=...) must be one of {RESET_FILES}, got {files!r}")
    return files


async def reset(host: ResetHost, runner: Runner, files: ResetFiles) -> None:
    """Reset ``host`` (see the module docstring); runs in its mailbox.

    Raises:
        InvalidOption: ``files="clear"`` for a filesystem scope shared between conversations.
        FileSystemError: the store failed while clearing (the state is left as it was).
    """
    store = _store_to_clear(host) if check_files(files) == "clear" else None
    await runner.clear()
    if store is not None:
        await _clear(store)
    host.set_state(State(agent_id=host.agent_id))
    host.last_result = None
    host.touch()
    host.emit(AgentReset(files=files))
    if host.status is not Status.IDLE:
        host.set_status(Status.IDLE)
    if host.recorder.display is not None:
        host.recorder.display.reset_recorded(files)
    host.recorder.checkpoint("reset")
    auto_save = host.options.auto_save
    if auto_save is not None and auto_save.on_idle:
        host.recorder.auto_save("auto_save.reset")


def _store_to_clear(host: ResetHost) -> FileStore | None:
    """The store ``files="clear"`` empties: the agent's own scope's, None without one."""
    scope: Hashable | None = host.options.filesystem_scope
    if scope is None:
        return None  # no middleware of the agent uses the runtime's files
    if shared_scope(scope):
        raise InvalidOption(
            f"reset(files='clear'): agent {host.agent_id!r} shares the files of scope "
            f"{scope!r} with other conversations; clearing them would empty theirs too. Reset "
            "with files='keep' and delete the files you mean through the store"
        )
    store: FileStore | None = host.services.get("filesystem")
    return store


async def _clear(store: FileStore) -> None:
    for path in await store.list("/"):
        try:
            await store.delete(path)
        except FileSystemError:
            if await store.exists(path):
                raise  # a real failure, not a file a sub-agent deleted meanwhile
    await store.flush()
