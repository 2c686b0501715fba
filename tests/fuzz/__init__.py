"""Fuzzing campaign of issue 16: hostile input at every door, with hypothesis.

Each module throws random data at one door — ``State.from_dict``, ``AgentHandle.resume``, the
conversation websocket, the FileSystem tools — and checks the same contract: a bad input is a
clear error of the documented type, nothing else changes, and the agent (or connection, or
store) still works afterwards. Defects the campaign found are pinned down in ``test_found.py``:
a strict ``xfail`` while open, a regression test once fixed.

Example counts are small enough for CI (each module well under 20 s). Set
``SAGENTS_FUZZ_EXAMPLES`` to a number to multiply them for a long run, e.g.
``SAGENTS_FUZZ_EXAMPLES=50 pytest --timeout=0 tests/fuzz`` (the per-test timeout is sized for
the CI counts).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["fuzz_settings"]


def _scale() -> int:
    raw = os.environ.get("SAGENTS_FUZZ_EXAMPLES", "")
    try:
        scale = int(raw)
    except ValueError:
        return 1
    return max(scale, 1)


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``max_examples`` times ``SAGENTS_FUZZ_EXAMPLES``.

    No deadline (several tests do real I/O: sockets, disk), and the health checks that only
    complain about that cost, or about an async fixture shared by the examples of one test, are
    off. The *explain* phase is skipped: on a failure it replays the example hundreds of times,
    past the per-test timeout, and the shrunk example says enough.
    """
    return settings(
        max_examples=max_examples * _scale(),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
