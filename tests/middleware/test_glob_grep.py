"""Tests for the ``glob`` and ``grep`` tools of sagents/middleware/_file_system.py (issue 15),
run over every kind of store: memory, disk (eager and lazy), persisted and mounted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool

from sagents._errors import FileSystemError, PathNotAllowed
from sagents.middleware import (
    DiskFileStore,
    FileStore,
    FileSystem,
    MemoryFileStore,
    Mount,
    MountedFileStore,
)
from sagents.middleware._file_search import _MAX_FILES_SHOWN, _MAX_MATCHES
from sagents.persistence import MemoryPersistence, PersistedFileStore

FILES = {
    "/README.md": "# Project\nSee docs.\n",
    "/src/app.py": "import os\n\ndef main():\n    print('hello (world)')\n",
    "/src/util.py": "def helper(x):\n    return x * 2\n# TODO: tests\n",
    "/src/deep/nested/mod.py": "TODO = 1\ntodo = 2\n",
    "/docs/guide.md": "Hello world\nTODO: write the guide\n",
    "/docs/notes.txt": "nothing to see\n",
}


@pytest.fixture(params=["memory", "disk", "disk-lazy", "persisted", "mounted"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    kind = request.param
    made: FileStore
    if kind == "memory":
        made = MemoryFileStore()
    elif kind.startswith("disk"):
        made = await DiskFileStore.open(tmp_path / "files", debounce=0, lazy=kind == "disk-lazy")
    elif kind == "persisted":
        made = await PersistedFileStore.open(MemoryPersistence(), None, "conv-1")
    else:
        # /docs in a store of its own: the tools see one tree all the same.
        made = MountedFileStore({"/": MemoryFileStore(), "/docs": MemoryFileStore()})
    for path, content in FILES.items():
        await made.write(path, content)
    if kind == "disk-lazy":  # reopen, so that the files are known by name only
        await made.aclose()
        made = await DiskFileStore.open(tmp_path / "files", debounce=0, lazy=True)
    try:
        yield made
    finally:
        await made.aclose()


def tools_over(store: FileStore) -> dict[str, BaseTool]:
    return {tool.name: tool for tool in FileSystem(store).tools()}


async def call(store: FileStore, name: str, **args: Any) -> str:
    result = await tools_over(store)[name].ainvoke(args)
    assert isinstance(result, str)
    return result


# -- glob ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.py", "/", ["/src/app.py", "/src/deep/nested/mod.py", "/src/util.py"]),
        ("*.md", "/", ["/README.md"]),  # * stays in its directory
        ("*.md", "/docs", ["/docs/guide.md"]),  # relative to `path`
        ("/docs/*", "/src", ["/docs/guide.md", "/docs/notes.txt"]),  # absolute wins
        ("docs/*.{md,txt}", "/", ["/docs/guide.md", "/docs/notes.txt"]),
        ("src/**", "/", ["/src/app.py", "/src/deep/nested/mod.py", "/src/util.py"]),
        ("src/**/mod.py", "/", ["/src/deep/nested/mod.py"]),
        ("src/[au]*.py", "/", ["/src/app.py", "/src/util.py"]),
        ("src/[!a]*.py", "/", ["/src/util.py"]),
        ("src/?til.py", "/", ["/src/util.py"]),
    ],
)
async def test_glob_matches_like_a_shell(
    store: FileStore, pattern: str, path: str, expected: list[str]
) -> None:
    result = await call(store, "glob", pattern=pattern, path=path)
    assert result.splitlines() == expected


async def test_glob_without_a_match_says_so(store: FileStore) -> None:
    assert await call(store, "glob", pattern="**/*.rs") == "No file matches '**/*.rs' in /."


async def test_glob_treats_special_characters_of_names_literally() -> None:
    store = MemoryFileStore()
    await store.write("/a+b (1).md", "x")
    await store.write("/aab (1).md", "x")
    assert await call(store, "glob", pattern="a+b (1).md") == "/a+b (1).md"


async def test_glob_output_is_bounded() -> None:
    store = MemoryFileStore(max_files=_MAX_FILES_SHOWN + 10)
    for i in range(_MAX_FILES_SHOWN + 5):
        await store.write(f"/f{i:05}.txt", "")
    lines = (await call(store, "glob", pattern="*.txt")).splitlines()
    assert len(lines) == _MAX_FILES_SHOWN + 1
    assert lines[-1].startswith(f"... ({_MAX_FILES_SHOWN + 5} files match")


async def test_glob_refuses_bad_input() -> None:
    store = MemoryFileStore()
    with pytest.raises(FileSystemError, match="empty"):
        await call(store, "glob", pattern="/")
    with pytest.raises(FileSystemError, match="limit is"):
        await call(store, "glob", pattern="*" * 2000)
    with pytest.raises(PathNotAllowed):
        await call(store, "glob", pattern="*", path="../etc")


# -- grep ----------------------------------------------------------------------------------


async def test_grep_lists_matching_files_by_default(store: FileStore) -> None:
    result = await call(store, "grep", pattern="TODO")
    assert result.splitlines() == [
        "3 files match 'TODO':",
        "/docs/guide.md",
        "/src/deep/nested/mod.py",
        "/src/util.py",
    ]


async def test_grep_content_shows_numbered_lines_under_each_file(store: FileStore) -> None:
    result = await call(store, "grep", pattern="TODO", path="/src", output_mode="content")
    assert result.splitlines() == [
        "2 matching lines in 2 files:",
        "/src/deep/nested/mod.py",
        "     1:\tTODO = 1",
        "/src/util.py",
        "     3:\t# TODO: tests",
    ]


async def test_grep_count_counts_matching_lines_per_file(store: FileStore) -> None:
    result = await call(
        store, "grep", pattern="todo", case_sensitive=False, output_mode="count", path="/src"
    )
    assert result.splitlines() == [
        "2 files match 'todo':",
        "/src/deep/nested/mod.py: 2",
        "/src/util.py: 1",
    ]


async def test_grep_pattern_is_literal_text_unless_regex(store: FileStore) -> None:
    literal = await call(store, "grep", pattern="print('hello (world)')")
    assert literal.splitlines()[1:] == ["/src/app.py"]
    assert await call(store, "grep", pattern="x * 2") != "No match for 'x * 2' in /."
    assert await call(store, "grep", pattern="h.lp") == "No match for 'h.lp' in /."
    regex = await call(store, "grep", pattern=r"^def \w+\(", regex=True)
    assert regex.splitlines()[1:] == ["/src/app.py", "/src/util.py"]


async def test_grep_narrows_by_glob_and_path(store: FileStore) -> None:
    by_name = await call(store, "grep", pattern="TODO", glob="*.py")
    assert by_name.splitlines()[1:] == ["/src/deep/nested/mod.py", "/src/util.py"]
    by_relative_path = await call(store, "grep", pattern="TODO", glob="deep/**", path="/src")
    assert by_relative_path.splitlines()[1:] == ["/src/deep/nested/mod.py"]
    one_file = await call(store, "grep", pattern="Hello", path="/docs/guide.md")
    assert one_file.splitlines()[1:] == ["/docs/guide.md"]


async def test_grep_content_output_is_bounded() -> None:
    store = MemoryFileStore()
    await store.write("/a.txt", "hit\n" * (_MAX_MATCHES + 20))
    await store.write("/b.txt", "hit\n")
    lines = (await call(store, "grep", pattern="hit", output_mode="content")).splitlines()
    assert lines[0] == f"{_MAX_MATCHES + 21} matching lines in 2 files:"
    assert sum(1 for line in lines if line.endswith(":\thit")) == _MAX_MATCHES
    assert lines[-1].startswith(f"... (only the first {_MAX_MATCHES} matching lines")


async def test_grep_cuts_long_lines() -> None:
    store = MemoryFileStore()
    await store.write("/min.js", "x" * 10_000 + "needle")
    result = await call(store, "grep", pattern="x", output_mode="content")
    assert len(result) < 3_000
    assert "line cut" in result


async def test_grep_refuses_patterns_re2_cannot_run_and_empty_ones() -> None:
    store = MemoryFileStore()
    await store.write("/a.txt", "aa")
    with pytest.raises(FileSystemError, match="RE2"):
        await call(store, "grep", pattern=r"(a)\1", regex=True)
    with pytest.raises(FileSystemError, match="empty"):
        await call(store, "grep", pattern="")
    # Linear time: a pattern that backtracks for minutes in Python's re returns at once.
    await store.write("/b.txt", "a" * 5_000 + "!")
    result = await call(store, "grep", pattern="^(a+)+$", regex=True)
    assert result.splitlines() == ["1 file matches '^(a+)+$':", "/a.txt"]


async def test_grep_and_glob_search_read_only_mounts_too() -> None:
    docs = MemoryFileStore()
    await docs.write("/manual.md", "How to restart the server\n")
    store = MountedFileStore(
        {"/scratch": MemoryFileStore(), "/docs": Mount(store=docs, read_only=True)}
    )
    await store.write("/scratch/todo.md", "restart later\n")
    assert (await call(store, "glob", pattern="**/*.md")).splitlines() == [
        "/docs/manual.md",
        "/scratch/todo.md",
    ]
    assert (await call(store, "grep", pattern="restart")).splitlines()[1:] == [
        "/docs/manual.md",
        "/scratch/todo.md",
    ]


async def test_glob_and_grep_can_be_disabled() -> None:
    names = [tool.name for tool in FileSystem(enabled_tools=["ls", "read_file"]).tools()]
    assert names == ["ls", "read_file"]
    prompt = FileSystem().system_prompt() or ""
    assert "glob: " in prompt
    assert "grep: " in prompt
