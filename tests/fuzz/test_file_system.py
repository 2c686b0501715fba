"""Fuzzing the FileSystem tools: random paths, arguments and regular expressions.

Each example runs a few random tool calls (``await tool.ainvoke({...})``, as the agent loop
calls them) against a fresh store: the in-memory one, or a ``DiskFileStore`` writing through
(``debounce=0``) under a base directory inside an otherwise empty "jail" directory. Paths are
built from hostile segments — ``..``, ``.``, ``~``, drive letters, backslashes, NUL and other
control characters, lone surrogates, long multibyte names around the 255-byte limit, reserved
temporary-file names — or are random text, or are not strings at all; arguments get wrong types,
negative and huge numbers, missing and extra keys; ``find_in_file`` gets random regular
expressions. Some paths are ordinary, so that calls also succeed and reach the code behind
the checks (reads, edits and searches of real files).

After every call:

* the call returned text, or raised ``FileSystemError`` (``PathNotAllowed`` included) or a
  pydantic ``ValidationError`` — never another exception type;
* every file the store lists has a path in normal form, and reads back;
* on disk: nothing exists in the jail besides the base directory, the files under the base are
  exactly the store's files with the same content, and no temporary file or empty directory is
  left;

and after the example the store still works (a write, read and delete of a fresh file), and a
store reopened on the same base directory loads the same files.

Among the patterns are the inputs of two defects this campaign found (``test_found.py``):
patterns with lone surrogates, and huge ones (100,000 characters).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from langchain_core.tools import BaseTool
from pydantic import ValidationError

from sagents import FileSystemError
from sagents.middleware import DiskFileStore, FileSystem, MemoryFileStore, normalize_path
from tests.fuzz import fuzz_settings

# -- paths ---------------------------------------------------------------------------------------

#: Paths that are fine, so that some calls find files (and directories) to work on.
ORDINARY = ["/a.txt", "/notes/b.md", "notes/c.md", "/notes", "/", "/deep/er/d.txt", "e"]

_segments = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "...",
            "~",
            "~root",
            "C:",
            "c:",
            "Z:x",
            "a\\b",
            "\\",
            "..\\..",
            "\x00",
            "a\x00b",
            "\x1f",
            "\x7f",
            "\n",
            "\ud800",
            "\udfff",
            " ",
            "notes",
            ".sagents-abcdefgh.tmp",
            ".sagents-.tmp",
            "e\u0301",  # "é" decomposed: another name than "é" composed
            "\u202e",  # right-to-left override
        ]
    ),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.text(st.characters(categories=["Cc", "Cs", "Zl", "Zs", "Cf"]), min_size=1, max_size=3),
    # Names around the 255-byte limit of a segment: é is two bytes, 🦀 four.
    st.sampled_from([("é", 127), ("é", 128), ("🦀", 63), ("🦀", 64), ("a", 255), ("a", 256)]).map(
        lambda repeat: repeat[0] * repeat[1]
    ),
)
_prefixes = st.sampled_from(["", "/", "//", "./", "/./", "\\", "C:\\", "C:/", "~/", "/../"])
paths = st.one_of(
    st.sampled_from(ORDINARY),
    st.builds(
        lambda head, parts: head + "/".join(parts), _prefixes, st.lists(_segments, max_size=6)
    ),
    st.builds(
        lambda parts: "/" + "/".join(parts),
        st.lists(st.sampled_from(["a", "é" * 60]), min_size=1, max_size=40),
    ),  # long paths around 1,024 bytes
    st.text(max_size=30),
)
#: What may arrive where a path is expected.
path_args = paths | paths | st.none() | st.integers() | st.lists(st.text(max_size=3), max_size=2)

# -- other arguments -----------------------------------------------------------------------------

_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.text(max_size=3) | st.sampled_from(["\r\n", "\n", "\x00", "\u2028"])).map("".join),
    st.sampled_from(["", "\n", "a\nb\n", "a\r\nb\r\n", "\ud800", "x\udfffy"]),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["x", "é\n", "\n"]), st.sampled_from([2_500, 600_000])
    ),
)
numbers = st.one_of(
    st.integers(-3, 5),
    st.sampled_from([2**31, 2**63, 10**30, -(10**30)]),
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
    st.none(),
)
flags = st.booleans() | st.sampled_from(["yes", "true", "0", 2, None, []])

_regex_atoms = st.sampled_from(
    [
        "a",
        "é",
        "🦀",
        ".",
        "*",
        "+",
        "?",
        "*?",
        "|",
        "(",
        ")",
        "(?:",
        "(?P<n>",
        "(?P=n)",
        "(?i)",
        "(?s)",
        "(?=",
        "(?!",
        "(?<=",
        "(?<!",
        "[",
        "]",
        "[^",
        "-",
        "{",
        "}",
        "{2}",
        "{1000}",
        "{2,}",
        "{,3}",
        "^",
        "$",
        "\\",
        "\\1",
        "\\d",
        "\\w",
        "\\s",
        "\\b",
        "\\A",
        "\\Z",
        "\\z",
        "\\C",
        "\\p{Greek}",
        "\\pN",
        "\\x{10FFFF}",
        "\\u00e9",
        "\\x00",
        "\x00",
        "[[:alpha:]]",
        "\n",
    ]
)
patterns = st.one_of(
    st.lists(_regex_atoms, max_size=12).map("".join),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.text(st.characters() | st.characters(categories=["Cs"]), max_size=6),  # lone surrogates
    st.sampled_from(["^(a+)+$", "(a|aa)+$", "(x+x+)+y", "a{1000}{1000}", "((a{100}){100}){100}"]),
    # Long patterns: matching costs pattern size times text size.
    st.builds(lambda n: "(" * n + ")" * n, st.integers(1, 3_000)),
    st.builds(lambda n: "a" * n, st.sampled_from([1_000, 1_999, 2_000, 2_001, 100_000])),
)


def _arguments(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A tool's arguments: each field present or not, plus maybe an unexpected one."""
    return st.builds(
        lambda given, extra: {**given, **extra},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(
            st.sampled_from(["path", "file", "content", "x"]), st.integers(), max_size=1
        ),
    )


_content = _texts | st.none() | st.integers()
_path = st.sampled_from(ORDINARY) | paths  # a string, often an ordinary path
_line = st.integers(1, 4) | numbers
#: Calls with every required argument, of the right type: they reach the stores.
typed_calls = st.one_of(
    st.tuples(st.just("ls"), st.fixed_dictionaries({"path": _path})),
    st.tuples(
        st.just("read_file"),
        st.fixed_dictionaries(
            {"file_path": _path},
            optional={"offset": _line, "limit": _line, "char_offset": st.integers(0, 3_000)},
        ),
    ),
    st.tuples(
        st.just("write_file"), st.fixed_dictionaries({"file_path": _path, "content": _texts})
    ),
    st.tuples(
        st.just("edit_file"),
        st.fixed_dictionaries(
            {
                "file_path": _path,
                "old_string": st.sampled_from(["alpha", "\n", "line\n", "é", "b"]) | _texts,
                "new_string": _texts,
            },
            optional={"replace_all": st.booleans()},
        ),
    ),
    st.tuples(
        st.just("find_in_file"),
        st.fixed_dictionaries(
            {"file_path": _path, "pattern": patterns},
            optional={"case_sensitive": st.booleans(), "context_lines": _line},
        ),
    ),
    st.tuples(
        st.just("edit_lines"),
        st.fixed_dictionaries(
            {"file_path": _path, "start_line": _line, "end_line": _line, "content": _texts}
        ),
    ),
    st.tuples(
        st.just("move_file"),
        st.fixed_dictionaries({"source_path": _path, "destination_path": _path}),
    ),
    st.tuples(st.just("delete_file"), st.fixed_dictionaries({"file_path": _path})),
)
#: Calls with arguments missing, extra or of any type.
loose_calls = st.one_of(
    st.tuples(st.just("ls"), _arguments(path=path_args)),
    st.tuples(
        st.just("read_file"),
        _arguments(file_path=path_args, offset=numbers, limit=numbers, char_offset=numbers),
    ),
    st.tuples(st.just("write_file"), _arguments(file_path=path_args, content=_content)),
    st.tuples(
        st.just("edit_file"),
        _arguments(
            file_path=path_args, old_string=_content, new_string=_content, replace_all=flags
        ),
    ),
    st.tuples(
        st.just("find_in_file"),
        _arguments(
            file_path=path_args, pattern=patterns, case_sensitive=flags, context_lines=numbers
        ),
    ),
    st.tuples(
        st.just("edit_lines"),
        _arguments(file_path=path_args, start_line=numbers, end_line=numbers, content=_content),
    ),
    st.tuples(st.just("move_file"), _arguments(source_path=path_args, destination_path=path_args)),
    st.tuples(st.just("delete_file"), _arguments(file_path=path_args)),
)
calls = typed_calls | typed_calls | loose_calls

# -- the stores ----------------------------------------------------------------------------------

SEED = {"/a.txt": "alpha\nbeta\n", "/notes/b.md": "# b\r\nline\r\n", "/deep/er/d.txt": "é" * 3000}


class Bench:
    """Makes a fresh store (and its FileSystem tools) per example, and checks it."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self._numbers = itertools.count()
        self.jail: Path | None = None
        self.store: MemoryFileStore | DiskFileStore | None = None

    @property
    def base(self) -> Path:
        assert self.jail is not None
        return self.jail / "base"

    async def open(self) -> dict[str, BaseTool]:
        if self.kind == "memory":
            self.store = MemoryFileStore()
        else:
            self.jail = self.root / f"jail-{next(self._numbers)}"
            self.store = await DiskFileStore.open(self.base, debounce=0)
        for path, content in SEED.items():
            await self.store.write(path, content)
        return {tool.name: tool for tool in FileSystem(self.store).tools()}

    async def check(self) -> None:
        """The store's files are valid and readable, and on disk exactly mirrored."""
        assert self.store is not None
        files = await self.store.list("/")
        contents = {}
        for path in files:
            assert normalize_path(path) == path, path
            contents[path] = await self.store.read(path)
        if self.jail is None:
            return
        assert sorted(os.listdir(self.jail)) == ["base"], "something was written beside the base"
        assert all(p.name.startswith("jail-") for p in self.root.iterdir()), "or above it"
        on_disk: dict[str, str] = {}
        for directory, dirnames, filenames in os.walk(self.base):
            if directory != str(self.base):
                assert dirnames or filenames, f"an empty directory was left: {directory}"
            for name in filenames:
                full = os.path.join(directory, name)
                temporary = name.startswith(".sagents-") and name.endswith(".tmp")
                assert not temporary, f"a temporary file was left: {full}"
                virtual = "/" + os.path.relpath(full, self.base).replace(os.sep, "/")
                with open(full, "rb") as file:
                    on_disk[virtual] = file.read().decode("utf-8")
        assert on_disk == contents, "the disk and the store disagree"

    async def close(self) -> None:
        """Check the store still works, then close it (and reopen a disk store from disk)."""
        assert self.store is not None
        await self.store.write("/still/works.txt", "yes")
        assert await self.store.read("/still/works.txt") == "yes"
        await self.store.delete("/still/works.txt")
        files = {path: await self.store.read(path) for path in await self.store.list("/")}
        await self.store.aclose()
        if self.kind == "disk":
            reopened = await DiskFileStore.open(self.base, debounce=0)
            try:
                assert {p: await reopened.read(p) for p in await reopened.list("/")} == files
            finally:
                await reopened.aclose()


@pytest.fixture(params=["memory", "disk"])
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Bench:
    return Bench(request.param, tmp_path)


async def invoke(tool: BaseTool, arguments: dict[str, Any]) -> None:
    """Call ``tool``; only its documented errors may come out (anything else fails the test)."""
    refusal: FileSystemError | None = None
    try:
        result = await tool.ainvoke(arguments)
    except FileSystemError as exc:
        refusal = exc
    except ValidationError:
        event(f"{tool.name}: ValidationError")
        return
    if refusal is not None:
        assert str(refusal).strip(), "a FileSystemError without a message"
        event(f"{tool.name}: {type(refusal).__name__}")
    else:
        assert isinstance(result, str)
        event(f"{tool.name}: ok")


@given(batch=st.lists(calls, min_size=1, max_size=6), together=st.integers(0, 4))
@fuzz_settings(40)
async def test_random_calls_raise_only_filesystem_or_validation_errors(
    bench: Bench, batch: list[tuple[str, dict[str, Any]]], together: int
) -> None:
    tools = await bench.open()
    try:
        if together:
            for name, arguments in batch:
                await invoke(tools[name], arguments)
                await bench.check()
        else:
            # One example in five runs its calls concurrently, as one model turn's calls run.
            await asyncio.gather(*(invoke(tools[name], args) for name, args in batch))
            await bench.check()
    finally:
        await bench.close()


@given(pattern=patterns, case_sensitive=st.booleans(), path=st.sampled_from(sorted(SEED)))
@fuzz_settings(50)
async def test_random_patterns_are_searched_or_refused_with_a_filesystem_error(
    pattern: str, case_sensitive: bool, path: str
) -> None:
    store = MemoryFileStore()
    for name, content in SEED.items():
        await store.write(name, content)
    await store.write("/long.txt", "a" * 5_000 + "\n" + "ab" * 2_500 + "\n")
    find = next(t for t in FileSystem(store).tools() if t.name == "find_in_file")
    for target in (path, "/long.txt"):
        await invoke(
            find, {"file_path": target, "pattern": pattern, "case_sensitive": case_sensitive}
        )
