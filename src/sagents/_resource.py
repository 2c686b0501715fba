"""``AsyncResource``: the one way sagents objects you must close become context managers.

Anything with an ``aclose()`` (subscriptions, watches, file stores, viewer watches) inherits
``async with`` support from here rather than repeating the two methods (trio's convention:
things you must close are async context managers with ``aclose()``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """Mixin: ``async with resource:`` closes it with :meth:`aclose` on exit."""

    __slots__ = ()

    async def aclose(self) -> None:
        """Release the resource; idempotent."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
