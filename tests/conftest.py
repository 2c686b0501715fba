"""Shared test helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sagents import telemetry

# Around sync tests the looptime plugin asks the policy for "the current loop", which on Python
# 3.11 silently creates a loop nobody closes (a ResourceWarning, an error under
# filterwarnings=error).
# Declaring that there is no current loop makes that lookup return None instead.
asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _clean_telemetry() -> Iterator[None]:
    # telemetry is process-global (like logging); keep tests from leaking handlers.
    yield
    for handler_id, _ in telemetry.list_handlers():
        telemetry.detach(handler_id)
