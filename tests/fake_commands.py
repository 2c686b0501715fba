"""Fake commands on ``PATH`` for the tests of the project's shell scripts (``scripts/``): the
few real tools a script needs linked in, every other program it runs written by the test."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

__all__ = ["BASH", "fake_bin", "program"]

BASH = shutil.which("bash") or "/bin/bash"


def program(path: Path, body: str) -> None:
    """A bash program at ``path`` running ``body``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # never write through a symlink to a real tool
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def fake_bin(tmp_path: Path, real_tools: Iterable[str]) -> Path:
    """A ``bin`` folder holding ``real_tools`` (linked; the test skips when one is missing)
    and an ``id`` saying root, so that the scripts never ask for sudo (they only ask
    ``id -u``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in real_tools:
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(real)
    program(bin_dir / "id", "echo 0")
    return bin_dir
