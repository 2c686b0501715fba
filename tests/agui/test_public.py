"""``sagents.agui``'s public surface, and what happens without the ``agui`` extra."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import sagents.agui

BLOCK_AG_UI = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ag_ui":
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
"""


def test_all_is_sorted_complete_and_public() -> None:
    exported = sagents.agui.__all__
    assert sorted(exported) == list(exported)
    public = {
        name
        for name, value in vars(sagents.agui).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(exported)
    for name in exported:
        obj = getattr(sagents.agui, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "sagents.agui", name


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AG_UI + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_without_the_extra_the_import_says_what_to_install() -> None:
    out = run(
        """
        try:
            import sagents.agui
        except ImportError as exc:
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'sagents[agui]'" in out.stdout


def test_without_the_extra_the_demo_runs_without_its_agui_endpoint(tmp_path: Path) -> None:
    out = run(
        f"""
        from pathlib import Path
        from sagents.web import WebConfig, create_app

        app = create_app(WebConfig(data_dir=Path({str(tmp_path)!r}), secret=b"s" * 32))
        paths = app.openapi()["paths"]
        print("/agui" in paths, "/api/conversations" in paths)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_the_demo_serves_agui(tmp_path: Path) -> None:
    from sagents.web import WebConfig, create_app

    app = create_app(WebConfig(data_dir=tmp_path, secret=b"s" * 32))
    assert "post" in app.openapi()["paths"]["/agui"]
