"""Import hygiene: the core namespaces load none of the protocol or cluster integrations.

``sagents.agui`` (``ag_ui``), ``sagents.a2a`` (``a2a``), ``MCPTools`` (``mcp``,
``langchain_mcp_adapters``) and ``sagents.ray`` (``ray``) import their packages when they are
used; ``import sagents`` and the namespaces every application imports never do, so an
application pays neither the import time nor the dependency for an integration it does not use.
(``tests/test_public_api.py`` checks the same for SQLAlchemy and Starlette with ``import
sagents``.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

INTEGRATIONS = ["a2a", "ag_ui", "langchain_mcp_adapters", "mcp", "ray"]


def test_the_core_namespaces_import_no_integration() -> None:
    # A fresh interpreter: this one has imported everything the other tests use.
    code = textwrap.dedent(
        f"""
        import importlib.util, json, sys

        integrations = {INTEGRATIONS!r}
        # Installed (the dev extra has them all), so their absence below means something.
        installed = [name for name in integrations if importlib.util.find_spec(name)]
        import sagents, sagents.middleware, sagents.web, sagents.persistence, sagents.session
        loaded = sorted(
            {{name.split(".")[0] for name in sys.modules}} & set(integrations)
        )
        print(json.dumps({{"installed": installed, "loaded": loaded}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["installed"] == INTEGRATIONS
    assert result["loaded"] == []
