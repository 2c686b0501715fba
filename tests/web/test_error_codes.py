"""Every error code and close code the web doors send is in ``docs/web.md``'s tables.

The codes are collected from the source of ``sagents.web`` (its syntax tree, not a list kept by
hand), wherever a code is given to a client: ``ClientError(code=...)``, an error frame
(``self.error(code, ...)``), a REST answer (``_error(status, code, ...)`` or a JSON body with an
``"error"`` key), the tables ``*_CODES`` and their defaults, and the close codes of the socket.
A code added in the source without a row in the docs, or a row left for a code the source no
longer sends, fails here. (The AG-UI door and the debugger have docs pages of their own.)
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from sagents._errors import ConversationNotFound, PersistenceFailed
from sagents.web import _client_errors
from sagents.web._client_errors import client_error

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "sagents" / "web"
DOCS = ROOT / "docs" / "web.md"
OTHER_DOORS = ("_agui.py", "_debugger.py", "_debugger_access.py", "_debugger_telemetry.py")

#: A code whose status is whatever the exception said (a table's default).
ANY_STATUS = 0


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _str(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _int(node: ast.expr | None) -> int | None:
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def source_codes() -> tuple[dict[str, set[int]], set[int]]:
    """(error code -> the HTTP statuses it is sent with, literal close codes) of sagents.web."""
    codes: dict[str, set[int]] = defaultdict(set)
    closes: set[int] = set()
    modules = [p for p in sorted(WEB.glob("*.py")) if p.name not in OTHER_DOORS]
    assert len(modules) > 10
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                [target] = node.targets
                if isinstance(target, ast.Name) and target.id.endswith("_CODES"):
                    for key, value in zip(node.value.keys, node.value.values, strict=True):
                        status, code = _int(key), _str(value)
                        assert status is not None, ast.dump(node)
                        assert code is not None, ast.dump(node)
                        codes[code].add(status)
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            args = node.args
            if name == "ClientError":
                given = _keyword(node, "code")
                if isinstance(given, ast.Call) and _name(given.func) == "get":
                    continue  # a table's code (collected with the table and its default)
                code, status = _str(given), _int(_keyword(node, "status"))
                assert code is not None, ast.dump(node)
                assert status is not None, ast.dump(node)
                codes[code].add(status)
            elif (
                name == "error"
                and isinstance(node.func, ast.Attribute)
                and _name(node.func.value) == "self"  # the socket's, not a logger's
                and args
                and (code := _str(args[0])) is not None
            ):
                codes.setdefault(code, set())  # an error frame: no status of its own
            elif name == "_error" and len(args) >= 2 and (code := _str(args[1])) is not None:
                status = _int(args[0])
                assert status is not None, ast.dump(node)
                codes[code].add(status)
            elif (
                name == "get"
                and isinstance(node.func, ast.Attribute)
                and _name(node.func.value).endswith("_CODES")
            ):
                code = _str(args[1])
                assert code is not None, ast.dump(node)
                codes[code].add(ANY_STATUS)
            elif name == "JSONResponse" and args and isinstance(args[0], ast.Dict):
                body = dict(zip(args[0].keys, args[0].values, strict=True))
                error = next((v for k, v in body.items() if k and _str(k) == "error"), None)
                if (code := _str(error)) is not None:
                    status = _int(_keyword(node, "status_code"))
                    assert status is not None, ast.dump(node)
                    codes[code].add(status)
            elif name == "close" and (close := _int(_keyword(node, "code"))) is not None:
                closes.add(close)
    return dict(codes), closes


def documented_codes() -> dict[str, str]:
    """The rows of docs/web.md's table of error codes: code -> the row's status cell."""
    text = DOCS.read_text()
    section = text.split("### Error codes", 1)[1].split("\n#", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_]+)` \| ([^|]+) \|", line)
        if match:
            assert match[1] not in rows, f"{match[1]} has two rows"
            rows[match[1]] = match[2]
    return rows


def documented_close_codes() -> str:
    text = DOCS.read_text()
    return text.split("### Close codes", 1)[1].split("\n#", 1)[0]


def test_the_collection_finds_the_codes_it_should() -> None:
    """The collector itself works: it finds codes from each kind of place."""
    codes, closes = source_codes()
    assert {403} <= codes["forbidden"]  # ClientError(...), the origin middleware's body
    assert 409 in codes["owned_elsewhere"]  # client_error
    assert {401} == codes["unauthorized"]  # the refusal table
    assert ANY_STATUS in codes["refused"]  # the refusal table's default
    assert "bad_frame" in codes  # an error frame
    assert 400 in codes["bad_path"]  # _error(...)
    assert 1011 in closes


def test_every_error_code_is_documented_with_its_status() -> None:
    codes, _ = source_codes()
    rows = documented_codes()
    assert sorted(codes) == sorted(rows), "docs/web.md's table of error codes is out of date"
    for code, statuses in codes.items():
        for status in statuses - {ANY_STATUS}:
            assert str(status) in rows[code], f"`{code}`: its status {status} is not documented"


def test_the_close_codes_of_a_refused_socket_are_documented() -> None:
    """A socket is refused with 4000 + the status of its error frame: the origin check, an id
    that is no conversation's, the app's auth (any status of its table), and the conversation's
    lookup (not found, storage down, a bug)."""
    doc = documented_close_codes()
    lookup = [ConversationNotFound("x"), PersistenceFailed("x"), RuntimeError("a bug")]
    statuses = {403, 422, *_client_errors._REFUSAL_CODES}
    statuses |= {client_error(failure).status for failure in lookup}
    for status in statuses:
        assert f"`{4000 + status}`" in doc, f"close code {4000 + status} is not documented"
    assert "4000 + status" in doc  # the rule, for an auth refusal with another status


def test_every_literal_close_code_is_documented() -> None:
    _, closes = source_codes()
    doc = documented_close_codes()
    for close in closes:
        assert f"`{close}`" in doc, f"close code {close} is not documented"
