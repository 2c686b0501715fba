"""Helpers for the execution tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


class Odd(BaseException):
    """A library's own ``BaseException`` subclass (neither an error nor a cancellation)."""


def in_a_loop_of_its_own(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on a fresh event loop and return its result.

    A ``BaseException`` escaping that loop (asyncio carries ``SystemExit`` and
    ``KeyboardInterrupt`` out of ``run_until_complete`` from any task) fails the calling test
    instead of ending the whole test session.
    """

    async def wrapper() -> T:
        return await main()

    try:
        return asyncio.run(wrapper())
    except BaseException as exc:
        pytest.fail(f"{exc!r} escaped the event loop")
