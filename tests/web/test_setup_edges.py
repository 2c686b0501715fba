"""Start-up edges: the install hint of a missing provider, and the set-up scripts in ``scripts/``.

The scripts run for real, with ``bash``, in a copy made under ``tmp_path`` whose programs
(``.venv/bin/python``, ``apt-get``, ``pg_isready``...) are small shell scripts that log how
they were called: the tests check what the scripts decide (install or skip, which packages,
which lines they print), fast and without touching the machine's packages or services.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import sagents.web._demo_factory as demo_factory
from sagents._errors import ConfigurationError
from sagents.web import check_model
from sagents.web._demo_factory import _install_hint, _source_checkout
from tests.fake_commands import BASH, fake_bin, program

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
# What the scripts run besides the programs the tests fake.
REAL_TOOLS = (
    "awk", "cat", "dirname", "env", "grep", "ls", "mkdir", "mktemp", "rm", "sed", "seq", "sleep",
    "sort", "tail",
)  # fmt: skip


# -- the hint for a missing provider package ----------------------------------------------------


def test_an_installed_package_gets_the_published_command(tmp_path: Path) -> None:
    hint = _install_hint("openai", checkout=None, prefix=tmp_path, python="/usr/bin/python3")
    assert hint == "pip install 'sagents[openai]'"


def test_a_checkout_gets_its_own_command_and_the_published_one(tmp_path: Path) -> None:
    hint = _install_hint(
        "openai", checkout=tmp_path, prefix=tmp_path / ".venv", python="/usr/bin/python3"
    )
    assert hint.startswith(".venv/bin/pip install -e '.[openai]' in the checkout ")
    assert str(tmp_path) in hint
    assert "pip install 'sagents[openai]'" in hint


def test_a_checkout_run_from_another_environment_names_that_environment_s_pip(
    tmp_path: Path,
) -> None:
    hint = _install_hint(
        "anthropic", checkout=tmp_path, prefix=tmp_path / "elsewhere", python="/opt/py 3/python"
    )
    assert hint.startswith("'/opt/py 3/python' -m pip install -e '.[anthropic]' in the checkout ")


def test_the_checkout_is_found_from_the_package_s_files() -> None:
    assert _source_checkout(Path(demo_factory.__file__)) == REPO


def _module_file(root: Path) -> Path:
    module = root / "sagents" / "web" / "_demo_factory.py"
    module.parent.mkdir(parents=True)
    module.touch()
    return module


@pytest.mark.parametrize(
    ("pyproject", "is_checkout"),
    [
        ('[project]\nname = "sagents"\n', True),
        ('[project]\nname = "something-else"\n', False),
        ("[project\nname = ", False),  # not TOML
        (None, False),  # site-packages: no pyproject.toml above the package
    ],
)
def test_only_a_sagents_source_tree_is_a_checkout(
    pyproject: str | None, is_checkout: bool, tmp_path: Path
) -> None:
    module = _module_file(tmp_path / "src")
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    assert _source_checkout(module) == (tmp_path if is_checkout else None)


def test_a_package_outside_src_is_not_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "sagents"\n')
    assert _source_checkout(_module_file(tmp_path / "site-packages")) is None


def test_a_missing_provider_package_names_the_checkout_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "langchain_openai" else real_find_spec(name, package)

    monkeypatch.setattr(demo_factory.importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigurationError) as raised:
        check_model("openai:gpt-4o-mini", {"OPENAI_API_KEY": "sk-test"})
    message = str(raised.value)
    assert message.startswith("the 'openai' provider needs langchain-openai: ")
    assert f"install -e '.[openai]' in the checkout {REPO}" in message
    assert "pip install 'sagents[openai]'" in message


# -- the scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.iterdir()))
def test_every_script_parses(script: str) -> None:
    result = subprocess.run(
        [BASH, "-n", str(SCRIPTS / script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a script in ``cwd`` with a small, clean environment plus ``env``."""
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "LC_ALL": "C"}
    return subprocess.run(
        args, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the scripts beside a minimal pyproject.toml and a fake .venv.

    ``.venv/bin/python`` logs its arguments to ``pip.log`` (and fails with ``$FAKE_PIP_EXIT``);
    ``.venv/bin/sagents`` logs its arguments to ``sagents.log``.
    """
    root = tmp_path / "checkout"
    shutil.copytree(SCRIPTS, root / "scripts")
    (root / "pyproject.toml").write_text('[project]\nname = "sagents"\ndependencies = []\n')
    (root / "src" / "sagents").mkdir(parents=True)
    (root / "src" / "sagents" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("version = 3.11.7\n")
    program(
        root / ".venv" / "bin" / "python",
        f'echo "$*" >> "{root}/pip.log"\nexit "${{FAKE_PIP_EXIT:-0}}"',
    )
    program(root / ".venv" / "bin" / "sagents", f'echo "$*" >> "{root}/sagents.log"')
    return root


def _installs(root: Path) -> list[str]:
    """The ``pip install -e`` calls so far, as their last argument (``.[extras]``)."""
    log = root / "pip.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split()[-1] for line in lines if " -e " in line]


def _venv(root: Path, extras: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run([BASH, "-c", 'EXTRAS="$0"; source scripts/_venv.sh', extras], root, **env)


def test_pip_runs_only_when_the_install_would_change(checkout: Path) -> None:
    assert _venv(checkout, "web").returncode == 0
    assert _installs(checkout) == [".[web]"]
    assert _venv(checkout, "web").returncode == 0
    assert _installs(checkout) == [".[web]"], "nothing changed: no pip"

    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[]", '["orjson"]'))
    _venv(checkout, "web")
    init = checkout / "src" / "sagents" / "__init__.py"
    init.write_text('__version__ = "0.2.0"\n')
    _venv(checkout, "web")
    (checkout / "src" / "sagents" / "_new_module.py").write_text("")  # editable: no reinstall
    _venv(checkout, "web")
    assert _installs(checkout) == [".[web]"] * 3

    _venv(checkout, "dev")
    _venv(checkout, "web")  # each set of extras keeps its own stamp
    _venv(checkout, "dev", SAGENTS_REINSTALL="1")
    assert _installs(checkout) == [".[web]"] * 3 + [".[dev]"] * 2


def test_a_failed_install_is_tried_again(checkout: Path) -> None:
    failed = _venv(checkout, "web", FAKE_PIP_EXIT="1")
    assert failed.returncode != 0
    assert not list((checkout / ".venv").glob(".sagents-installed-*"))
    assert _venv(checkout, "web").returncode == 0
    assert _installs(checkout) == [".[web]"]


@pytest.mark.parametrize(
    ("args", "extras"),
    [
        ([], ".[web]"),
        (["--model", "openai:gpt-4o-mini", "--port", "0"], ".[web,openai]"),
        (["--port", "0", "--model=anthropic:claude-sonnet-4-5"], ".[web,anthropic]"),
        (["--model", "ollama:llama3"], ".[web]"),  # no extra: sagents demo names the package
    ],
)
def test_scripts_demo_installs_the_extra_of_its_model(
    args: list[str], extras: str, checkout: Path
) -> None:
    result = _run([BASH, "scripts/demo", *args], checkout)
    assert result.returncode == 0, result.stderr
    assert _installs(checkout) == [extras]
    assert (checkout / "sagents.log").read_text() == " ".join(["demo", *args]) + "\n"


@pytest.fixture
def fakebin(tmp_path: Path) -> Path:
    """A PATH of the few real tools the scripts use; tests add fakes of the rest."""
    return fake_bin(tmp_path, REAL_TOOLS)


def _apt_get(fakebin: Path, *, exit_code: int) -> None:
    program(
        fakebin / "apt-get",
        f'echo "$*" >> "{fakebin}/apt.log"\n'
        'echo "Selecting previously unselected package libfoo."\n'
        f'[ "$1" = update ] || exit {exit_code}',
    )


def test_apt_install_is_quiet_and_skips_recommended_packages(tmp_path: Path, fakebin: Path) -> None:
    _apt_get(fakebin, exit_code=0)
    script = f"source {SCRIPTS}/_apt.sh; apt_install browser chromium fonts-dejavu-core"
    result = _run([BASH, "-c", script], tmp_path, PATH=str(fakebin), TMPDIR=str(tmp_path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    update, install = (fakebin / "apt.log").read_text().splitlines()
    assert update == "update -qq"
    assert install == "install -y -qq --no-install-recommends chromium fonts-dejavu-core"
    assert not list(tmp_path.glob("sagents-apt.*")), "the log is removed"


def test_a_failed_apt_install_shows_apt_s_output(tmp_path: Path, fakebin: Path) -> None:
    _apt_get(fakebin, exit_code=100)
    script = f"source {SCRIPTS}/_apt.sh; apt_install browser chromium"
    result = _run([BASH, "-c", script], tmp_path, PATH=str(fakebin), TMPDIR=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("browser: apt-get install chromium failed; apt said:\n")
    assert "Selecting previously unselected package libfoo." in result.stderr


def _services(tmp_path: Path, fakebin: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [BASH, str(SCRIPTS / "services")], tmp_path, PATH=str(fakebin), TMPDIR=str(tmp_path), **env
    )


def test_services_that_run_get_one_line_each(tmp_path: Path, fakebin: Path) -> None:
    program(fakebin / "pg_isready", "exit 0")
    program(fakebin / "psql", "echo 1")  # the database test exists
    program(fakebin / "redis-cli", "echo PONG")
    result = _services(tmp_path, fakebin, CI="true")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "services: PostgreSQL ok\nservices: Redis ok\n"


def test_a_postgres_that_refuses_the_tests_is_a_ci_failure(tmp_path: Path, fakebin: Path) -> None:
    program(fakebin / "pg_isready", "exit 0")
    program(fakebin / "psql", "exit 2")
    program(fakebin / "createdb", "echo 'fe_sendauth: no password supplied' >&2; exit 1")
    result = _services(tmp_path, fakebin, CI="true")
    assert result.returncode == 1
    assert "cannot create the database test (set SAGENTS_TEST_POSTGRES_URL)" in result.stderr
    assert _services(tmp_path, fakebin).returncode == 0, "outside CI the tests skip instead"


def test_a_missing_postgres_is_installed_without_recommended_packages(
    tmp_path: Path, fakebin: Path
) -> None:
    program(fakebin / "pg_isready", "exit 2")  # nothing answers, and no pg_lsclusters
    _apt_get(fakebin, exit_code=100)  # the network is down, say
    result = _services(tmp_path, fakebin, CI="true")
    assert result.returncode == 1
    assert result.stdout.startswith("services: PostgreSQL is not installed; installing")
    install = (fakebin / "apt.log").read_text().splitlines()[-1]
    assert install == "install -y -qq --no-install-recommends postgresql"
    assert "PostgreSQL on 127.0.0.1:5432 cannot be reached" in result.stderr


def test_a_postgres_url_of_its_own_is_left_alone(tmp_path: Path, fakebin: Path) -> None:
    result = _services(
        tmp_path, fakebin, CI="true", SAGENTS_TEST_POSTGRES_URL="postgresql+asyncpg://u@db/t"
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "services: PostgreSQL from SAGENTS_TEST_POSTGRES_URL (left alone)\n"


def _on_a_fake_root(fakebin: Path, root: Path, tool: str) -> None:
    """``tool`` (a real one of ``fakebin``) with every path under ``/etc/postgresql`` or
    ``/usr/lib/postgresql`` moved under ``root``: the script's files of a PostgreSQL install,
    read and edited where the test can see them, never on the machine."""
    real = (fakebin / tool).resolve()
    program(
        fakebin / tool,
        "args=()\n"
        'for a in "$@"; do case "$a" in\n'
        f'  /etc/postgresql*|/usr/lib/postgresql*) args+=("{root}$a") ;;\n'
        '  *) args+=("$a") ;;\n'
        "esac; done\n"
        f'exec {real} "${{args[@]}}"',
    )


def test_a_missing_postgres_is_installed_given_a_cluster_trust_and_the_database(
    tmp_path: Path, fakebin: Path
) -> None:
    """The whole install path on a machine without PostgreSQL: apt installs it (fake), a
    cluster is created for the newest version, trust for the loopback goes first in its
    pg_hba.conf, the cluster is started, and the database test is created."""
    root = tmp_path / "root"  # the machine's /etc and /usr/lib, as far as PostgreSQL goes
    log = tmp_path / "calls.log"  # what the PostgreSQL programs were asked, in order
    for tool in ("ls", "grep", "sed"):
        _on_a_fake_root(fakebin, root, tool)
    for tool in ("touch", "chmod"):  # for the fakes only: the script does not use them
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed")
        (fakebin / tool).symlink_to(real)
    hba = root / "etc/postgresql/17/main/pg_hba.conf"
    default_hba = "local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    # What Debian's postgresql package brings: its programs, and its servers' binaries.
    programs = {
        "pg_lsclusters": f'[ -e "{root}/cluster" ] && echo "17 main 5432 down postgres"; true',
        "pg_createcluster": (
            f'echo "pg_createcluster $*" >> "{log}"\ntouch "{root}/cluster"\n'
            f'mkdir -p "{hba.parent}"\ncat > "{hba}" <<\'HBA\'\n{default_hba}HBA'
        ),
        "pg_ctlcluster": f'echo "pg_ctlcluster $*" >> "{log}"\ntouch "{root}/started"',
    }
    install = "".join(
        f"cat > {fakebin}/{name} <<'PROGRAM'\n#!{BASH}\n{body}\nPROGRAM\n"
        f"chmod +x {fakebin}/{name}\n"
        for name, body in programs.items()
    )
    # Version folders as a machine may have them: 9.6 comes last as text, 17 by version.
    versions = " ".join(f"{root}/usr/lib/postgresql/{v}/bin" for v in ("9.6", "15", "17"))
    program(
        fakebin / "apt-get",
        f'echo "$*" >> "{fakebin}/apt.log"\n[ "$1" = update ] && exit 0\n'
        f"{install}mkdir -p {versions}\n"
        + "".join(f"touch {root}/usr/lib/postgresql/{v}/bin/postgres\n" for v in ("15", "17")),
    )
    program(fakebin / "pg_isready", f'[ -e "{root}/started" ]')
    program(fakebin / "psql", f'[ -e "{root}/database" ] && echo 1; true')
    program(fakebin / "createdb", f'echo "createdb $*" >> "{log}"\ntouch "{root}/database"')

    result = _services(tmp_path, fakebin, CI="true")

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "services: PostgreSQL is not installed; installing Debian's postgresql",
        'services: creating the PostgreSQL 17 cluster "main" on port 5432',
        "services: PostgreSQL is not answering; starting cluster 17 main",
        "services: PostgreSQL ok",
    ]
    assert (fakebin / "apt.log").read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends postgresql",
    ]
    assert log.read_text().splitlines() == [
        "pg_createcluster --port 5432 17 main",
        "pg_ctlcluster 17 main start",
        "createdb -w -h 127.0.0.1 -U postgres test",
    ]
    # Trust first (the first matching line decides), the package's lines kept after it.
    assert hba.read_text() == (
        "# sagents scripts/services: the tests connect as postgres, no password\n"
        "host all all 127.0.0.1/32 trust\n"
        "host all all ::1/128 trust\n" + default_hba
    )
    # Run again: everything is there, and nothing is done twice.
    again = _services(tmp_path, fakebin, CI="true")
    assert (again.returncode, again.stdout, again.stderr) == (0, "services: PostgreSQL ok\n", "")
    assert len(log.read_text().splitlines()) == 3
