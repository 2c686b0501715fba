"""Text PostgreSQL cannot store, stored anyway: a reversible escape for JSONB values.

PostgreSQL's ``jsonb`` (and ``text``) refuse two things Python strings can hold: the NUL
character (``\\u0000``) and lone UTF-16 surrogates (``\\ud800`` without its pair). Both reach the
store in practice — a model that echoes binary junk, a tool result read from a file, a surrogate
pair split by a careless truncation — and a refused save is not a small thing: every later save
of that conversation fails too, because the state still holds the text. Rejecting such text at the
web edge covers what users type; what models and tools produce must simply be stored.

So on PostgreSQL every string (values and keys) goes through :func:`escape` before it is written
and :func:`unescape` after it is read. The escape character is U+E000, the first code point of
the Private Use Area, which no model or tool output is expected to contain, but which still
round-trips when it does:

* ``\\ue000`` becomes ``\\ue000\\ue000``;
* NUL becomes ``\\ue000`` followed by ``0``;
* a lone surrogate becomes ``\\ue000`` followed by ``s`` and its four hex digits.

Strings without any of the three (nearly all of them) are returned as they are, after a check
done by C code (``str.isascii``, ``in``, one regular expression search). SQLite's JSON columns
hold all of these natively (they travel as JSON escapes), so there only the plain text column
(the conversation title, which the sqlite3 driver must encode as UTF-8) is escaped.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["escape", "unescape"]

_MARK = "\ue000"
_SPECIAL = re.compile("[\x00\ue000\ud800-\udfff]")
_ESCAPED = re.compile("\ue000(\ue000|0|s[0-9a-f]{4})")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == _MARK:
        return _MARK + _MARK
    if char == "\x00":
        return _MARK + "0"
    return f"{_MARK}s{ord(char):04x}"


def _unescape_char(match: re.Match[str]) -> str:
    code = match.group(1)
    if code == _MARK:
        return _MARK
    if code == "0":
        return "\x00"
    return chr(int(code[1:], 16))


def _escape_str(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    if _SPECIAL.search(text) is None:
        return text
    return _SPECIAL.sub(_escape_char, text)


def _unescape_str(text: str) -> str:
    if text.isascii() or _MARK not in text:
        return text
    return _ESCAPED.sub(_unescape_char, text)


def escape(value: Any) -> Any:
    """``value`` (JSON: dicts, lists, strings, numbers) with every string escaped."""
    if isinstance(value, str):
        return _escape_str(value)
    if isinstance(value, dict):
        return {_escape_str(k) if isinstance(k, str) else k: escape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape(v) for v in value]
    return value


def unescape(value: Any) -> Any:
    """The inverse of :func:`escape`."""
    if isinstance(value, str):
        return _unescape_str(value)
    if isinstance(value, dict):
        return {
            _unescape_str(k) if isinstance(k, str) else k: unescape(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value
