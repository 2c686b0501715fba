"""Helper for the public namespaces: objects report the namespace users import them from."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any


def publish(namespace: Mapping[str, Any], names: list[str], module: str) -> None:
    """Set ``__module__`` of the classes and functions in ``names`` to ``module``.

    Reprs, docs and error messages then show ``sagents.Agent`` rather than
    ``sagents.execution._agent.Agent``, the path users are meant to import.
    """
    for name in names:
        obj = namespace[name]
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if any(part.startswith("_") for part in obj.__module__.split(".")):
            obj.__module__ = module
