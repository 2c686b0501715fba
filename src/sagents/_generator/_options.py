"""What ``sagents setup`` was asked for, checked before anything is planned or written.

Every check happens here, up front, so that a bad argument is reported with a message that says
what to type instead, and the project is never left half-generated. The names a user picks end
up as Python identifiers, a keyword parameter and table names in generated code, so they are
held to what those places accept (and to not shadowing what the generated modules import).
"""

from __future__ import annotations

import builtins
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sagents._errors import ConfigurationError

__all__ = ["OWNER_TYPES", "SetupError", "SetupOptions"]

#: The kinds of owner a conversation can have; ``none`` is a single-tenant app.
OWNER_TYPES = ("user", "account", "team", "org", "none")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_PREFIX = re.compile(r"[a-z][a-z0-9_]*_")
_MAX_PREFIX = 30  # sagents' limit, so that derived constraint names fit PostgreSQL's 63

# Names the generated modules import or define next to the class names a user picks.
_TAKEN_CLASS_NAMES = frozenset(
    {
        "AIMessage",
        "Agent",
        "AgentSettings",
        "Any",
        "Approve",
        "Conversation",
        "ConversationNotFound",
        "Decision",
        "FactoryConfig",
        "FactoryRouter",
        "FileSystem",
        "HumanInTheLoop",
        "HumanMessage",
        "INACTIVITY_TIMEOUT",
        "Mapping",
        "OWNER",
        "OwnerId",
        "Path",
        "Presence",
        "Router",
        "Runtime",
        "Scope",
        "Sequence",
        "Session",
        "SessionConfig",
        "SessionOptions",
        "SqlPersistence",
        "State",
        "Status",
        "StatusChanged",
        "TodoList",
    }
)

# The owner field becomes a keyword parameter of the coordinator's methods: it must not clash
# with their other parameters or with the module-level names their bodies use.
_TAKEN_FIELDS = frozenset(
    {
        "conversation",
        "conversation_agent_id",
        "conversation_id",
        "decisions",
        "limit",
        "owner_scope",
        "presence",
        "reason",
        "request_opts",
        "router",
        "runtime",
        "scope",
        "self",
        "store",
        "title",
    }
)


class SetupError(ConfigurationError):
    """An argument of ``sagents setup`` is invalid (a usage error: exit status 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupOptions:
    """The checked arguments of ``sagents setup``.

    Attributes:
        target: ``PACKAGE.MODULE``, e.g. ``myapp.conversations`` (deeper paths work too).
        owner_type: who owns a conversation, one of :data:`OWNER_TYPES`.
        owner_field: the owner's id parameter (default: ``<owner_type>_id``; None for ``none``).
        table_prefix: prefix of the table names, lower case and ending with ``_`` (or empty).
        factory: class name of the factory.
        coordinator: class name of the coordinator.
        force: overwrite generated files that exist.
        root: the project root.

    Raises:
        SetupError: an argument is invalid; the message says what would be valid.
    """

    target: str
    owner_type: str = "user"
    owner_field: str | None = None
    table_prefix: str = "sagents_"
    factory: str = "Factory"
    coordinator: str = "Coordinator"
    force: bool = False
    root: Path = Path()

    def __post_init__(self) -> None:
        _check_target(self.target)
        if self.owner_type not in OWNER_TYPES:
            raise SetupError(
                f"--owner-type {self.owner_type!r} is not one of {', '.join(OWNER_TYPES)}"
            )
        if self.owner_type == "none":
            if self.owner_field is not None:
                raise SetupError(
                    "--owner-field makes no sense with --owner-type none (a single-tenant app "
                    "has no owner); drop one of them"
                )
        else:
            field = self.owner_field if self.owner_field is not None else f"{self.owner_type}_id"
            _check_field(field)
            object.__setattr__(self, "owner_field", field)
        _check_prefix(self.table_prefix)
        _check_class_name("--factory", self.factory)
        _check_class_name("--coordinator", self.coordinator)
        if self.factory == self.coordinator:
            raise SetupError(
                f"--factory and --coordinator are both {self.factory!r}; give them different names"
            )
        if not self.root.is_dir():
            raise SetupError(f"--dir {str(self.root)!r} is not an existing directory")

    @property
    def parts(self) -> tuple[str, ...]:
        """The dotted target, split: ``("myapp", "conversations")``."""
        return tuple(self.target.split("."))

    @property
    def module(self) -> str:
        """The last part of the target: the generated package."""
        return self.parts[-1]

    @property
    def has_owner(self) -> bool:
        """Whether conversations are scoped by an owner (not ``--owner-type none``)."""
        return self.owner_type != "none"


def _check_target(target: str) -> None:
    example = "e.g. myapp.conversations"
    parts = target.split(".")
    if len(parts) < 2:
        raise SetupError(
            f"{target!r} is not PACKAGE.MODULE ({example}): name the package of your app "
            "that the module goes in"
        )
    for part in parts:
        if not _IDENTIFIER.fullmatch(part) or keyword.iskeyword(part):
            raise SetupError(
                f"{target!r} is not a dotted Python module name ({example}): {part!r} is not "
                "an identifier (letters, digits and underscores, not starting with a digit, "
                "and not a keyword)"
            )
    if parts[0] == "sagents" or parts[0] in sys.stdlib_module_names:
        raise SetupError(
            f"{target!r} would shadow the {parts[0]!r} module of "
            f"{'sagents' if parts[0] == 'sagents' else 'the standard library'}; "
            "use your app's package name"
        )


def _check_field(field: str) -> None:
    if not _FIELD.fullmatch(field) or keyword.iskeyword(field):
        raise SetupError(
            f"--owner-field {field!r} must be a lower-case Python identifier, e.g. user_id"
        )
    if field in _TAKEN_FIELDS:
        raise SetupError(
            f"--owner-field {field!r} clashes with a name the coordinator uses; "
            "pick another, e.g. owner_id"
        )


def _check_prefix(prefix: str) -> None:
    if prefix == "":
        return
    if not _PREFIX.fullmatch(prefix) or len(prefix) > _MAX_PREFIX:
        raise SetupError(
            f"--table-prefix {prefix!r} is invalid: use up to {_MAX_PREFIX} lower-case letters, "
            "digits and underscores, starting with a letter and ending with '_' (e.g. "
            "'sagents_'), or '' for no prefix"
        )


def _check_class_name(option: str, name: str) -> None:
    if not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise SetupError(f"{option} {name!r} is not a Python class name, e.g. ChatFactory")
    if name in _TAKEN_CLASS_NAMES or hasattr(builtins, name):
        raise SetupError(
            f"{option} {name!r} clashes with a name the generated code imports; pick another, "
            "e.g. Chat" + ("Factory" if option == "--factory" else "Coordinator")
        )
