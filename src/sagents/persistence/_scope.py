"""Scope keys: a conversation's tenant as stable text.

A caller's ``scope`` may be any hashable value an application uses for a tenant: a user id, a
tuple such as ``("acme", 42)``, an enum member, a frozen dataclass. The persistence protocols
receive that value itself (an application's own adapter may use it, e.g. to authorise); a store
that keeps text, such as the SQL one, keeps :func:`scope_key` of it instead.

What a key must be, and how this one is built:

* **Stable**: the same in every process and after a restart, so nothing in it depends on
  ``id()``, ``hash()`` (randomised per process for text) or a ``repr`` that may change between
  Python versions. Text is written as a JSON string, numbers in their decimal form, bytes as
  their ``repr`` (fixed rules), the members of a frozenset sorted by their keys, and classes by
  their module and qualified name.
* **Exact**: two values of different types, or of one type and different values, never share a
  key. ``42``, ``"42"`` and ``("42",)`` are three tenants, and so are ``1``, ``1.0`` and
  ``True``, although Python calls them equal. Two exceptions are chosen: a ``str`` subclass
  counts as its text, and an object with its own ``scope_key`` (the application's escape hatch)
  is keyed by that text alone, whatever its class.
* **Backward compatible**: a ``str`` scope is its own key, so rows stored when scopes had to be
  text keep matching. Every other key starts with :data:`SCOPE_KEY_MARK` (``§``), which keeps
  the two apart; the one price is that a text scope that itself starts with ``§`` is stored
  escaped (``§`` and the text as a JSON string: ``"§x"`` becomes ``§"§x"``).

The alternative, pickling the scope or hashing it, gives keys that change with the library
version or the process, and that nobody can read in a database console.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Hashable

from sagents._errors import ConfigurationError, shown

__all__ = ["MAX_SCOPE_KEY_LENGTH", "SCOPE_KEY_MARK", "scope_key"]

#: How every key of a scope that is not text begins. A character that text ids practically
#: never start with (it is in Latin-1 too, so any database encoding can store it).
SCOPE_KEY_MARK = "§"

#: The longest key of a scope that is not text: what the SQL store keeps (``VARCHAR(255)``).
MAX_SCOPE_KEY_LENGTH = 255

#: How deeply tuples, frozensets and dataclasses may nest in a scope.
_MAX_DEPTH = 16

_ADVICE = (
    "use a str, int, float, bool, bytes, UUID, an Enum member, or a tuple, frozenset, "
    "NamedTuple or frozen dataclass of those, or give its class a `scope_key` property "
    "returning a stable str (e.g. the tenant's id)"
)


#: What to use instead of a common unhashable value.
_HASHABLE_TWIN = {
    "list": "tuple",
    "set": "frozenset",
    "dict": "frozen dataclass or a tuple of pairs",
    "bytearray": "bytes",
}


_MISSING = object()


class _TooLong(Exception):
    """The key being built passed :data:`MAX_SCOPE_KEY_LENGTH`."""


def scope_key(scope: Hashable | None) -> str | None:
    """The stable text key of a scope: what a store that keeps text (such as SQL) stores.

    * ``None`` (a single-tenant app) has no key: None.
    * A ``str`` is its own key, unchanged (and so is a ``str`` subclass that is not an Enum),
      unless it starts with ``§``: then it is ``§`` followed by the text as a JSON string.
    * Anything else is ``§`` followed by a canonical encoding of the value, e.g.
      ``§("acme",42)`` for ``("acme", 42)``, ``§42`` for ``42``, ``§uuid:UUID("…")`` for a
      ``uuid.UUID``, ``§myapp.billing:Plan.PRO`` for an Enum member,
      ``§myapp.tenants:Tenant(org="acme",user=42)`` for a frozen dataclass (by the fields
      that take part in ``==``) or a NamedTuple, and ``§key("acme/42")`` for an object whose
      ``scope_key`` is ``"acme/42"``.

    The application's escape hatch is that ``scope_key`` attribute: give a class a property
    (or a plain attribute) named ``scope_key`` returning a ``str``, and that text alone is the
    identity of its values. Two objects whose ``scope_key`` is equal are one tenant, whatever
    their class, and renaming or moving the class keeps their keys (the Enum, NamedTuple and
    dataclass encodings name the class; ``scope_key`` is looked at before them).

    Keys are the same in every process and across restarts, and two scopes have equal keys
    exactly when they are the same tenant: values of different types never share one (``42``,
    ``"42"`` and ``("42",)`` are three keys; so are ``1``, ``1.0`` and ``True``), and no text
    scope shares one with any other value.

    Args:
        scope: the scope.

    Returns:
        The key, or None for the scope None.

    Raises:
        ConfigurationError: the scope is not hashable, or is (or holds) a value with no stable
            key (a list, a mutable dataclass, a class defined inside a function, an object
            without ``scope_key``...), or the key of a scope that is not text would be longer
            than 255 characters. The message says what to use instead.
    """
    if scope is None:
        return None
    if isinstance(scope, str) and not isinstance(scope, enum.Enum):
        text = str(scope)
        return SCOPE_KEY_MARK + _text(text) if text.startswith(SCOPE_KEY_MARK) else text
    try:
        return SCOPE_KEY_MARK + _Encoder(scope).encode(scope, 0)
    except _TooLong:
        raise ConfigurationError(
            f"scope {_shown(scope)}: its key would be longer than {MAX_SCOPE_KEY_LENGTH} "
            "characters, more than the SQL store keeps; use a shorter scope (e.g. the tenant's "
            "id), or give its class a `scope_key` property returning a short stable str"
        ) from None


class _Encoder:
    """The canonical encoding of one scope, within the length limit.

    Every piece is counted as it is made, and a long text or bytes value before it is
    encoded, so a huge scope is refused after about 255 characters' work.
    """

    __slots__ = ("_left", "_scope")

    def __init__(self, scope: object) -> None:
        self._scope = scope
        self._left = MAX_SCOPE_KEY_LENGTH - len(SCOPE_KEY_MARK)

    def _spend(self, size: int) -> None:
        self._left -= size
        if self._left < 0:
            raise _TooLong

    def _fits(self, size: int) -> None:
        if size > self._left:
            raise _TooLong

    def _piece(self, text: str) -> str:
        self._spend(len(text))
        return text

    def _refuse(self, value: object, why: str) -> ConfigurationError:
        where = "" if value is self._scope else f" (in scope {_shown(self._scope)})"
        return ConfigurationError(
            f"scope {_shown(value)}{where} {why}; a scope needs a key that is the same in every "
            f"process: {_ADVICE}"
        )

    def encode(self, value: object, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise self._refuse(value, f"nests more than {_MAX_DEPTH} levels deep")
        if value is None:
            return self._piece("None")
        if type(value) is bool:
            return self._piece("True" if value else "False")
        if type(value) is int:
            # A huge int is refused before it is written out (a quadratic conversion).
            if value.bit_length() > 4 * MAX_SCOPE_KEY_LENGTH:
                raise _TooLong
            return self._piece(str(value))
        if type(value) is float:
            # repr: the shortest text that reads back as the same float (fixed since Python
            # 3.1); it holds a "." or an "e", or is inf or nan, so it never reads as an int.
            return self._piece(repr(value))
        if type(value) is bytes:
            # b'...': escapes fixed by the language, not by the Unicode version (as a str's
            # repr would be); at least as long as the bytes, so they are counted first.
            self._fits(len(value))
            return self._piece(repr(value))
        if type(value) is tuple:
            return self._items("(", value, ")", depth)
        if type(value) is frozenset:
            # Members in the order of their keys: a frozenset iterates in the order of its
            # members' hashes, which differ between processes for text.
            return self._items("frozenset({", value, "})", depth, ordered=False)
        if type(value) is uuid.UUID:  # a common id type: named as a class, by its text
            return self._piece(f'uuid:UUID("{value}")')
        return self._object(value, depth)

    def _text(self, text: str) -> str:
        self._fits(len(text))  # a JSON string is at least as long as its text
        return self._piece(_text(text))

    def _items(
        self,
        opening: str,
        items: tuple[object, ...] | frozenset[object],
        closing: str,
        depth: int,
        *,
        ordered: bool = True,
    ) -> str:
        self._spend(len(opening) + len(closing) + max(len(items) - 1, 0))
        keys = [self.encode(item, depth + 1) for item in items]
        if not ordered:
            # Members that are one tenant (two objects with one ``scope_key``, two NaNs) once.
            keys = sorted(set(keys))
        return opening + ",".join(keys) + closing

    def _object(self, value: object, depth: int) -> str:
        if not isinstance(value, Hashable):
            kind = type(value).__name__
            instead = _HASHABLE_TWIN.get(kind)
            hint = f" (use a {instead})" if instead else ""
            raise self._refuse(value, f"is a {kind}, which is not hashable{hint}")
        own = _MISSING if isinstance(value, type) else getattr(value, "scope_key", _MISSING)
        if own is not _MISSING:
            if not isinstance(own, str):
                what = "a method" if callable(own) else f"a {type(own).__name__}"
                raise self._refuse(
                    value,
                    f"has a `scope_key` that is {what}, not a str: make `scope_key` a property "
                    "(or an attribute) whose value is a str",
                )
            return self._piece("key(") + self._text(own) + self._piece(")")
        if isinstance(value, enum.Enum):
            return self._piece(f"{self._class_name(value)}.{value.name}")
        if isinstance(value, str):  # a str subclass: its text, as at the top level
            return self._text(str(value))
        if isinstance(value, tuple) and hasattr(type(value), "_fields"):  # a NamedTuple
            names: tuple[str, ...] = type(value)._fields  # type: ignore[attr-defined]
            return self._fields(value, list(zip(names, value, strict=True)), depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if not type(value).__dataclass_params__.frozen:  # type: ignore[attr-defined]
                raise self._refuse(
                    value,
                    "is a dataclass that is not frozen: declare it @dataclass(frozen=True), "
                    "so that a scope cannot change while a conversation uses it",
                )
            fields = dataclasses.fields(value)
            items = [(f.name, getattr(value, f.name)) for f in fields if f.compare]
            return self._fields(value, items, depth)
        if isinstance(value, int | float | bytes | tuple | frozenset):
            base = next(b for b in (int, float, bytes, tuple, frozenset) if isinstance(value, b))
            raise self._refuse(
                value,
                f"is a {type(value).__qualname__}, a subclass of {base.__name__}: pass a plain "
                f"{base.__name__}, or give the class a `scope_key` property",
            )
        raise self._refuse(value, f"is of type {type(value).__qualname__}, which has no stable key")

    def _fields(self, value: object, items: list[tuple[str, object]], depth: int) -> str:
        pieces = [self._piece(self._class_name(value) + "(")]
        for i, (name, item) in enumerate(items):
            pieces.append(self._piece(f"{',' if i else ''}{name}="))
            pieces.append(self.encode(item, depth + 1))
        pieces.append(self._piece(")"))
        return "".join(pieces)

    def _class_name(self, value: object) -> str:
        cls = type(value)
        if "<" in cls.__qualname__:
            raise self._refuse(
                value,
                f"is a {cls.__qualname__}, of a class defined inside a function (its name is "
                "not unique): define the class at module level",
            )
        return f"{cls.__module__}:{cls.__qualname__}"


def _text(text: str) -> str:
    """``text`` as a JSON string: quotes, backslashes and control characters escaped by JSON's
    fixed rules, and lone surrogates too, so that the key is valid UTF-8 (a database must be
    able to store it)."""
    encoded = json.dumps(text, ensure_ascii=False)
    if any("\ud800" <= c <= "\udfff" for c in encoded):
        encoded = "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in encoded)
    return encoded


def _shown(value: object) -> str:
    """The value for an error message, cut short; its type alone when even its ``repr`` fails
    (an int of 5,000 digits, a broken ``__repr__``)."""
    try:
        return shown(value)
    except Exception:
        return f"<a {type(value).__qualname__}>"
