"""``DebugLog``: one structured log file per agent, for looking at what an agent did afterwards.

Each agent gets ``<folder>/<agent id>.jsonl`` (the id made safe for a file name), one JSON object
per line with ``time``, ``agent_id`` and ``event``:

- ``server_start``: the agent server started (message count);
- ``before_model``: a model call is about to happen (message count, last message);
- ``after_model``: the model's reply (text, tool calls, usage);
- ``handle_message``: a message sent to this middleware (``ctx.send("debug_log", data)`` is a
  way for other code to add a record);
- ``llm_error``, ``tool_start``, ``tool_end``, ``tool_error``: from the langchain callback
  handler this middleware gives (``callbacks()``); the loop passes it to every model and tool
  call.

Choices:

- **Off costs nothing.** ``DebugLog(enabled=False)`` (the default) reports that it overrides no
  hook and gives no callbacks, so the agent never calls it.
- **Never breaks the agent.** A write that fails (an unwritable folder, a full disk) is logged
  once and the middleware turns itself off; nothing is raised into the run.
- **Small synchronous appends.** A record is a few hundred bytes (long texts are cut at
  ``max_text``); appending it costs less than a thread hop would.
- **Bounded size.** Past ``max_bytes`` the file is renamed to ``<name>.jsonl.1`` (replacing the
  previous backup) and a new one is started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from sagents._errors import InvalidMiddleware, SagentsError
from sagents._state import State
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import get_middleware_context

__all__ = ["DebugLog"]

_log = logging.getLogger("sagents.middleware")

_HOOKS = frozenset({"before_model", "after_model", "handle_message", "on_server_start"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_stem(agent_id: str) -> str:
    """A file name for ``agent_id``: itself when harmless, else a cleaned form plus a hash (so
    that ``a/b`` and ``a_b`` never share a file)."""
    cleaned = _UNSAFE.sub("_", agent_id).lstrip(".")[:100]
    if cleaned == agent_id and cleaned:
        return cleaned
    digest = hashlib.sha256(agent_id.encode()).hexdigest()[:10]
    return f"{cleaned or 'agent'}-{digest}"


def _current_agent_id(state: State | None = None) -> str:
    try:
        return get_middleware_context().agent_id
    except SagentsError:
        return (state.agent_id if state is not None else None) or "unknown"


class DebugLog(Middleware):
    """Writes a JSON-lines log per agent under ``folder`` (off unless ``enabled=True``).

    Args:
        folder: where the files go (created if missing).
        enabled: whether to log at all; when False the middleware does nothing and costs nothing.
        max_bytes: a file past this size is moved to ``<name>.jsonl.1`` and a new one started.
        max_text: longest text kept from one message, tool argument dump or result.

    Raises:
        InvalidMiddleware: enabled without a folder, or a bad limit.
    """

    key = "debug_log"

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        enabled: bool = False,
        max_bytes: int = 5_000_000,
        max_text: int = 2_000,
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.max_text = max_text
        self._broken = False
        self._folder_ready = False
        self._handler = _DebugLogCallbacks(self)
        self.validate()

    def validate(self) -> None:
        if self.enabled and self.folder is None:
            raise InvalidMiddleware("DebugLog(enabled=True) needs folder=... to write its files in")
        for name in ("max_bytes", "max_text"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidMiddleware(f"DebugLog({name}=...) must be an int >= 1, got {value!r}")

    @property
    def active(self) -> bool:
        """Whether records are being written (enabled, and no write has failed)."""
        return self.enabled and not self._broken

    def overrides(self, hook: str) -> bool:
        # The agent asks once, when it is built: a disabled DebugLog is never called at all.
        if hook in _HOOKS and not self.enabled:
            return False
        return super().overrides(hook)

    def callbacks(self) -> Sequence[BaseCallbackHandler]:
        return (self._handler,) if self.enabled else ()

    def path_for(self, agent_id: str) -> Path:
        """The log file of ``agent_id``."""
        if self.folder is None:
            raise InvalidMiddleware("DebugLog has no folder")
        return self.folder / f"{safe_file_stem(agent_id)}.jsonl"

    # -- hooks ---------------------------------------------------------------------------------

    async def on_server_start(self, state: State) -> State | None:
        self.write(_current_agent_id(state), "server_start", message_count=len(state.messages))
        return None

    async def before_model(self, state: State) -> State | None:
        if not self.active:
            return None
        agent_id = _current_agent_id(state)
        messages = state.messages
        self.write(
            agent_id,
            "before_model",
            message_count=len(messages),
            last_message=self._message(messages[-1]) if messages else None,
        )
        return None

    async def after_model(self, state: State) -> State | None:
        if not self.active:
            return None
        reply = state.messages[-1] if state.messages else None
        self.write(
            _current_agent_id(state),
            "after_model",
            message_count=len(state.messages),
            reply=self._message(reply) if reply is not None else None,
        )
        return None

    async def handle_message(self, message: Any, state: State) -> State | None:
        self.write(_current_agent_id(state), "handle_message", message=message)
        return None

    # -- writing -------------------------------------------------------------------------------

    def write(self, agent_id: str, event: str, **fields: Any) -> None:
        """Append one record to ``agent_id``'s file; never raises (a failure turns logging off)."""
        if not self.active:
            return
        record = {"time": time.time(), "agent_id": agent_id, "event": event, **fields}
        line = json.dumps(record, default=self._fallback, ensure_ascii=False) + "\n"
        data = line.encode()
        try:
            path = self.path_for(agent_id)
            if not self._folder_ready:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folder_ready = True
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                os.replace(path, path.with_name(path.name + ".1"))
            with path.open("ab") as file:
                file.write(data)
        except OSError as exc:
            self._broken = True
            _log.warning(
                "DebugLog: cannot write to %s (%s); debug logging is off for this process",
                self.folder,
                exc,
            )

    def _cut(self, text: str) -> str:
        if len(text) <= self.max_text:
            return text
        return text[: self.max_text] + f"... [{len(text) - self.max_text} more characters]"

    def _fallback(self, value: Any) -> Any:
        return self._cut(repr(value))

    def _message(self, message: BaseMessage) -> dict[str, Any]:
        data: dict[str, Any] = {"type": message.type, "text": self._cut(message.text)}
        if message.id:
            data["id"] = message.id
        if isinstance(message, AIMessage):
            if message.tool_calls:
                data["tool_calls"] = [
                    {
                        "id": call.get("id"),
                        "name": call["name"],
                        "args": self._cut(json.dumps(call["args"], default=str)),
                    }
                    for call in message.tool_calls
                ]
            if message.usage_metadata:
                data["usage"] = dict(message.usage_metadata)
        elif isinstance(message, ToolMessage):
            data["tool_call_id"] = message.tool_call_id
            data["status"] = message.status
        return data


class _DebugLogCallbacks(AsyncCallbackHandler):
    """langchain callbacks feeding the same files (model errors, tool runs when reported)."""

    def __init__(self, owner: DebugLog) -> None:
        self._owner = owner

    def _write(self, event: str, run_id: UUID, **fields: Any) -> None:
        if self._owner.active:
            self._owner.write(_current_agent_id(), event, run_id=str(run_id), **fields)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._write("llm_error", run_id, error=f"{type(error).__name__}: {error}")

    async def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name")
        self._write("tool_start", run_id, name=name, input=self._owner._cut(input_str))

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        text = output.text if isinstance(output, BaseMessage) else str(output)
        fields: dict[str, Any] = {"output": self._owner._cut(text)}
        if isinstance(output, ToolMessage):
            fields.update(tool_call_id=output.tool_call_id, status=output.status)
        self._write("tool_end", run_id, **fields)

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._write("tool_error", run_id, error=f"{type(error).__name__}: {error}")
