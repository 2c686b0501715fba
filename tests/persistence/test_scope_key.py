"""``scope_key``: the stable text a store keeps for a tenant scope (issue 15, item 5).

The classes below live at module level on purpose: a key names a class by its module and
qualified name, which a class defined inside a test function does not have uniquely.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from sagents import ConfigurationError
from sagents.persistence import scope_key
from sagents.persistence._scope import MAX_SCOPE_KEY_LENGTH, SCOPE_KEY_MARK

MODULE = __name__


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Region(enum.StrEnum):
    EU = "eu"
    US = "us"


@dataclasses.dataclass(frozen=True)
class Tenant:
    org: str
    user: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class OtherTenant:
    org: str
    user: int


class Point(NamedTuple):
    x: int
    y: int


class Account:
    """The escape hatch: an object that says what its key is."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Account) and other.account_id == self.account_id

    def __hash__(self) -> int:
        return hash(self.account_id)

    @property
    def scope_key(self) -> str:
        return f"account/{self.account_id}"


class LegacyAccount:
    """Another class keyed by the same text: the text alone is the identity."""

    scope_key = "account/7"


class MethodKey:
    def scope_key(self) -> str:
        return "nope"


class IntKey:
    scope_key = 7


class NoKey:
    @property
    def scope_key(self) -> str | None:
        return None


@dataclasses.dataclass(frozen=False, unsafe_hash=True)
class Mutable:
    org: str


class UserId(int):
    pass


class Name(str):
    pass


# -- what keys look like -----------------------------------------------------------------------


def test_none_has_no_key() -> None:
    assert scope_key(None) is None


@pytest.mark.parametrize("text", ["", "alice", "42", "('acme', 42)", "ü/日本", "a" * 1000])
def test_a_str_is_its_own_key(text: str) -> None:
    assert scope_key(text) == text


def test_the_documented_encodings() -> None:
    assert scope_key(("acme", 42)) == '§("acme",42)'
    assert scope_key(42) == "§42"
    assert scope_key(("42",)) == '§("42")'
    assert scope_key(1.5) == "§1.5"
    assert scope_key(True) == "§True"
    assert scope_key(b"\x00a") == "§b'\\x00a'"
    assert scope_key(frozenset({"b", "a"})) == '§frozenset({"a","b"})'
    assert scope_key(Plan.PRO) == f"§{MODULE}:Plan.PRO"
    assert scope_key(Tenant(org="acme", user=42)) == f'§{MODULE}:Tenant(org="acme",user=42)'
    assert scope_key(Point(1, 2)) == f"§{MODULE}:Point(x=1,y=2)"
    assert scope_key(Account("7")) == '§key("account/7")'
    assert scope_key(("acme", None)) == '§("acme",None)'
    some_id = uuid.UUID(int=5)
    assert scope_key(some_id) == f'§uuid:UUID("{some_id}")'
    assert scope_key(some_id) != scope_key(str(some_id))


def test_a_str_that_starts_with_the_mark_is_escaped() -> None:
    assert scope_key("§x") == '§"§x"'
    looks_encoded = scope_key(("acme", 42))
    assert looks_encoded is not None
    assert scope_key(looks_encoded) != looks_encoded
    assert scope_key(looks_encoded) == SCOPE_KEY_MARK + json.dumps(
        looks_encoded, ensure_ascii=False
    )


def test_values_python_calls_equal_are_still_told_apart_by_type() -> None:
    values = [42, "42", ("42",), 42.0, b"42", frozenset({42}), (42,)]
    assert len({scope_key(v) for v in values}) == len(values)
    assert len({scope_key(1), scope_key(1.0), scope_key(True)}) == 3
    assert scope_key(("acme", 42)) != scope_key(("acme", 42.0))


def test_equal_values_share_a_key() -> None:
    assert scope_key(Tenant(org="acme", user=42)) == scope_key(Tenant("acme", 42, note="x"))
    assert scope_key(tuple(part for part in ("acme", 42))) == scope_key(("acme", 42))
    assert scope_key(frozenset(["a", "b", "c"])) == scope_key(frozenset(["c", "b", "a"]))
    assert scope_key(Account("7")) == scope_key(LegacyAccount())  # the text is the identity


def test_types_with_the_same_fields_are_different_tenants() -> None:
    assert scope_key(Tenant(org="acme", user=42)) != scope_key(OtherTenant(org="acme", user=42))
    assert scope_key(Point(1, 2)) != scope_key((1, 2))
    assert scope_key(Region.EU) != scope_key("eu")  # an Enum member is keyed by its name
    assert scope_key(Plan.FREE) != scope_key(Region.EU)


def test_a_str_subclass_counts_as_its_text() -> None:
    assert scope_key(Name("alice")) == "alice"
    assert scope_key((Name("alice"),)) == scope_key(("alice",))


def test_nested_text_is_valid_utf8() -> None:
    key = scope_key(("\ud800", "\x00"))
    assert key is not None
    key.encode("utf-8")  # a lone surrogate is escaped, not stored raw
    assert key == '§("\\ud800","\\u0000")'
    assert scope_key(("\\ud800",)) != key


# -- stability ---------------------------------------------------------------------------------

_STABLE = [
    ("acme", 42),
    frozenset({"a", "b", "c", "d", "e", "f", "g", "h"}),
    frozenset({("x", 1), ("y", 2), b"z"}),
    Tenant(org="acme", user=42),
    Plan.PRO,
    Point(1, -2),
    (1.25, float("inf"), None, False),
    Account("7"),
    uuid.UUID(int=2**100),
]


def test_keys_are_the_same_in_other_processes_whatever_their_hash_seed() -> None:
    here = [scope_key(v) for v in _STABLE]
    root = Path(__file__).resolve().parents[2]
    program = (
        "import json\n"
        f"from {MODULE} import _STABLE\n"
        "from sagents.persistence import scope_key\n"
        "print(json.dumps([scope_key(v) for v in _STABLE]))\n"
    )
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=30,
            check=True,
        )
        assert json.loads(done.stdout) == here


# -- refusals ----------------------------------------------------------------------------------


def _local_enum() -> Any:
    class Local(enum.Enum):
        A = 1

    return Local.A


@pytest.mark.parametrize(
    ("scope", "advice"),
    [
        (["acme", 42], "use a tuple"),
        ({"acme"}, "use a frozenset"),
        ({"org": "acme"}, "frozen dataclass"),
        (("acme", ["x"]), "use a tuple"),
        (Mutable(org="acme"), "@dataclass(frozen=True)"),
        (_local_enum(), "define the class at module level"),
        (MethodKey(), "make `scope_key` a property"),
        (IntKey(), "make `scope_key` a property"),
        (NoKey(), "make `scope_key` a property"),
        (object(), "give its class a `scope_key` property"),
        (UserId(42), "pass a plain int"),
        (("a" * (MAX_SCOPE_KEY_LENGTH + 1),), "longer than 255"),
        (10**5000, "longer than 255"),
        (b"x" * 10_000, "longer than 255"),
        (tuple(range(1000)), "longer than 255"),
        (Account("a" * 300), "longer than 255"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_scope_without_a_stable_key_is_refused_with_advice(scope: Any, advice: str) -> None:
    with pytest.raises(ConfigurationError, match="scope") as info:
        scope_key(scope)
    assert advice in str(info.value)
    assert len(str(info.value)) < 600  # a huge scope is cut in the message


def test_nesting_is_bounded() -> None:
    deep: Any = ()
    for _ in range(40):
        deep = (deep,)
    with pytest.raises(ConfigurationError, match="levels deep"):
        scope_key(deep)


# -- properties --------------------------------------------------------------------------------

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["", "42", "§", "§42", '§("a")', "None", "True", "1.0", '§key("7")']),
    st.binary(max_size=4),
    st.uuids(),
    st.sampled_from(list(Plan) + list(Region)),
    st.builds(Name, st.text(max_size=3)),
    st.builds(Account, st.sampled_from(["1", "2", "7"])),
    st.just(LegacyAccount()),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.frozensets(children, max_size=3),
        st.builds(Tenant, org=st.text(max_size=3), user=st.integers(0, 3)),
        st.builds(OtherTenant, org=st.text(max_size=3), user=st.integers(0, 3)),
        st.builds(Point, x=st.integers(0, 2), y=st.integers(0, 2)),
    )


_values = st.recursive(_leaves, _compound, max_leaves=6)


def _identity(value: Any) -> Hashable:
    """What makes two scopes one tenant, spelled out: type and value, recursively (with the
    chosen exceptions: a ``str`` subclass is its text, an object with ``scope_key`` is that
    text, and a float is its repr, so ``0.0`` and ``-0.0`` differ and all NaNs are one)."""
    if value is None:
        return None
    own = getattr(value, "scope_key", None)
    if isinstance(own, str):
        return ("hatch", own)
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, value.name)
    if isinstance(value, str):
        return ("str", str(value))
    if type(value) is float:
        return ("float", repr(value))
    if type(value) is tuple:
        return ("tuple", tuple(_identity(v) for v in value))
    if type(value) is frozenset:
        return ("frozenset", frozenset(_identity(v) for v in value))
    if isinstance(value, tuple):  # a NamedTuple
        return (type(value).__qualname__, tuple(_identity(v) for v in value))
    if dataclasses.is_dataclass(value):
        fields = [f for f in dataclasses.fields(value) if f.compare]
        return (type(value).__qualname__, tuple(_identity(getattr(value, f.name)) for f in fields))
    return (type(value).__name__, value)


def _key_or_skip(value: Any) -> str | None:
    try:
        return scope_key(value)
    except ConfigurationError:
        reject()  # only a key over the length limit: the strategies keep values small


@settings(max_examples=400, deadline=None)
@given(values=st.lists(_values, min_size=2, max_size=6))
def test_keys_are_equal_exactly_when_the_scopes_are_one_tenant(values: list[Any]) -> None:
    keys = [_key_or_skip(v) for v in values]
    identities = [_identity(v) for v in values]
    for i in range(len(values)):
        for j in range(len(values)):
            assert (keys[i] == keys[j]) == (identities[i] == identities[j]), (
                values[i],
                values[j],
            )


@settings(max_examples=300, deadline=None)
@given(value=_values)
def test_no_text_scope_shares_a_key_with_another_value(value: Any) -> None:
    key = _key_or_skip(value)
    if key is None:
        return
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        return
    # The text that reads exactly like the value's key is another tenant.
    assert scope_key(key) != key
    assert key.startswith(SCOPE_KEY_MARK)


@given(text=st.text())
def test_text_keeps_its_own_key(text: str) -> None:
    if text.startswith(SCOPE_KEY_MARK):
        assert scope_key(text) == SCOPE_KEY_MARK + json.dumps(text, ensure_ascii=False)
    else:
        assert scope_key(text) == text


@given(value=_values)
def test_a_key_survives_pickling_as_a_distributed_backend_does(value: Any) -> None:
    key = _key_or_skip(value)
    assert scope_key(pickle.loads(pickle.dumps(value))) == key
    if key is not None and not isinstance(value, str):
        key.encode("utf-8")  # storable as it is
