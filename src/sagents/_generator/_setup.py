"""Plan the files of ``sagents setup``, then write them, all or nothing.

Two steps, so that a refusal leaves the project untouched: :func:`plan_setup` renders
every file in memory and notes which already exist; :func:`write_setup` refuses the whole plan
if any of them exists (unless ``force``), and only then creates folders and writes files.

Layout of what is written, for ``sagents setup myapp.conversations``::

    myapp/__init__.py                      only if missing; never overwritten
    myapp/conversations/__init__.py        the package map; re-exports the coordinator
    myapp/conversations/coordinator.py     the Coordinator over sagents.Session
    myapp/conversations/factory.py         the Factory: builds a conversation's Agent
    myapp/conversations/factory_config.py  its settings: model, prompt, approvals
    myapp/conversations/router.py          the FactoryRouter (one factory by default)
    myapp/conversations/persistence.py     the store, the table prefix, the owner's scope
    myapp/conversations/models.py          the SQLAlchemy tables, for queries and joins
    myapp/conversations/migrations/...     an Alembic environment and its first revision
    tests/test_conversations_session.py    an end-to-end test on a temporary SQLite file

A project with a ``src/`` layout (``src/myapp`` exists, ``myapp`` does not) gets the package
under ``src/``. Output is deterministic (the revision id is derived from the target and the
prefix), so running it again with ``--force`` rewrites the same files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from sagents._generator._options import SetupError, SetupOptions
from sagents._generator._render import render

__all__ = ["FilesExist", "PlannedFile", "SetupPlan", "Written", "plan_setup", "write_setup"]

# (template under templates/, output path inside the generated package)
_PACKAGE_TEMPLATES = (
    ("package_init.py.tmpl", "__init__.py"),
    ("coordinator.py.tmpl", "coordinator.py"),
    ("factory.py.tmpl", "factory.py"),
    ("factory_config.py.tmpl", "factory_config.py"),
    ("router.py.tmpl", "router.py"),
    ("persistence.py.tmpl", "persistence.py"),
    ("models.py.tmpl", "models.py"),
    ("migrations/init.py.tmpl", "migrations/__init__.py"),
    ("migrations/main.py.tmpl", "migrations/__main__.py"),
    ("migrations/env.py.tmpl", "migrations/env.py"),
    ("migrations/script.py.mako", "migrations/script.py.mako"),  # copied as is
)
_MIGRATION_TEMPLATE = "migrations/versions/initial.py.tmpl"
_TEST_TEMPLATE = "test_session.py.tmpl"

_INTERMEDIATE_INIT = '"""The {name} package."""\n'


class FilesExist(Exception):
    """Files the plan would write exist, and ``--force`` was not given.

    Attributes:
        paths: the existing files, relative to the project root.
    """

    def __init__(self, paths: tuple[PurePosixPath, ...]) -> None:
        self.paths = paths
        super().__init__(
            f"{len(paths)} file(s) exist; use --force to overwrite them: "
            + ", ".join(str(p) for p in paths)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedFile:
    """One file of the plan.

    Attributes:
        path: relative to the project root.
        content: what to write.
        exists: the file exists now.
        overwritable: ``--force`` may replace it (False for a parent package's ``__init__.py``,
            which is written only when missing).
    """

    path: PurePosixPath
    content: str
    exists: bool
    overwritable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupPlan:
    """Every file ``sagents setup`` would write, rendered."""

    root: Path
    options: SetupOptions
    files: tuple[PlannedFile, ...]

    @property
    def conflicts(self) -> tuple[PurePosixPath, ...]:
        """Generated files that exist (they need ``--force``)."""
        return tuple(f.path for f in self.files if f.exists and f.overwritable)

    @property
    def package_path(self) -> PurePosixPath:
        """The generated package's folder, relative to the root."""
        return next(f.path.parent for f in self.files if f.path.name == "coordinator.py")

    @property
    def test_path(self) -> PurePosixPath:
        """The generated test, relative to the root."""
        return next(f.path for f in self.files if f.path.parts[0] == "tests")


@dataclass(frozen=True, slots=True)
class Written:
    """A file :func:`write_setup` wrote: ``created`` or ``overwrote``."""

    path: PurePosixPath
    action: str


def _template(name: str) -> str:
    return (resources.files("sagents._generator") / "templates" / name).read_text("utf-8")


def _values(options: SetupOptions, package_path: PurePosixPath) -> dict[str, str | bool]:
    from sagents import __version__

    revision = hashlib.sha256(f"{options.target}:{options.table_prefix}".encode()).hexdigest()
    values: dict[str, str | bool] = {
        "dotted": options.target,
        "module": options.module,
        "package_path": str(package_path),
        "prefix": options.table_prefix,
        "factory": options.factory,
        "coordinator": options.coordinator,
        "revision": revision[:12],
        "version": __version__,
        "owner": options.has_owner,
        "for_owner": f" for this {options.owner_type}" if options.has_owner else "",
    }
    # Only given when there is an owner: a template using them outside #{if owner} fails.
    if options.has_owner:
        field = options.owner_field
        if field is None:  # pragma: no cover - SetupOptions fills it in
            raise SetupError("internal error: no owner field")
        values["owner_type"] = options.owner_type
        values["owner_field"] = field
    return values


def _source_base(root: Path, top: str) -> PurePosixPath:
    """Where packages go: ``src/`` in a src-layout project, else the root."""
    if (root / "src" / top).is_dir() and not (root / top).exists():
        return PurePosixPath("src")
    return PurePosixPath()


def plan_setup(options: SetupOptions) -> SetupPlan:
    """Render every file of the setup, and note which exist.

    Raises:
        SetupError: a path the plan needs is taken by something else (a file where a folder
            must go, a module ``MODULE.py`` next to the package, a folder where a file must go).
    """
    root = options.root
    base = _source_base(root, options.parts[0])
    package_path = base.joinpath(*options.parts)
    values = _values(options, package_path)
    files: list[PlannedFile] = []

    # Parent packages need an __init__.py; a missing one is created, an existing one is theirs.
    for depth in range(1, len(options.parts)):
        init = base.joinpath(*options.parts[:depth], "__init__.py")
        files.append(
            PlannedFile(
                path=init,
                content=_INTERMEDIATE_INIT.format(name=".".join(options.parts[:depth])),
                exists=(root / init).exists(),
                overwritable=False,
            )
        )

    rendered: list[tuple[PurePosixPath, str]] = []
    for template, output in _PACKAGE_TEMPLATES:
        text = _template(template)
        if template.endswith(".tmpl"):
            text = render(text, values, name=template)
        rendered.append((package_path / output, text))
    migration = f"migrations/versions/v0001_create_{options.table_prefix}tables.py"
    rendered.append(
        (
            package_path / migration,
            render(_template(_MIGRATION_TEMPLATE), values, name=_MIGRATION_TEMPLATE),
        )
    )
    test = PurePosixPath("tests", f"test_{options.module}_session.py")
    rendered.append((test, render(_template(_TEST_TEMPLATE), values, name=_TEST_TEMPLATE)))
    for path, text in rendered:
        target = root / path
        if target.is_dir():
            raise SetupError(f"{path} is a folder; move it away to generate that file")
        files.append(PlannedFile(path=path, content=text, exists=target.exists()))

    _check_paths(root, package_path, [f.path for f in files])
    return SetupPlan(root=root, options=options, files=tuple(files))


def _check_paths(root: Path, package_path: PurePosixPath, paths: list[PurePosixPath]) -> None:
    module_file = root / package_path.with_suffix(".py")
    if module_file.exists():
        raise SetupError(
            f"{package_path.with_suffix('.py')} exists: a package {package_path}/ would hide it; "
            "choose another MODULE name or rename that file"
        )
    for path in paths:
        for parent in path.parents:
            folder = root / parent
            if parent != PurePosixPath() and folder.exists() and not folder.is_dir():
                raise SetupError(
                    f"{parent} is a file, but {path} must go inside it; "
                    "choose another PACKAGE.MODULE or move that file"
                )


def write_setup(plan: SetupPlan, *, force: bool = False) -> list[Written]:
    """Write the plan's files, or none of them.

    Returns:
        What was written, in plan order (parent ``__init__.py`` files that exist are skipped).

    Raises:
        FilesExist: generated files exist and ``force`` is False; nothing was written.
        OSError: the file system failed part-way (files written before it stay).
    """
    if plan.conflicts and not force:
        raise FilesExist(plan.conflicts)
    written: list[Written] = []
    for planned in plan.files:
        if planned.exists and not planned.overwritable:
            continue
        target = plan.root / planned.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="\n") as out:
            out.write(planned.content)
        written.append(Written(planned.path, "overwrote" if planned.exists else "created"))
    return written
