"""Fixtures of the Ray backend's tests, which are all ``slow``: each module starts a local
Ray (real processes), so ``scripts/test --fast`` leaves them to CI."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local Ray per test module (starting one costs seconds), shut down after it; its
    address."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, namespace="sagents-tests", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


_namespaces = itertools.count()


@pytest.fixture
def namespace(ray_cluster: str) -> str:
    """A Ray namespace of its own for one test's directory and hosts."""
    return f"sagents-test-{next(_namespaces)}"
