"""``sagents setup`` (S20–S22): what it writes, what it refuses, and that the result works.

The key check runs the generated test in a subprocess, against SQLite, with plain pytest
(plugin autoload off, warnings as errors), the way a user's fresh project would. The generated
code is also held to ruff (our rule set, at the default line length of 88 most projects keep)
and ``mypy --strict``, for the default options and for a variant with every option changed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from sagents._generator import TemplateError, render
from sagents.cli import main
from sagents.persistence.sql import sqlite_url, upgrade

ROOT = Path(__file__).resolve().parent.parent

PACKAGE_FILES = [
    "__init__.py",
    "coordinator.py",
    "factory.py",
    "factory_config.py",
    "router.py",
    "persistence.py",
    "models.py",
    "migrations/__init__.py",
    "migrations/__main__.py",
    "migrations/env.py",
    "migrations/script.py.mako",
    "migrations/versions/v0001_create_sagents_tables.py",
]
DEFAULT_FILES = [
    "myapp/__init__.py",
    *(f"myapp/conversations/{name}" for name in PACKAGE_FILES),
    "tests/test_conversations_session.py",
]
VARIANT_ARGS = [
    "acme.agents.chat",
    "--owner-type",
    "none",
    "--table-prefix",
    "chat_",
    "--factory",
    "ChatFactory",
    "--coordinator",
    "ChatCoordinator",
]

# Our lint rules, at the line length a user's project most likely has.
RUFF_TOML = f"""\
extend = "{ROOT / "pyproject.toml"}"
line-length = 88
src = ["."]
"""


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def generate(root: Path, *args: str) -> tuple[int, str, str]:
    """Run ``sagents setup ... --dir root``; (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["setup", *args, "--dir", str(root)])
    return status, out.getvalue(), err.getvalue()


def run(args: list[str], cwd: Path, *, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a command of this interpreter's environment in ``cwd``, with ``cwd`` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PYTHONPATH"] = str(cwd)
    # Plain pytest, as in a fresh project: none of this environment's plugins.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def function_args(path: Path, name: str) -> list[str]:
    """The parameter names of the function or method ``name`` defined in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            a = node.args
            return [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    raise AssertionError(f"no {name} in {path}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding the default setup and a variant with every option changed."""
    root = tmp_path_factory.mktemp("project")
    assert generate(root, "myapp.conversations")[0] == 0
    assert generate(root, *VARIANT_ARGS)[0] == 0
    (root / "ruff.toml").write_text(RUFF_TOML)
    return root


# -- what is written --------------------------------------------------------------------------


def test_setup_writes_the_package_and_a_test_and_lists_them(tmp_path: Path) -> None:
    status, out, err = generate(tmp_path, "myapp.conversations")
    assert (status, err) == (0, "")
    assert sorted(files_under(tmp_path)) == sorted(DEFAULT_FILES)
    listed = [line.split()[-1] for line in out.splitlines() if line.startswith("  created")]
    assert listed == DEFAULT_FILES
    assert f"wrote {len(DEFAULT_FILES)} files" in out
    assert "\n  python -m pytest tests/test_conversations_session.py\n" in out
    for name, content in files_under(tmp_path).items():
        if name.endswith(".py"):
            ast.parse(content, filename=name)  # plain Python, every file
            assert b"{{" not in content
            assert b"#{" not in content


def test_the_generated_code_is_wired_to_the_options(tmp_path: Path) -> None:
    assert generate(tmp_path, "myapp.conversations")[0] == 0
    package = tmp_path / "myapp" / "conversations"
    coordinator = (package / "coordinator.py").read_text()
    assert "class Coordinator:" in coordinator
    assert function_args(package / "coordinator.py", "start_conversation_session") == [
        "self",
        "conversation_id",
        "user_id",
        "request_opts",
    ]
    assert function_args(package / "coordinator.py", "resume") == [
        "self",
        "conversation_id",
        "decisions",
        "user_id",
        "request_opts",
    ]
    assert function_args(package / "persistence.py", "owner_scope") == ["user_id"]
    assert 'TABLE_PREFIX = "sagents_"' in (package / "persistence.py").read_text()
    assert "class Factory:" in (package / "factory.py").read_text()
    assert "demo_model()" in (package / "factory_config.py").read_text()
    assert "init_chat_model" in (package / "factory_config.py").read_text()
    migration = (package / "migrations/versions/v0001_create_sagents_tables.py").read_text()
    assert 'PREFIX = "sagents_"' in migration
    assert "down_revision: str | None = None" in migration


def test_a_variant_with_every_option(tmp_path: Path) -> None:
    status, out, _ = generate(tmp_path, *VARIANT_ARGS)
    assert status == 0
    package = tmp_path / "acme" / "agents" / "chat"
    for created in ["acme/__init__.py", "acme/agents/__init__.py", "tests/test_chat_session.py"]:
        assert f"created   {created}" in out
    assert "class ChatCoordinator:" in (package / "coordinator.py").read_text()
    assert "class ChatFactory:" in (package / "factory.py").read_text()
    assert "ChatFactory()" in (package / "router.py").read_text()
    # Single tenant: no owner parameter anywhere, and the scope is None.
    assert function_args(package / "coordinator.py", "ensure_agent_session_running") == [
        "self",
        "conversation_id",
        "request_opts",
    ]
    assert function_args(package / "persistence.py", "owner_scope") == []
    assert "return None" in (package / "persistence.py").read_text()
    assert 'TABLE_PREFIX = "chat_"' in (package / "persistence.py").read_text()
    assert (package / "migrations/versions/v0001_create_chat_tables.py").is_file()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--owner-type", "team"], "team_id"),
        (["--owner-type", "org", "--owner-field", "organization_id"], "organization_id"),
        (["--owner-field", "account_uuid"], "account_uuid"),
    ],
)
def test_the_owner_field(tmp_path: Path, args: list[str], field: str) -> None:
    assert generate(tmp_path, "myapp.conversations", *args)[0] == 0
    coordinator = tmp_path / "myapp" / "conversations" / "coordinator.py"
    assert field in function_args(coordinator, "stop")
    assert function_args(coordinator.with_name("persistence.py"), "owner_scope") == [field]


def test_an_empty_table_prefix(tmp_path: Path) -> None:
    assert generate(tmp_path, "myapp.conversations", "--table-prefix", "")[0] == 0
    package = tmp_path / "myapp" / "conversations"
    assert 'TABLE_PREFIX = ""' in (package / "persistence.py").read_text()
    assert (package / "migrations/versions/v0001_create_tables.py").is_file()


def test_a_src_layout_gets_the_package_under_src(tmp_path: Path) -> None:
    (tmp_path / "src" / "myapp").mkdir(parents=True)
    status, out, _ = generate(tmp_path, "myapp.conversations")
    assert status == 0
    assert (tmp_path / "src/myapp/conversations/coordinator.py").is_file()
    assert (tmp_path / "tests/test_conversations_session.py").is_file()
    assert "created   src/myapp/__init__.py" in out


# -- refusing to overwrite (S21) --------------------------------------------------------------


def test_existing_files_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    router = tmp_path / "myapp" / "conversations" / "router.py"
    test = tmp_path / "tests" / "test_conversations_session.py"
    for path in (router, test):
        path.parent.mkdir(parents=True)
        path.write_text("# mine\n")
    before = files_under(tmp_path)
    status, out, err = generate(tmp_path, "myapp.conversations")
    assert status == 1
    assert out == ""
    assert "nothing was written" in err
    assert "--force" in err
    assert "  myapp/conversations/router.py\n" in err
    assert "  tests/test_conversations_session.py\n" in err
    assert "coordinator.py" not in err
    assert files_under(tmp_path) == before


def test_force_overwrites_generated_files_but_never_a_parent_package(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text('"""My app."""\n')
    status, out, _ = generate(tmp_path, "myapp.conversations")
    assert status == 0
    assert "myapp/__init__.py" not in out  # it exists: it is the user's
    generated = files_under(tmp_path)
    coordinator = tmp_path / "myapp" / "conversations" / "coordinator.py"
    coordinator.write_text("# edited\n")

    assert generate(tmp_path, "myapp.conversations")[0] == 1
    assert coordinator.read_text() == "# edited\n"

    status, out, _ = generate(tmp_path, "myapp.conversations", "--force")
    assert status == 0
    assert "overwrote myapp/conversations/coordinator.py" in out
    assert "myapp/__init__.py" not in out
    assert files_under(tmp_path) == generated  # deterministic: the same files again
    assert (tmp_path / "myapp" / "__init__.py").read_text() == '"""My app."""\n'


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["myapp"], "is not PACKAGE.MODULE"),
        (["my-app.conversations"], "'my-app' is not an identifier"),
        (["myapp.class"], "'class' is not an identifier"),
        (["myapp..x"], "'' is not an identifier"),
        (["sagents.conversations"], "would shadow the 'sagents' module"),
        (["json.conversations"], "the standard library"),
        (["myapp.c", "--owner-type", "person"], "is not one of user, account, team, org, none"),
        (["myapp.c", "--owner-type", "none", "--owner-field", "x_id"], "--owner-field makes no"),
        (["myapp.c", "--owner-field", "User-Id"], "must be a lower-case Python identifier"),
        (["myapp.c", "--owner-field", "conversation_id"], "clashes with a name"),
        (["myapp.c", "--table-prefix", "Chat_"], "--table-prefix 'Chat_' is invalid"),
        (["myapp.c", "--table-prefix", "chat"], "ending with '_'"),
        (["myapp.c", "--table-prefix", "1chat_"], "starting with a letter"),
        (["myapp.c", "--table-prefix", "x" * 30 + "_"], "up to 30"),
        (["myapp.c", "--factory", "2Factory"], "is not a Python class name"),
        (["myapp.c", "--coordinator", "Runtime"], "clashes with a name"),
        (["myapp.c", "--factory", "Thing", "--coordinator", "Thing"], "different names"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    status, out, err = generate(tmp_path, *args)
    assert status == 2
    assert out == ""
    assert err.startswith("sagents setup: error: ")
    assert message in err
    assert "Traceback" not in err
    assert files_under(tmp_path) == {}


def test_a_missing_project_root(tmp_path: Path) -> None:
    status, _, err = generate(tmp_path / "nowhere", "myapp.conversations")
    assert status == 2
    assert "is not an existing directory" in err


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        ("myapp/conversations.py", "a package myapp/conversations/ would hide it"),
        ("myapp", "myapp is a file"),
        ("tests", "tests is a file"),
    ],
)
def test_paths_taken_by_something_else(tmp_path: Path, existing: str, message: str) -> None:
    (tmp_path / existing).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / existing).write_text("")
    before = files_under(tmp_path)
    status, _, err = generate(tmp_path, "myapp.conversations")
    assert status == 2
    assert message in err
    assert files_under(tmp_path) == before


def test_the_help_shows_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["setup", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ["--owner-type", "--owner-field", "--table-prefix", "--factory", "--force"]:
        assert option in out
    assert "PACKAGE.MODULE" in out


def test_db_upgrade_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--url", sqlite_url(tmp_path / "app.db")]) == 0
    assert "upgraded" in capsys.readouterr().out


# -- the generated code works -----------------------------------------------------------------


def test_the_generated_test_passes_in_a_subprocess(tmp_path: Path) -> None:
    """``sagents setup myapp.conversations``, then the generated test passes against SQLite."""
    assert generate(tmp_path, "myapp.conversations")[0] == 0
    test = "tests/test_conversations_session.py"
    result = run(["-m", "pytest", test, "-q", "-p", "no:cacheprovider", "-W", "error"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def next_commands(out: str) -> list[str]:
    """The commands ``sagents setup`` prints under "next:" (its last line is prose)."""
    lines = out.split("next:\n", 1)[1].splitlines()
    assert lines[-1].startswith("  then use "), out
    return [line.strip() for line in lines[:-1]]


@pytest.mark.parametrize("layout", ["flat", "src"])
def test_the_printed_next_commands_work_as_printed(tmp_path: Path, layout: str) -> None:
    """Each command printed after "next:" passes when pasted into a shell at the project's
    root, in a virtual environment where the project is not installed (no PYTHONPATH)."""
    if layout == "src":
        (tmp_path / "src" / "myapp").mkdir(parents=True)
    status, out, _ = generate(tmp_path, "myapp.conversations")
    assert status == 0
    commands = next_commands(out)
    assert [c.split(" -m ")[1].split()[0] for c in commands] == [
        "pytest",
        "myapp.conversations.migrations",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # plain pytest, as in a fresh project
    for command in commands:
        result = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
    assert (tmp_path / "data" / "conversations.db").is_file()


@pytest.mark.slow
def test_every_variant_passes_its_generated_test(project: Path) -> None:
    result = run(["-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-W", "error"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_generated_code_passes_ruff(project: Path) -> None:
    check = run(["-m", "ruff", "check", "--no-cache", "."], project)
    assert check.returncode == 0, check.stdout + check.stderr
    formatted = run(["-m", "ruff", "format", "--no-cache", "--check", "--diff", "."], project)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_generated_code_passes_mypy_strict(project: Path) -> None:
    # A cache of its own, kept between runs: a cold check of langchain and SQLAlchemy takes
    # a while, and this cache never mixes with the project's (other options, other plugins).
    cache = Path(tempfile.gettempdir()) / "sagents-test-generator-mypy-cache"
    result = run(
        ["-m", "mypy", "--strict", "--cache-dir", str(cache), "myapp", "acme", "tests"],
        project,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_generated_migration_makes_the_schema_of_sagents(tmp_path: Path) -> None:
    """The frozen migration creates exactly what ``sagents db upgrade`` creates."""
    assert generate(tmp_path, "myapp.conversations")[0] == 0
    generated, shipped = tmp_path / "generated.db", tmp_path / "shipped.db"
    result = run(["-m", "myapp.conversations.migrations", sqlite_url(generated)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recorded in sagents_alembic_version" in result.stdout
    await upgrade(sqlite_url(shipped))

    def schema(path: Path) -> set[tuple[str, str, str]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic%'"
            ).fetchall()
        return {(kind, name, sql or "") for kind, name, sql in rows}

    assert schema(generated) == schema(shipped)
    assert len(schema(generated)) >= 4


# -- packaging and templates ------------------------------------------------------------------


def test_the_templates_ship_in_the_wheel(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    result = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    templates = ROOT / "src" / "sagents" / "_generator" / "templates"
    for template in templates.rglob("*"):
        if template.is_file():
            assert f"sagents/{template.relative_to(ROOT / 'src' / 'sagents').as_posix()}" in names


@pytest.fixture
def values() -> dict[str, str | bool]:
    return {"name": "x", "yes": True, "no": False}


def test_render_substitutes_and_keeps_or_drops_blocks(values: dict[str, str | bool]) -> None:
    template = (
        "a {{name}}\n#{if yes}\nyes\n  #{if no}\n  no\n  #{else}\n  not no\n  #{end}\n"
        "#{else}\nnot yes\n#{end}\n#{if not no}\nnot no again\n#{end}\n"
    )
    assert render(template, values) == "a x\nyes\n  not no\nnot no again\n"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{missing}}\n", "needs a string value named 'missing'"),
        ("#{if missing}\n#{end}\n", "needs a boolean value named 'missing'"),
        ("#{if yes}\n", "not closed"),
        ("#{end}\n", "unexpected"),
        ("{{ name }}\n", "was not replaced"),
    ],
)
def test_render_reports_template_bugs(
    values: dict[str, str | bool], template: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template, values)
