"""Searching the text of files: lines as the model sees them, RE2 patterns, globs, grep.

The reading tools of the FileSystem middleware (``read_file``, ``find_in_file``, ``glob``,
``grep``) share these. Everything that matches runs on RE2, whose running time is linear in the
input: Python's ``re`` backtracks, and a pattern such as ``^(a+)+$`` would hold the GIL for
minutes (a worker thread does not help, ``re`` never lets it go). Globs are translated to RE2
too, rather than matched with ``fnmatch``, whose ``*`` crosses directories and whose translation
to ``re`` backtracks on patterns with many stars. Every output is bounded, with a note saying how
to narrow the search.
"""

from __future__ import annotations

import asyncio
from typing import Any

import re2  # type: ignore[import-untyped]

from sagents._errors import FileSystemError
from sagents._files import FileStore

# Lines longer than this are cut in read_file / find_in_file output: one minified megabyte on a
# single line would otherwise fill the model's context. read_file's char_offset reads on.
_MAX_LINE_CHARS = 2000
# find_in_file and grep show at most this many matching lines.
_MAX_MATCHES = 500
# glob and grep list at most this many files.
_MAX_FILES_SHOWN = 1000
# grep reads at most this many characters of files per call, and matches them in a worker
# thread in batches of about this many.
_MAX_GREP_CHARS = 64_000_000
_GREP_BATCH_CHARS = 4_000_000


def _lines(content: str) -> list[str]:
    """The lines of ``content``, split on ``\\n`` only (a final newline ends the last line).

    Splitting on ``\\n`` alone, unlike ``str.splitlines``, keeps line numbers in agreement with
    what ``edit_lines`` rewrites even when a file contains form feeds or Unicode separators.
    """
    if not content:
        return []
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _clip(line: str, number: int, start: int = 0) -> str:
    """``line`` from character ``start``, cut at :data:`_MAX_LINE_CHARS` with a note saying how
    to read on (``number`` is the line's 1-based number)."""
    if start == 0 and len(line) <= _MAX_LINE_CHARS:
        return line
    piece = line[start : start + _MAX_LINE_CHARS]
    end = start + len(piece)
    if end < len(line):
        return (
            f"{piece}... [line cut: characters {start}-{end} of {len(line)}; read on with "
            f"read_file(offset={number - 1}, limit=1, char_offset={end})]"
        )
    return f"{piece} [characters {start}-{end} of {len(line)}]"


def _numbered(number: int, line: str, mark: str = "", start: int = 0) -> str:
    # `cat -n` layout: the number right-aligned in 6 columns, then a tab.
    return f"{number:>6}{mark}\t{_clip(line, number, start)}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


#: Longest pattern find_in_file runs, in characters.
_MAX_PATTERN_CHARS = 2_000
#: Memory RE2 may use for one compiled pattern (its default is 8 MB).
_RE2_MAX_MEM = 8 << 20

_RE2_SYNTAX = (
    "patterns use RE2 syntax, which is Python's without backreferences (\\1) and "
    "lookaround ((?=...), (?!...), (?<=...), (?<!...)), since those cannot run in linear time; "
    "rewrite the pattern without them"
)


def _compile(pattern: str, case_sensitive: bool) -> Any:
    """The RE2 regular expression of ``pattern``.

    Raises:
        FileSystemError: the pattern is invalid, uses what RE2 cannot run (backreferences,
            lookaround), or is too large.
    """
    if len(pattern) > _MAX_PATTERN_CHARS:
        # Matching costs the pattern's size times the text's, in a thread no tool timeout
        # can stop: a long pattern is refused rather than run.
        raise FileSystemError(
            f"the pattern is {len(pattern)} characters long; the limit is {_MAX_PATTERN_CHARS}. "
            "Search for a shorter, distinctive piece of the text"
        )
    try:
        pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise FileSystemError(
            "the pattern contains a lone surrogate (an invalid Unicode character); remove it"
        ) from None
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # the error is raised to the caller, not printed to stderr
    options.max_mem = _RE2_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", errors="replace")
        raise FileSystemError(
            f"invalid regular expression {pattern[:200]!r}: {reason}. {_RE2_SYNTAX}"
        ) from None


#: Longest glob pattern, in characters.
_MAX_GLOB_CHARS = 1_000


def _glob_segment(segment: str) -> str:
    """The RE2 expression of one path segment of a glob (no ``/`` inside)."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1  # "a**b" inside a segment is "a*b"
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            inner = segment[i + 1 : end]
            negate = inner[0] in "!^"
            body = inner[1:] if negate else inner
            # Inside a class only "\\", "]" and "^" mean something to RE2; "-" keeps its range.
            body = body.replace("\\", "\\\\").replace("]", "\\]").replace("^", "\\^")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end
        elif (
            char == "{" and (end := segment.find("}", i)) != -1 and "{" not in segment[i + 1 : end]
        ):
            options = segment[i + 1 : end].split(",")
            out.append("(?:" + "|".join(_glob_segment(option) for option in options) + ")")
            i = end
        else:
            out.append(re2.escape(char))
        i += 1
    return "".join(out)


def _glob_regex(pattern: str) -> Any:
    """The compiled RE2 expression matching the paths (relative, without a leading ``/``) that
    the glob ``pattern`` matches: ``*`` and ``?`` stay within a segment, ``**`` as a whole
    segment spans any number of directories (none included), ``[abc]`` / ``[!abc]`` are
    character classes and ``{a,b}`` alternatives.

    Raises:
        FileSystemError: the pattern is empty or too long.
    """
    if not pattern.strip("/"):
        raise FileSystemError("the pattern is empty; give one such as **/*.md")
    if len(pattern) > _MAX_GLOB_CHARS:
        raise FileSystemError(
            f"the pattern is {len(pattern)} characters long; the limit is {_MAX_GLOB_CHARS}"
        )
    segments = [segment for segment in pattern.strip("/").split("/") if segment not in ("", ".")]
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_glob_segment(segment) + ("" if last else "/"))
    return _compile("^" + "".join(parts) + "$", case_sensitive=True)


def _filter_glob(files: list[str], pattern: str, directory: str) -> list[str]:
    """The ``files`` (under ``directory``) that the glob ``pattern`` matches: a pattern without
    ``/`` matches file names at any depth (as ripgrep's ``--glob`` does), one with ``/`` the
    path relative to ``directory``."""
    regex = _glob_regex(pattern)
    if "/" not in pattern.strip("/"):
        return [file for file in files if regex.search(file.rpartition("/")[2]) is not None]
    skip = 1 if directory == "/" else len(directory) + 1
    return [file for file in files if regex.search(file[skip:]) is not None]


# path -> matching line numbers (0-based) and the file's lines
_Hits = list[tuple[str, list[int], list[str]]]


async def _grep_files(store: FileStore, files: list[str], regex: Any) -> tuple[_Hits, list[str]]:
    """Match ``regex`` against every line of ``files``, in a worker thread by batches, up to
    :data:`_MAX_GREP_CHARS` characters read; returns the hits and notes on what was skipped."""
    hits: _Hits = []
    notes: list[str] = []
    batch: list[tuple[str, list[str]]] = []
    batch_chars = 0
    total = 0

    def match(files: list[tuple[str, list[str]]]) -> _Hits:
        found: _Hits = []
        for path, lines in files:
            numbers = [i for i, line in enumerate(lines) if regex.search(line) is not None]
            if numbers:
                found.append((path, numbers, lines))
        return found

    unreadable: list[str] = []
    for position, path in enumerate(files):
        if total >= _MAX_GREP_CHARS:
            notes.append(
                f"stopped after {position} of {len(files)} files ({total:,} characters read); "
                "narrow the path or the glob to search the rest"
            )
            break
        try:
            content = await store.read(path)
        except FileSystemError:
            unreadable.append(path)  # deleted meanwhile, or a lazily loaded file that failed
            continue
        total += len(content)
        batch.append((path, _lines(content)))
        batch_chars += len(content)
        if batch_chars >= _GREP_BATCH_CHARS:
            hits += await asyncio.to_thread(match, batch)
            batch, batch_chars = [], 0
    if batch:
        hits += await asyncio.to_thread(match, batch)
    if unreadable:
        more = " ..." if len(unreadable) > 5 else ""
        notes.append(f"could not read {', '.join(unreadable[:5])}{more}")
    return hits, notes


def _format_grep(pattern: str, target: str, hits: _Hits, notes: list[str], mode: str) -> str:
    if not hits:
        text = f"No match for {pattern!r} in {target}."
    elif mode == "content":
        total = sum(len(numbers) for _, numbers, _ in hits)
        out = [f"{_plural(total, 'matching line')} in {_plural(len(hits), 'file')}:"]
        shown = 0
        for path, numbers, lines in hits:
            if shown >= _MAX_MATCHES:
                break
            out.append(path)
            for number in numbers[: _MAX_MATCHES - shown]:
                out.append(_numbered(number + 1, lines[number], ":"))
                shown += 1
        if shown < total:
            out.append(
                f"... (only the first {_MAX_MATCHES} matching lines are shown; narrow the "
                "pattern, the path or the glob)"
            )
        text = "\n".join(out)
    else:
        if mode == "count":
            rows = [f"{path}: {len(numbers)}" for path, numbers, _ in hits[:_MAX_FILES_SHOWN]]
        else:
            rows = [path for path, _, _ in hits[:_MAX_FILES_SHOWN]]
        verb = "matches" if len(hits) == 1 else "match"
        text = f"{_plural(len(hits), 'file')} {verb} {pattern!r}:\n" + "\n".join(rows)
        if len(hits) > _MAX_FILES_SHOWN:
            text += f"\n... (only the first {_MAX_FILES_SHOWN} are shown; narrow the search)"
    if notes:
        text += "\n(" + "; ".join(notes) + ")"
    return text


def _format_matches(path: str, lines: list[str], matches: list[int], context: int) -> str:
    """grep-style output: ``N:`` for matching lines, ``N-`` for context, ``--`` between groups."""
    matching = set(matches)
    shown: list[str] = []
    previous = -1
    for index in matches[:_MAX_MATCHES]:
        first = max(index - context, previous + 1)
        if shown and first > previous + 1:
            shown.append("--")
        for i in range(first, min(index + context, len(lines) - 1) + 1):
            if i > previous:
                shown.append(_numbered(i + 1, lines[i], ":" if i in matching else "-"))
                previous = i
    header = f"{_plural(len(matches), 'matching line')} in {path}"
    if len(matches) > _MAX_MATCHES:
        header += f" (only the first {_MAX_MATCHES} are shown; narrow the pattern)"
    return header + ":\n" + "\n".join(shown)
