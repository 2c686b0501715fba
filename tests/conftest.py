"""Shared test helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sagents import telemetry


@pytest.fixture(autouse=True)
def _clean_telemetry() -> Iterator[None]:
    # telemetry is process-global (like logging); keep tests from leaking handlers.
    yield
    for handler_id, _ in telemetry.list_handlers():
        telemetry.detach(handler_id)
