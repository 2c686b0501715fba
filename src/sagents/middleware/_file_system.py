"""The FileSystem middleware: a virtual filesystem the model works in through tools.

The model gets ten tools (``ls``, ``read_file``, ``write_file``, ``edit_file``,
``find_in_file``, ``edit_lines``, ``move_file``, ``delete_file``, and ``glob`` and ``grep``
across files) over a :class:`FileStore`. The tools hold no file data themselves: the store is
the single place where files and path rules live, and which store a call uses is decided per
call:

* a store given to the middleware (``FileSystem(store=...)``) is used by every agent that has
  this middleware: sharing is then what the application asked for;
* otherwise the store of the agent's *filesystem scope*, which the runtime offers as
  ``ToolContext.services["filesystem"]``: by default the agent's conversation, so that one
  middleware instance reused by a factory for many conversations (and tenants) never lets one
  read another's files; agents started with the same ``filesystem_scope`` share one;
* an agent run without a runtime (``Agent.run``) gets a private in-memory store per agent id,
  kept by the middleware instance.

A tool that cannot do what it was asked *raises* (``FileSystemError`` and its subclass
``PathNotAllowed``, or a validation error for malformed arguments) instead of returning an error
string: the loop turns the exception into an error tool result, so the model still reads the
message, while the run's events and telemetry record a failure rather than a success that
happens to contain the word "error".

Line numbers are 1-based everywhere the model sees them (``read_file``, ``find_in_file``,
``edit_lines``) so a number read from one tool can be used in another; only ``read_file``'s
``offset`` counts lines to skip, as its name says.

Two bounds protect the event loop every agent shares. ``find_in_file`` matches with RE2, whose
running time is linear in the input: Python's ``re`` backtracks, and a pattern such as
``^(a+)+$`` would hold the GIL for minutes (a worker thread does not help, ``re`` never lets it
go), so patterns RE2 cannot run in linear time (backreferences, lookaround) are refused with a
message saying so. ``edit_file`` computes the size of the edited file arithmetically and refuses
an edit past the size limit before building it, so a ``replace_all`` of one character by a long
text cannot allocate hundreds of megabytes first.

Edits of one file are serialised (a lock per store and path held across the read and the write),
so two edits of one file in one turn both land, whatever the store does between the two. Every
change a tool makes is published as a :class:`~sagents.events.FileChanged` event on the agent's
``main`` channel, so a UI's file panel follows without polling.

``glob`` and ``grep`` work over any store, since they use only ``list`` and ``read``. Their
patterns are translated to RE2 too, and their output is bounded (so many files, so many lines)
with a note saying how to narrow the search.

**Large tool results.** One tool result of a megabyte fills the model's context for the rest of
the conversation. Before each model call, a result that just arrived and is longer than
``max_tool_result_chars`` is written to ``/large_tool_results/<tool call id>`` and replaced in
the history by its first lines and a note telling the model to page through the file with
``read_file``. Doing it before the model call, rather than when the tool returns, needs no hook
in the loop and covers every tool, the other middleware's included; the events of the tool
call still carry the full result for UIs. Results of the reading tools themselves (saving a
``read_file`` result to a file only to read it again would loop), and every result when the
file cannot be saved, are cut instead, with a note saying how to ask for less.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Annotated, Literal, cast

import re2  # type: ignore[import-untyped]
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import Field

from sagents._errors import FileSystemError, InvalidMiddleware, SagentsError
from sagents._files import FileStore, MemoryFileStore, normalize_path
from sagents._mounts import MountedFileStore
from sagents._state import State
from sagents.events import FileChanged
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import get_middleware_context
from sagents.execution._tool_context import get_tool_context
from sagents.middleware._file_search import (
    _MAX_FILES_SHOWN,
    _MAX_LINE_CHARS,
    _compile,
    _filter_glob,
    _format_grep,
    _format_matches,
    _glob_regex,
    _grep_files,
    _lines,
    _numbered,
    _plural,
)

__all__ = ["FILE_SYSTEM_TOOLS", "FileSystem"]

#: The names of the FileSystem tools, in the order they are offered.
FILE_SYSTEM_TOOLS: tuple[str, ...] = (
    "ls",
    "read_file",
    "write_file",
    "edit_file",
    "find_in_file",
    "edit_lines",
    "move_file",
    "delete_file",
    "glob",
    "grep",
)

#: Where results over ``max_tool_result_chars`` are saved, one file per tool call.
LARGE_TOOL_RESULTS_DIR = "/large_tool_results"
# Tools whose large results are cut rather than saved: reading the saved file back would give
# the same large result again.
_READING_TOOLS = frozenset({"ls", "read_file", "find_in_file", "glob", "grep"})

_PROMPT = """\
## Files

You have a virtual filesystem. Paths look like /notes/plan.md: they start at the root "/", use
"/" as separator, and may not contain "..". Directories exist implicitly while they hold files.
Tools:
{tools}
Read a file before editing it, and prefer edit_file or edit_lines over rewriting a whole file."""

_SUMMARIES = {
    "ls": "ls: list the files and directories in a directory",
    "read_file": (
        "read_file: read a file with numbered lines (offset/limit for long files, char_offset "
        "for lines over 2000 characters)"
    ),
    "write_file": "write_file: create a file or replace its whole content",
    "edit_file": "edit_file: replace an exact piece of text in a file",
    "find_in_file": (
        "find_in_file: search a file with a regular expression (RE2 syntax: no backreferences "
        "or lookaround)"
    ),
    "edit_lines": "edit_lines: replace a range of lines (numbers as shown by read_file)",
    "move_file": "move_file: move or rename a file",
    "delete_file": "delete_file: delete a file",
    "glob": "glob: find files by a path pattern such as **/*.md",
    "grep": "grep: search the text of many files at once",
}

FilePath = Annotated[str, "Path of the file, e.g. /notes/plan.md"]


def _join(lines: list[str], *, trailing_newline: bool) -> str:
    if not lines:
        return ""
    return "\n".join(lines) + ("\n" if trailing_newline else "")


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def _line_ending_variants(old: str, new: str, content: str) -> list[tuple[str, str]]:
    """Other spellings of a multi-line edit, for a file whose line endings differ from it.

    Models write ``\\n``; a file may use ``\\r\\n`` (or the reverse). Each variant converts
    ``old`` *and* ``new`` alike, so the edited file keeps its own line endings.
    """
    if "\n" not in old:
        return []
    lf_old, lf_new = old.replace("\r\n", "\n"), new.replace("\r\n", "\n")
    variants = []
    if "\r\n" in content:
        variants.append((lf_old.replace("\n", "\r\n"), lf_new.replace("\n", "\r\n")))
    variants.append((lf_old, lf_new))
    return [(o, n) for o, n in variants if o != old]


class _PathLocks:
    """One lock per (store, path), held by a tool across its read and its write.

    Shared by every FileSystem instance, since two instances (a parent's and a sub-agent's) may
    reach one store. An entry lives only while a call holds or waits for it, so its store is
    alive and its ``id`` cannot be reused meanwhile.
    """

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, store: FileStore, *paths: str) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for path in sorted(set(paths)):  # one order for everyone: no deadlock
                await stack.enter_async_context(self._one((id(store), path)))
            yield

    @contextlib.asynccontextmanager
    async def _one(self, key: tuple[int, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_path_locks = _PathLocks()


def _file_changed(
    path: str,
    change: Literal["created", "modified", "deleted", "moved"],
    previous_path: str | None = None,
) -> None:
    """Publish a ``FileChanged`` event for a change a tool made (nothing outside an agent)."""
    try:
        context = get_tool_context()
    except SagentsError:
        return  # a tool called directly, outside any agent
    context.emit(
        FileChanged(
            agent_id=context.agent_id, path=path, change=change, previous_path=previous_path
        )
    )


def _safe_file_name(tool_call_id: str) -> str:
    """A file name for a tool call id: ids are provider-made and may hold any character."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", tool_call_id)[:100].lstrip(".")
    return name or "tool_call"


class FileSystem(Middleware):
    """Give the model a virtual filesystem through ten tools.

    Args:
        store: where the files live, for every agent with this middleware (sharing them). When
            omitted, each agent uses its filesystem scope's store, which a runtime provides:
            by default its conversation's (kept in the conversation's persistence when that
            stores files), or the ``filesystem_scope`` it was started with. An agent run without
            a runtime gets a private in-memory store per agent id. The middleware never closes
            a store: its creator owns it. A :class:`~sagents.middleware.MountedFileStore`
            composes several stores under one tree.
        enabled_tools: the names of the tools to offer (see :data:`FILE_SYSTEM_TOOLS`); all of
            them when omitted.
        max_file_size: the largest file the tools will write, in UTF-8 bytes (the store may
            have its own, smaller, limit).
        max_tool_result_chars: the longest tool result (of any tool) the model sees in full;
            a longer one is saved under ``/large_tool_results/`` and replaced by its first
            lines and a note to page through it with ``read_file`` (or cut, when it cannot be
            saved). None keeps every result whole. The default, 80,000 characters, is about
            20,000 tokens.
        tool_descriptions: the description the model reads, by tool name, instead of the
            built-in one (e.g. in the application's language or with its conventions).
        display_texts: what UIs show for a call, by tool name (the tool's ``display_text``;
            default: its name, humanised).
    """

    def __init__(
        self,
        store: FileStore | None = None,
        *,
        enabled_tools: Collection[str] | None = None,
        max_file_size: int = 1_000_000,
        max_tool_result_chars: int | None = 80_000,
        tool_descriptions: Mapping[str, str] | None = None,
        display_texts: Mapping[str, str] | None = None,
    ) -> None:
        self._descriptions = dict(tool_descriptions or {})
        self._display_texts = dict(display_texts or {})
        self._explicit = store is not None
        self._store: FileStore = (
            store if store is not None else MemoryFileStore(max_file_size=max_file_size)
        )
        self._enabled = enabled_tools
        self._max_file_size = max_file_size
        self._max_result_chars = max_tool_result_chars
        # Agents run without a runtime: agent id -> its files, for as long as this instance.
        self._inline: dict[str, MemoryFileStore] = {}

    @property
    def store(self) -> FileStore:
        """The store given to the middleware; without one, the store its tools use when they
        are called outside any agent (directly, in tests). Agents use their scope's store."""
        return self._store

    def needs_file_store(self) -> bool:
        """Whether the agent needs its scope's store from the runtime (no store was given)."""
        return not self._explicit and bool(self.enabled_tools)

    def _active(self) -> FileStore:
        # Resolved per call: the scope's store is a runtime service that may be restarted.
        if self._explicit:
            return self._store
        try:
            context = get_tool_context()
            agent_id, services = context.agent_id, context.services
        except SagentsError:
            try:  # a middleware hook (saving a large tool result)
                hook = get_middleware_context()
            except SagentsError:
                return self._store  # called directly, outside any agent
            agent_id, services = hook.agent_id, hook.services
        shared = services.get("filesystem")
        if shared is not None:
            return cast(FileStore, shared)
        # No runtime: files belong to the agent, never to every agent this instance serves.
        store = self._inline.get(agent_id)
        if store is None:
            store = MemoryFileStore(max_file_size=self._max_file_size)
            self._inline[agent_id] = store
        return store

    @property
    def enabled_tools(self) -> tuple[str, ...]:
        """The names of the tools offered, in :data:`FILE_SYSTEM_TOOLS` order."""
        if self._enabled is None:
            return FILE_SYSTEM_TOOLS
        if isinstance(self._enabled, str):
            return ()  # a misuse validate() reports; never read "ls" as {"l", "s"}
        enabled = set(self._enabled)
        return tuple(name for name in FILE_SYSTEM_TOOLS if name in enabled)

    def validate(self) -> None:
        """Check the configuration.

        Raises:
            InvalidMiddleware: ``enabled_tools`` is a string or names an unknown tool,
                ``max_file_size`` is not a positive int, ``max_tool_result_chars`` is
                neither None nor an int of at least 100, or ``tool_descriptions`` /
                ``display_texts`` name an unknown tool or give no text.
        """
        for option, texts in (
            ("tool_descriptions", self._descriptions),
            ("display_texts", self._display_texts),
        ):
            for name, text in texts.items():
                if name not in FILE_SYSTEM_TOOLS:
                    raise InvalidMiddleware(
                        f"FileSystem: {option} names an unknown tool {name!r}; valid names "
                        f"are {', '.join(FILE_SYSTEM_TOOLS)}"
                    )
                if not isinstance(text, str) or not text.strip():
                    raise InvalidMiddleware(
                        f"FileSystem: {option}[{name!r}] must be a non-empty string"
                    )
        if isinstance(self._enabled, str):
            raise InvalidMiddleware(
                f"FileSystem: enabled_tools must be a collection of tool names, not the string "
                f"{self._enabled!r}; write enabled_tools=[{self._enabled!r}]"
            )
        if self._enabled is not None:
            unknown = sorted(set(self._enabled) - set(FILE_SYSTEM_TOOLS))
            if unknown:
                raise InvalidMiddleware(
                    f"FileSystem: unknown tool name(s) in enabled_tools: {', '.join(unknown)}; "
                    f"valid names are {', '.join(FILE_SYSTEM_TOOLS)}"
                )
        if (
            not isinstance(self._max_file_size, int)
            or isinstance(self._max_file_size, bool)
            or self._max_file_size <= 0
        ):
            raise InvalidMiddleware(
                f"FileSystem: max_file_size must be a positive number of bytes, "
                f"got {self._max_file_size!r}"
            )
        limit = self._max_result_chars
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 100
        ):
            raise InvalidMiddleware(
                f"FileSystem: max_tool_result_chars must be None or an int >= 100, got {limit!r}"
            )

    def system_prompt(self) -> str | None:
        """Explain the filesystem and list the enabled tools; None when none is enabled."""
        names = self.enabled_tools
        if not names:
            return None
        return _PROMPT.format(tools="\n".join(f"- {_SUMMARIES[name]}" for name in names))

    def tools(self) -> Sequence[BaseTool]:
        """The enabled tools, as async langchain ``StructuredTool``s."""
        builders = {
            "ls": self._ls_tool,
            "read_file": self._read_file_tool,
            "write_file": self._write_file_tool,
            "edit_file": self._edit_file_tool,
            "find_in_file": self._find_in_file_tool,
            "edit_lines": self._edit_lines_tool,
            "move_file": self._move_file_tool,
            "delete_file": self._delete_file_tool,
            "glob": self._glob_tool,
            "grep": self._grep_tool,
        }
        tools = [builders[name]() for name in self.enabled_tools]
        for tool in tools:
            if tool.name in self._descriptions:
                tool.description = self._descriptions[tool.name]
            if tool.name in self._display_texts:
                tool.metadata = {
                    **(tool.metadata or {}),
                    "display_text": self._display_texts[tool.name],
                }
        return tools

    # -- helpers -------------------------------------------------------------------------------

    def _check_size(self, path: str, size: int) -> None:
        if size > self._max_file_size:
            raise FileSystemError(
                f"cannot write {path}: the content would be {size} bytes, over the limit of "
                f"{self._max_file_size} bytes; split it into smaller files"
            )

    async def _write(self, store: FileStore, path: str, content: str) -> None:
        self._check_size(path, _utf8_size(content))
        await store.write(path, content)

    # -- tools ---------------------------------------------------------------------------------

    def _ls_tool(self) -> BaseTool:
        async def ls(path: Annotated[str, "Directory to list; '/' is the root"] = "/") -> str:
            directory = normalize_path(path, directory=True)
            store = self._active()
            if directory != "/" and await store.exists(directory):
                return directory  # a file, listed as itself like `ls FILE`
            files = await store.list(directory)
            base = "" if directory == "/" else directory
            entries: set[str] = set()
            for file in files:
                head, sep, _ = file[len(base) + 1 :].partition("/")
                entries.add(f"{base}/{head}{sep}")  # a trailing "/" marks a directory
            # Mount points are directories even while empty, so the model sees where it may
            # write (and an empty mount can be listed).
            is_mount = False
            if isinstance(store, MountedFileStore):
                for point in store.mount_points():
                    if point == directory:
                        is_mount = True
                    elif point != "/" and point.startswith(base + "/"):
                        entries.add(f"{base}/{point[len(base) + 1 :].partition('/')[0]}/")
            if not entries:
                if directory == "/" or is_mount:
                    return "No files yet." if directory == "/" else f"No files yet in {directory}."
                raise FileSystemError(f"no such directory: {directory}; use ls('/') to look")
            return "\n".join(sorted(entries))

        return StructuredTool.from_function(
            coroutine=ls,
            name="ls",
            description=(
                "List the files and directories directly inside a directory, one absolute path "
                "per line; directories end with '/'."
            ),
        )

    def _read_file_tool(self) -> BaseTool:
        async def read_file(
            file_path: FilePath,
            offset: Annotated[int, Field(ge=0, description="Number of lines to skip")] = 0,
            limit: Annotated[int, Field(ge=1, description="Most lines to return")] = 2000,
            char_offset: Annotated[
                int,
                Field(
                    ge=0,
                    description=(
                        "For lines longer than 2000 characters: the character each shown line "
                        "starts at (0 is the start of the line)"
                    ),
                ),
            ] = 0,
        ) -> str:
            path = normalize_path(file_path)
            lines = _lines(await self._active().read(path))
            if not lines:
                return f"{path} is empty."
            if offset >= len(lines):
                raise FileSystemError(
                    f"offset {offset} is past the end of {path}, which has "
                    f"{_plural(len(lines), 'line')}; use a smaller offset"
                )
            shown = lines[offset : offset + limit]
            text = "\n".join(
                _numbered(number, line, start=char_offset)
                for number, line in enumerate(shown, start=offset + 1)
            )
            last = offset + len(shown)
            if last < len(lines):
                text += (
                    f"\n... (truncated: showing lines {offset + 1}-{last} of {len(lines)}; "
                    f"call read_file with offset={last} to read on)"
                )
            return text

        return StructuredTool.from_function(
            coroutine=read_file,
            name="read_file",
            description=(
                "Read a text file. Each line is shown as its 1-based number, a tab, then the "
                "line. `offset` skips that many lines and `limit` caps how many are returned. "
                f"A line longer than {_MAX_LINE_CHARS} characters is cut, and the cut says how "
                "to read the rest: call again with offset and limit=1 for that line and "
                "`char_offset` set to the character to continue from."
            ),
        )

    def _write_file_tool(self) -> BaseTool:
        async def write_file(
            file_path: FilePath, content: Annotated[str, "The whole new content of the file"]
        ) -> str:
            path = normalize_path(file_path)
            store = self._active()
            async with _path_locks.hold(store, path):
                existed = await store.exists(path)
                await self._write(store, path, content)
            _file_changed(path, "modified" if existed else "created")
            verb = "Overwrote" if existed else "Created"
            return f"{verb} {path} ({_plural(len(_lines(content)), 'line')})."

        return StructuredTool.from_function(
            coroutine=write_file,
            name="write_file",
            description=(
                "Create a file, or replace the whole content of an existing one. Parent "
                "directories are created as needed."
            ),
        )

    def _edit_file_tool(self) -> BaseTool:
        async def edit_file(
            file_path: FilePath,
            old_string: Annotated[str, "The exact text to replace, including whitespace"],
            new_string: Annotated[str, "The text to put in its place"],
            replace_all: Annotated[bool, "Replace every occurrence, not just a unique one"] = False,
        ) -> str:
            path = normalize_path(file_path)
            if not old_string:
                raise FileSystemError(
                    "old_string is empty; give the exact text to replace, or use write_file"
                )
            if old_string == new_string:
                raise FileSystemError("old_string and new_string are identical; nothing to do")
            store = self._active()
            async with _path_locks.hold(store, path):
                content = await store.read(path)
                old, new = old_string, new_string
                count = content.count(old)
                if count == 0:
                    for old_variant, new_variant in _line_ending_variants(old, new, content):
                        count = content.count(old_variant)
                        if count:
                            old, new = old_variant, new_variant
                            break
                if count == 0:
                    raise FileSystemError(
                        f"old_string was not found in {path}; read the file and copy the text "
                        "exactly, including whitespace and indentation"
                    )
                if count > 1 and not replace_all:
                    raise FileSystemError(
                        f"old_string occurs {count} times in {path}; add surrounding lines to "
                        "make it unique, or set replace_all to true to replace every occurrence"
                    )
                # The size first, by arithmetic: building a result past the limit only to
                # refuse it could cost hundreds of megabytes (a character replaced by a page).
                size = _utf8_size(content) + count * (_utf8_size(new) - _utf8_size(old))
                self._check_size(path, size)
                await self._write(store, path, content.replace(old, new))
            _file_changed(path, "modified")
            return f"Replaced {_plural(count, 'occurrence')} in {path}."

        return StructuredTool.from_function(
            coroutine=edit_file,
            name="edit_file",
            description=(
                "Replace exact text in a file. old_string must occur exactly once unless "
                "replace_all is true. Read the file first and copy old_string exactly; line "
                "endings may be written as \\n even in a file that uses \\r\\n."
            ),
        )

    def _find_in_file_tool(self) -> BaseTool:
        async def find_in_file(
            file_path: FilePath,
            pattern: Annotated[
                str,
                "A regular expression in RE2 syntax (Python's, without backreferences and "
                "lookaround), matched line by line",
            ],
            case_sensitive: Annotated[bool, "Whether letter case must match"] = True,
            context_lines: Annotated[
                int, Field(ge=0, description="Lines of context shown around each match")
            ] = 0,
        ) -> str:
            path = normalize_path(file_path)
            regex = _compile(pattern, case_sensitive)
            lines = _lines(await self._active().read(path))
            # RE2 runs in time linear in each line, so no pattern can stall the loop for long;
            # a worker thread still keeps a megabyte file from delaying every other agent.
            matches = await asyncio.to_thread(
                lambda: [i for i, line in enumerate(lines) if regex.search(line) is not None]
            )
            if not matches:
                return f"No match for {pattern!r} in {path}."
            return _format_matches(path, lines, matches, context_lines)

        return StructuredTool.from_function(
            coroutine=find_in_file,
            name="find_in_file",
            description=(
                "Search a file for a regular expression (RE2 syntax: like Python's, but "
                "backreferences and lookaround are not supported). Matching lines are shown as "
                "'NUMBER:<tab>line', context lines as 'NUMBER-<tab>line', and separate groups "
                f"are divided by '--'. Lines are cut at {_MAX_LINE_CHARS} characters; read_file "
                "with char_offset shows the rest."
            ),
        )

    def _edit_lines_tool(self) -> BaseTool:
        async def edit_lines(
            file_path: FilePath,
            start_line: Annotated[int, Field(ge=1, description="First line to replace (1-based)")],
            end_line: Annotated[int, Field(ge=1, description="Last line to replace (inclusive)")],
            content: Annotated[str, "The new lines; empty to delete the range"],
        ) -> str:
            path = normalize_path(file_path)
            if end_line < start_line:
                raise FileSystemError(
                    f"end_line {end_line} is before start_line {start_line}; both are 1-based "
                    "and inclusive"
                )
            store = self._active()
            async with _path_locks.hold(store, path):
                old = await store.read(path)
                lines = _lines(old)
                if end_line > len(lines):
                    raise FileSystemError(
                        f"{path} has {_plural(len(lines), 'line')}, so lines "
                        f"{start_line}-{end_line} do not exist; read the file to see its line "
                        "numbers"
                    )
                # A file with \r\n line endings keeps them: _lines splits on \n alone, so
                # each of its lines ends with \r, and so must the new ones.
                crlf = "\r\n" in old and old.count("\n") == old.count("\r\n")
                new_lines = _lines(content.replace("\r\n", "\n"))
                if crlf:
                    new_lines = [line + "\r" for line in new_lines]
                lines[start_line - 1 : end_line] = new_lines
                # An empty file stays empty; otherwise keep the file's final-newline convention.
                text = _join(lines, trailing_newline=old.endswith("\n"))
                if crlf and text.endswith("\r"):
                    text = text[:-1]  # the last line, with no final newline, ends bare
                await self._write(store, path, text)
            _file_changed(path, "modified")
            return (
                f"Replaced lines {start_line}-{end_line} of {path} with "
                f"{_plural(len(new_lines), 'line')}; it now has {_plural(len(lines), 'line')}."
            )

        return StructuredTool.from_function(
            coroutine=edit_lines,
            name="edit_lines",
            description=(
                "Replace lines start_line to end_line (1-based, inclusive, as numbered by "
                "read_file) with content. Empty content deletes the lines."
            ),
        )

    def _move_file_tool(self) -> BaseTool:
        async def move_file(
            source_path: Annotated[str, "The file to move"],
            destination_path: Annotated[str, "Its new path; must not exist yet"],
        ) -> str:
            source, destination = normalize_path(source_path), normalize_path(destination_path)
            store = self._active()
            async with _path_locks.hold(store, source, destination):
                await store.move(source, destination)
            if source != destination:
                _file_changed(destination, "moved", previous_path=source)
            return f"Moved {source} to {destination}."

        return StructuredTool.from_function(
            coroutine=move_file,
            name="move_file",
            description="Move or rename a file. The destination must not exist yet.",
        )

    def _delete_file_tool(self) -> BaseTool:
        async def delete_file(file_path: FilePath) -> str:
            path = normalize_path(file_path)
            store = self._active()
            async with _path_locks.hold(store, path):
                await store.delete(path)
            _file_changed(path, "deleted")
            return f"Deleted {path}."

        return StructuredTool.from_function(
            coroutine=delete_file, name="delete_file", description="Delete a file."
        )

    def _glob_tool(self) -> BaseTool:
        async def glob(
            pattern: Annotated[
                str,
                "A glob such as **/*.md: * and ? stay within a directory, ** spans any number "
                "of directories, [abc] and {md,txt} choose. Relative to `path` unless it "
                "starts with /",
            ],
            path: Annotated[str, "The directory to search in; '/' is the root"] = "/",
        ) -> str:
            directory = normalize_path(path, directory=True)
            absolute = pattern.startswith("/")
            regex = _glob_regex(pattern)
            store = self._active()
            files = await store.list("/" if absolute else directory)
            skip = 1 if absolute or directory == "/" else len(directory) + 1
            found = [file for file in files if regex.search(file[skip:]) is not None]
            where = "" if absolute else f" in {directory}"
            if not found:
                return f"No file matches {pattern!r}{where}."
            shown = "\n".join(found[:_MAX_FILES_SHOWN])
            if len(found) > _MAX_FILES_SHOWN:
                shown += (
                    f"\n... ({len(found)} files match; only the first {_MAX_FILES_SHOWN} are "
                    "shown: narrow the pattern or the path)"
                )
            return shown

        return StructuredTool.from_function(
            coroutine=glob,
            name="glob",
            description=(
                "Find files whose paths match a glob pattern, e.g. **/*.py (every Python file), "
                "*.md (Markdown files directly in `path`), /docs/**/*.txt (absolute). Returns "
                "matching absolute paths, one per line, sorted."
            ),
        )

    def _grep_tool(self) -> BaseTool:
        async def grep(
            pattern: Annotated[str, "The text to search for (a regular expression if `regex`)"],
            path: Annotated[str, "A directory to search under, or one file; '/' is the root"] = "/",
            glob: Annotated[
                str | None,
                "Only files matching this glob, e.g. *.py (a pattern without / matches file "
                "names at any depth)",
            ] = None,
            output_mode: Annotated[
                Literal["files_with_matches", "content", "count"],
                "files_with_matches: the paths of matching files; content: the matching lines "
                "with their numbers; count: matching lines per file",
            ] = "files_with_matches",
            regex: Annotated[
                bool, "Read `pattern` as a regular expression (RE2 syntax) instead of literal text"
            ] = False,
            case_sensitive: Annotated[bool, "Whether letter case must match"] = True,
        ) -> str:
            if not pattern:
                raise FileSystemError("the pattern is empty; give the text to search for")
            compiled = _compile(pattern if regex else re2.escape(pattern), case_sensitive)
            target = normalize_path(path, directory=True)
            store = self._active()
            if target != "/" and await store.exists(target):
                files = [target]
            else:
                files = await store.list(target)
                if glob is not None:
                    files = _filter_glob(files, glob, target)
            hits, notes = await _grep_files(store, files, compiled)
            return _format_grep(pattern, target, hits, notes, output_mode)

        return StructuredTool.from_function(
            coroutine=grep,
            name="grep",
            description=(
                "Search the text of many files at once, line by line. `pattern` is literal "
                "text (parentheses, dots and the like match themselves) unless regex is true. "
                "Narrow the search with `path` and `glob`. output_mode: files_with_matches "
                "(default: matching paths), content (matching lines as 'NUMBER:<tab>line' "
                "under each path) or count (matching lines per file)."
            ),
        )

    # -- large tool results --------------------------------------------------------------------

    async def before_model(self, state: State) -> State | None:
        """Save the tool results that just arrived and are over ``max_tool_result_chars`` to
        files, and show the model their first lines and where to read on."""
        limit = self._max_result_chars
        messages = state.messages
        if limit is None or not messages or not isinstance(messages[-1], ToolMessage):
            return None
        first = len(messages)
        while first > 0 and isinstance(messages[first - 1], ToolMessage):
            first -= 1
        if first == 0 or not isinstance(messages[first - 1], AIMessage):
            return None
        new = list(messages)
        for index, message in enumerate(messages[first:], start=first):
            if (
                isinstance(message, ToolMessage)
                and isinstance(message.content, str)
                and len(message.content) > limit
            ):
                new[index] = await self._shortened(message, message.content, limit)
        if all(a is b for a, b in zip(new, messages, strict=True)):
            return None
        return state.replace(messages=new)

    async def _shortened(self, message: ToolMessage, text: str, limit: int) -> ToolMessage:
        lines = _lines(text)
        head_budget = min(2_000, limit // 2)
        head: list[str] = []
        used = 0
        for line in lines:
            piece = line if len(line) <= head_budget else line[:head_budget] + "..."
            if head and used + len(piece) + 1 > head_budget:
                break
            head.append(piece)
            used += len(piece) + 1
        preview = "\n".join(head)
        name = message.name or ""
        reason = ""
        if name in _READING_TOOLS:
            reason = "call the tool again asking for less (a narrower path, pattern or range)"
        elif "read_file" not in self.enabled_tools:
            reason = "the read_file tool is not available to read it in parts"
        else:
            path = f"{LARGE_TOOL_RESULTS_DIR}/{_safe_file_name(message.tool_call_id)}"
            try:
                store = self._active()
                async with _path_locks.hold(store, path):
                    existed = await store.exists(path)
                    await self._write(store, path, text)
            except FileSystemError as exc:
                reason = f"it could not be saved to a file ({exc})"
            else:
                self._hook_file_changed(path, "modified" if existed else "created")
                note = (
                    f"[This result was {len(text):,} characters ({_plural(len(lines), 'line')}), "
                    f"too long to show in full. It was saved to {path}: read it in parts with "
                    f"read_file(file_path={path!r}, offset=..., limit=...), or search it with "
                    f"find_in_file. Its first {_plural(len(head), 'line')}:]"
                )
                return _with_content(message, f"{note}\n{preview}")
        cut = text[:limit]
        content = (
            f"{cut}\n... [cut: this result was {len(text):,} characters, over the limit of "
            f"{limit:,}; {reason}]"
        )
        return _with_content(message, content)

    @staticmethod
    def _hook_file_changed(path: str, change: Literal["created", "modified"]) -> None:
        try:
            context = get_middleware_context()
        except SagentsError:
            return
        context.emit(FileChanged(path=path, change=change))


def _with_content(message: ToolMessage, content: str) -> ToolMessage:
    return message.model_copy(update={"content": content})
