"""``WebConfig``: everything the demo application is built from, in one frozen value.

The command line (``sagents demo``) and the tests build one and hand it to
:func:`~sagents.web.create_app`; nothing below reads ``os.environ``. Defaults suit a person trying
the demo on a laptop: the offline scripted model, SQLite and files under ``./sagents-data``, a
5-second presence grace period (a page reload does not stop the agent) and a 10-minute inactivity
timeout. Tests shrink the timers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sagents._errors import ConfigurationError

__all__ = ["WebConfig"]


def _positive(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ConfigurationError(f"WebConfig.{name}: must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """The demo application's configuration.

    Attributes:
        data_dir: where the SQLite database, the files of each identity and the cookie secret
            live (created when missing).
        database_url: an async SQLAlchemy URL; default ``sqlite+aiosqlite`` in ``data_dir``.
        model: ``"provider:name"`` for a real model through ``init_chat_model``; None runs the
            offline scripted scenario (``sagents.execution.demo_model``).
        model_delay: seconds between streamed chunks of the offline model (so tokens visibly
            stream).
        secret: the key that signs identity cookies; None reads (or creates once) ``secret.key``
            in ``data_dir``.
        grace_period: seconds an idle agent with no open tab waits before it shuts down.
        inactivity_timeout: seconds without activity before an agent shuts down (None: never).
        drain_timeout: on shutdown, seconds to let running agents finish before they are stopped.
        max_frame_bytes: the largest websocket message accepted; larger ones get an error frame.
        max_body_bytes: the largest HTTP request body accepted; larger ones are refused with 413
            before they are parsed.
        max_message_chars: the longest user message accepted (over HTTP and the websocket).
        debugger: mount the live debugger at ``/debug``.
        debugger_token: when set, every debugger request must carry it (loopback included);
            without it the debugger answers loopback clients only.
        model_options: extra keyword arguments for ``init_chat_model``.
        ray_address: run the agents on this Ray cluster (``RayBackend(address=...)``, with
            cluster-wide presence) rather than in this process: what lets several server
            processes (``sagents demo --workers N``) serve the same conversations. The files
            and the database must then be reachable from every node (one machine, a shared
            volume, PostgreSQL).
    """

    data_dir: Path = field(default_factory=lambda: Path("sagents-data"))
    database_url: str | None = None
    model: str | None = None
    model_delay: float = 0.02
    secret: bytes | None = None
    grace_period: float = 5.0
    inactivity_timeout: float | None = 600.0
    drain_timeout: float = 10.0
    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024
    max_message_chars: int = 20_000
    debugger: bool = False
    debugger_token: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.model is not None and (
            not isinstance(self.model, str) or ":" not in self.model.strip(":")
        ):
            raise ConfigurationError(
                f"WebConfig.model: expected 'provider:name' (e.g. 'openai:gpt-4o-mini'), "
                f"got {self.model!r}"
            )
        _positive("model_delay", self.model_delay, allow_zero=True)
        _positive("grace_period", self.grace_period, allow_zero=True)
        _positive("inactivity_timeout", self.inactivity_timeout, allow_none=True)
        _positive("drain_timeout", self.drain_timeout, allow_zero=True)
        _positive("max_frame_bytes", self.max_frame_bytes)
        _positive("max_body_bytes", self.max_body_bytes)
        _positive("max_message_chars", self.max_message_chars)
        if self.secret is not None and (
            not isinstance(self.secret, bytes) or len(self.secret) < 16
        ):
            raise ConfigurationError("WebConfig.secret: must be at least 16 bytes")

    def to_json(self) -> str:
        """The configuration as JSON (what a server process hands its workers)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["data_dir"] = str(self.data_dir)
        values["secret"] = None if self.secret is None else self.secret.hex()
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> WebConfig:
        """The configuration :meth:`to_json` wrote."""
        values = json.loads(text)
        values["data_dir"] = Path(values["data_dir"])
        if values.get("secret") is not None:
            values["secret"] = bytes.fromhex(values["secret"])
        return cls(**values)

    @property
    def url(self) -> str:
        """The database URL in use (the explicit one, or SQLite in ``data_dir``)."""
        if self.database_url is not None:
            return self.database_url
        from sagents.persistence.sql import sqlite_url

        return sqlite_url(self.data_dir / "sagents.db")
