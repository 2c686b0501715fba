"""The middleware context without a server (``_middleware_context.py``): background tasks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sagents.execution import MiddlewareContext
from sagents.execution._containment import BaseExceptionRaised
from tests.execution.conftest import in_a_loop_of_its_own


@pytest.mark.parametrize("error", [SystemExit(4), KeyboardInterrupt(), GeneratorExit()], ids=type)
def test_a_background_task_raising_system_exit_fails_the_task_not_the_process(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> BaseException | None:
        context = MiddlewareContext("agent-1")

        async def job() -> None:
            raise error

        task = context.spawn(job(), name="job")
        await asyncio.wait([task])
        await context.aclose()
        return task.exception()

    with caplog.at_level(logging.ERROR, logger="sagents.middleware"):
        failure = in_a_loop_of_its_own(main)

    assert isinstance(failure, BaseExceptionRaised)
    assert failure.original is error
    assert any("background task failed" in r.getMessage() for r in caplog.records)
