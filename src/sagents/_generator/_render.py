"""A deliberately tiny template language for the generated files.

Templates are Python source with two additions, and nothing else:

* ``{{name}}`` is replaced by a value;
* a line that is exactly ``#{if name}``, ``#{if not name}``, ``#{else}`` or ``#{end}`` (leading
  spaces allowed) keeps or drops the lines up to the matching ``#{else}`` / ``#{end}``. Blocks
  nest.

Why not Jinja or ``string.Template``: a dependency for a dozen files would be a poor trade, and
``$`` already means something in the Alembic ``.mako`` template we ship. Whole-line conditions
keep a template readable as the Python it produces. A name the template uses but the caller did
not give, an unbalanced block, or a ``{{`` left over is a bug in the generator, reported as
:class:`TemplateError` rather than written into a user's project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["TemplateError", "render"]

_PLACEHOLDER = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")
_DIRECTIVE = re.compile(r"#\{(if not |if )?([a-z_]*)\}")


class TemplateError(Exception):
    """A template is malformed or uses a name it was not given (a bug in sagents)."""


def render(template: str, values: Mapping[str, str | bool], *, name: str = "<template>") -> str:
    """Render ``template`` with ``values`` (strings for ``{{...}}``, booleans for ``#{if}``).

    Raises:
        TemplateError: unknown name, unbalanced block, or leftover ``{{``.
    """
    out: list[str] = []
    # One entry per open block: (this branch is kept, the enclosing block is kept).
    stack: list[tuple[bool, bool]] = []
    keep = True
    for number, line in enumerate(template.splitlines(keepends=True), start=1):
        where = f"{name}:{number}"
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is not None:
            kind, word = directive.group(1), directive.group(2)
            if kind is not None:
                condition = _flag(values, word, where)
                stack.append((condition != (kind == "if not "), keep))
                keep = keep and stack[-1][0]
            elif word == "else" and stack:
                kept, outer = stack[-1]
                stack[-1] = (not kept, outer)
                keep = outer and not kept
            elif word == "end" and stack:
                keep = stack.pop()[1]
            else:
                raise TemplateError(f"{where}: unexpected {line.strip()!r}")
            continue
        if keep:
            out.append(_substitute(line, values, where))
    if stack:
        raise TemplateError(f"{name}: {len(stack)} block(s) not closed with #{{end}}")
    text = "".join(out)
    if "{{" in text:
        raise TemplateError(f"{name}: a '{{{{' was not replaced")
    return text


def _substitute(line: str, values: Mapping[str, str | bool], where: str) -> str:
    return _PLACEHOLDER.sub(lambda m: _text(values, m.group(1), where), line)


def _flag(values: Mapping[str, str | bool], word: str, where: str) -> bool:
    value = values.get(word)
    if not isinstance(value, bool):
        raise TemplateError(f"{where}: #{{if {word}}} needs a boolean value named {word!r}")
    return value


def _text(values: Mapping[str, str | bool], word: str, where: str) -> str:
    value = values.get(word)
    if not isinstance(value, str):
        raise TemplateError(f"{where}: {{{{{word}}}}} needs a string value named {word!r}")
    return value
