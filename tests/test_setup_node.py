"""``scripts/node``: Node.js and npm for the tests run under Node, and tests/agui's packages.

As in ``tests/web/test_setup_edges.py``, the script runs for real, with ``bash``, in a copy made
under ``tmp_path`` whose programs (``apt-get``, ``node``, ``npm``...) are small shell scripts
that log how they were called: the tests check what the script decides (install or not, which
packages, with which options), fast and without touching the machine's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.fake_commands import BASH, fake_bin, program

REPO = Path(__file__).resolve().parents[1]
# What the script runs besides the programs the tests fake.
REAL_TOOLS = ("cat", "cp", "dirname", "env", "mkdir", "mktemp", "rm", "touch")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The scripts, and tests/agui with its package files (no node_modules yet)."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", root / "scripts")
    agui = root / "tests" / "agui"
    agui.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(REPO / "tests" / "agui" / name, agui / name)
    return root


@pytest.fixture
def fakebin(tmp_path: Path) -> Path:
    """A PATH of the few real tools the script uses, and a fake ``id`` saying root (no sudo);
    no ``node`` nor ``npm`` until a test adds them."""
    return fake_bin(tmp_path, REAL_TOOLS)


def _node(where: Path, version: str = "v18.19.0") -> None:
    """Fake ``node`` and ``npm`` in ``where``: npm logs its arguments and directory next to
    itself, and ``npm ci`` makes node_modules (or fails with ``$FAKE_NPM_EXIT``)."""
    program(where / "node", f'echo "{version}"')
    program(
        where / "npm",
        'echo "$PWD $*" >> "$(dirname "$0")/npm.log"\n'
        'echo "npm WARN deprecated something@1.0.0"\n'
        'if [ "${FAKE_NPM_EXIT:-0}" != 0 ]; then exit "$FAKE_NPM_EXIT"; fi\n'
        "mkdir -p node_modules/@ag-ui/client",
    )


def _apt_get(fakebin: Path) -> None:
    """A fake ``apt-get`` (logging its arguments) whose install provides ``node`` and ``npm``."""
    package = fakebin.parent / "package"
    _node(package)
    program(
        fakebin / "apt-get",
        f'echo "$*" >> "{fakebin}/apt.log"\n'
        f'if [ "$1" = install ]; then cp "{package}/node" "{package}/npm" "{fakebin}"; fi',
    )


def _run(checkout: Path, fakebin: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": str(fakebin), "HOME": str(checkout), "LC_ALL": "C", "TMPDIR": str(checkout)}
    return subprocess.run(
        [BASH, str(checkout / "scripts" / "node")],
        cwd=checkout,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _log(fakebin: Path, name: str) -> list[str]:
    log = fakebin / name
    return log.read_text().splitlines() if log.exists() else []


def _fresh(checkout: Path) -> None:
    """node_modules installed a minute ago, after the lock file was written."""
    agui = checkout / "tests" / "agui"
    (agui / "node_modules").mkdir()
    now = time.time()
    os.utime(agui / "package-lock.json", (now - 120, now - 120))
    os.utime(agui / "node_modules", (now - 60, now - 60))


def test_a_missing_node_is_installed_without_recommended_packages(
    checkout: Path, fakebin: Path
) -> None:
    _apt_get(fakebin)
    result = _run(checkout, fakebin)
    assert result.returncode == 0, result.stderr
    assert _log(fakebin, "apt.log") == [
        "update -qq",
        "install -y -qq --no-install-recommends nodejs npm",
    ]
    assert result.stdout.splitlines() == [
        "node: node or npm is missing; installing the nodejs and npm packages",
        "node: v18.19.0 ok",
        "node: installing the packages of tests/agui (npm ci)",
    ]
    agui = checkout / "tests" / "agui"
    assert _log(fakebin, "npm.log") == [f"{agui} ci --no-audit --no-fund --loglevel=error"]
    assert (agui / "node_modules").is_dir()
    assert not list(checkout.glob("sagents-*")), "the logs are removed"


def test_a_missing_npm_is_installed_too(checkout: Path, fakebin: Path) -> None:
    program(fakebin / "node", 'echo "v18.19.0"')  # Node without npm
    _apt_get(fakebin)
    result = _run(checkout, fakebin)
    assert result.returncode == 0, result.stderr
    assert _log(fakebin, "apt.log")[-1] == "install -y -qq --no-install-recommends nodejs npm"


def test_node_and_installed_packages_are_left_alone(checkout: Path, fakebin: Path) -> None:
    _node(fakebin, "v20.11.1")
    _apt_get(fakebin)  # there, but never called
    _fresh(checkout)
    result = _run(checkout, fakebin)
    assert (result.returncode, result.stdout, result.stderr) == (0, "node: v20.11.1 ok\n", "")
    assert _log(fakebin, "apt.log") == []
    assert _log(fakebin, "npm.log") == []


def test_packages_older_than_the_lock_file_are_installed_again(
    checkout: Path, fakebin: Path
) -> None:
    _node(fakebin)
    _fresh(checkout)
    agui = checkout / "tests" / "agui"
    now = time.time()
    os.utime(agui / "package-lock.json", (now - 30, now - 30))  # the lock changed since
    result = _run(checkout, fakebin)
    assert result.returncode == 0, result.stderr
    assert _log(fakebin, "npm.log") == [f"{agui} ci --no-audit --no-fund --loglevel=error"]
    assert "npm WARN" not in result.stdout + result.stderr, "npm's output stays out of the log"
    assert _run(checkout, fakebin).returncode == 0
    assert len(_log(fakebin, "npm.log")) == 1, "installed once: then up to date"


def test_a_failed_npm_ci_shows_npm_s_output(checkout: Path, fakebin: Path) -> None:
    _node(fakebin)
    result = _run(checkout, fakebin, FAKE_NPM_EXIT="1")
    assert result.returncode == 1
    assert result.stderr.startswith("node: npm ci in tests/agui failed; npm said:\n")
    assert "npm WARN deprecated something@1.0.0" in result.stderr
    assert not list(checkout.glob("sagents-*")), "the log is removed"


def test_a_node_older_than_18_is_refused(checkout: Path, fakebin: Path) -> None:
    _node(fakebin, "v12.22.12")  # Debian 11's
    result = _run(checkout, fakebin)
    assert result.returncode == 1
    assert "node: Node.js 18 or later is needed, found v12.22.12" in result.stderr
    assert _log(fakebin, "npm.log") == []
