"""Loading the scripts of ``examples/`` in the tests that run them (they are not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(filename: str, *, register: bool = False) -> ModuleType:
    """A fresh copy of ``examples/<filename>`` (its own runtime, store, app); ``register``
    puts it in ``sys.modules`` under its stem (what dataclasses and pickling of its names
    need)."""
    name = Path(filename).stem
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
