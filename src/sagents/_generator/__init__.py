"""The generator behind ``sagents setup``.

``sagents setup PACKAGE.MODULE`` writes into a user's project the code that wires sagents to
their app: a coordinator, a factory and its settings, a router, the persistence wiring, the
SQLAlchemy tables, an Alembic migration and an end-to-end test. Generated code is plain, typed
and commented: it is the user's to edit, so it imports only public sagents names where it can
and says why each piece is there.

The generator is private (the command line is its interface): :class:`SetupOptions` checks the
arguments, :func:`plan_setup` renders every file in memory from the templates shipped in
``templates/``, and :func:`write_setup` writes them all or, when some exist and ``--force`` was
not given, none.
"""

from sagents._generator._options import OWNER_TYPES, SetupError, SetupOptions
from sagents._generator._render import TemplateError, render
from sagents._generator._setup import (
    FilesExist,
    PlannedFile,
    SetupPlan,
    Written,
    plan_setup,
    write_setup,
)

__all__ = [
    "OWNER_TYPES",
    "FilesExist",
    "PlannedFile",
    "SetupError",
    "SetupOptions",
    "SetupPlan",
    "TemplateError",
    "Written",
    "plan_setup",
    "render",
    "write_setup",
]
