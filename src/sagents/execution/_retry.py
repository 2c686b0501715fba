"""When and how a failed model call is tried again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RetryPolicy", "is_transient_error"]

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
_TRANSIENT_NAMES = (
    "RateLimit",
    "Timeout",
    "APIConnection",
    "ServiceUnavailable",
    "InternalServer",
    "Overloaded",
)


def is_transient_error(error: BaseException) -> bool:
    """Whether a model error is worth retrying.

    Provider SDKs disagree on exception types, so this looks at what they share: timeouts and
    connection errors, an HTTP ``status_code`` of 408/409/425/429/5xx, or a class name such as
    ``RateLimitError`` or ``APIConnectionError``.
    """
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    return any(name in cls.__name__ for cls in type(error).__mro__ for name in _TRANSIENT_NAMES)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retries of one model with exponential backoff.

    Attributes:
        max_attempts: attempts per model (1 disables retries); then fallbacks are tried.
        initial_delay: seconds before the second attempt.
        multiplier: factor applied to the delay after each attempt.
        max_delay: ceiling of the delay.
        jitter: randomise each delay in [delay/2, delay] so many agents do not retry in step.
        retry_on: which errors are transient (non-transient errors skip to the fallbacks).
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    jitter: bool = True
    retry_on: Callable[[BaseException], bool] = is_transient_error

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and multiplier >= 1")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number ``retry_number`` (0 for the first retry)."""
        delay = min(self.max_delay, self.initial_delay * self.multiplier**retry_number)
        if self.jitter and delay > 0:
            delay = random.uniform(delay / 2, delay)
        return delay

    async def sleep(self, retry_number: int, error: BaseException | None = None) -> None:
        """Wait before a retry (on the event loop's clock, so tests can use virtual time).

        When ``error`` carries the server's ``Retry-After`` (seconds), that wait is honoured,
        up to ``max_delay``: retrying earlier would only be refused again.
        """
        delay = self.delay(retry_number)
        if error is not None and (asked := retry_after(error)) is not None:
            delay = max(delay, min(asked, self.max_delay))
        if delay > 0:
            await asyncio.sleep(delay)


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked to wait (an HTTP ``Retry-After`` header in seconds), if any."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(0.0, float(value) / 1000)
        value = headers.get("retry-after")
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError):
        return None  # an HTTP date or garbage: fall back to our own backoff


NO_RETRY = RetryPolicy(max_attempts=1)
