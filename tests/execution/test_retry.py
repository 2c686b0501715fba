"""Which model errors are transient, and the backoff schedule (X15)."""

from __future__ import annotations

import pytest

from sagents import RetryPolicy
from sagents.execution import is_transient_error


class RateLimitError(Exception):
    pass


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    "error",
    [TimeoutError(), ConnectionResetError(), RateLimitError(), HTTPError(429), HTTPError(503)],
)
def test_transient(error: BaseException) -> None:
    assert is_transient_error(error)


@pytest.mark.parametrize("error", [ValueError("bad"), HTTPError(400), HTTPError(401), KeyError()])
def test_not_transient(error: BaseException) -> None:
    assert not is_transient_error(error)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=False)
    assert [policy.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_within_half_to_full_delay() -> None:
    policy = RetryPolicy(initial_delay=4.0, jitter=True)
    assert all(2.0 <= policy.delay(0) <= 4.0 for _ in range(100))


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_delay": -1}, {"multiplier": 0.5}]
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.status_code = 429


class ProviderError(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("rate limited")
        self.response = _Response(headers)


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),  # longer than our backoff: honoured
        ({"retry-after-ms": "2500"}, 2.5),
        ({"retry-after": "600"}, 5.0),  # capped at max_delay
        ({"retry-after": "0.1"}, 1.0),  # shorter: our own backoff wins
        ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, 1.0),  # a date: ignored
        ({}, 1.0),
    ],
)
async def test_retry_after_is_honoured_up_to_max_delay(
    headers: dict[str, str], expected: float
) -> None:
    import asyncio

    policy = RetryPolicy(initial_delay=1.0, max_delay=5.0, jitter=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await policy.sleep(0, ProviderError(headers))
    assert loop.time() - started == pytest.approx(expected, abs=0.01)
