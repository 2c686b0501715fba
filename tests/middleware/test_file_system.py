"""Tests for sagents/middleware/_file_system.py: the FileSystem middleware and its tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from sagents._errors import FileSystemError, InvalidMiddleware, PathNotAllowed
from sagents.execution._middleware import Middleware
from sagents.execution._tools import tool_display_text
from sagents.middleware import DiskFileStore, MemoryFileStore
from sagents.middleware._file_system import FILE_SYSTEM_TOOLS, FileSystem

ALL_TOOLS = [
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
]


@pytest.fixture
def fs() -> FileSystem:
    return FileSystem()


@pytest.fixture
def tools(fs: FileSystem) -> dict[str, BaseTool]:
    return {tool.name: tool for tool in fs.tools()}


def schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON schema of the tool's parameters, as a model provider receives it."""
    parameters: dict[str, Any] = convert_to_openai_tool(tool)["function"]["parameters"]
    return parameters


async def call(tools: dict[str, BaseTool], name: str, **args: Any) -> str:
    result = await tools[name].ainvoke(args)
    assert isinstance(result, str)
    return result


# -- the middleware ----------------------------------------------------------------------------


def test_tools_have_the_specified_names_and_parameters(fs: FileSystem) -> None:
    tools = fs.tools()
    assert [tool.name for tool in tools] == ALL_TOOLS == list(FILE_SYSTEM_TOOLS)
    params = {tool.name: list(schema(tool)["properties"]) for tool in tools}
    assert params == {
        "ls": ["path"],
        "read_file": ["file_path", "offset", "limit", "char_offset"],
        "write_file": ["file_path", "content"],
        "edit_file": ["file_path", "old_string", "new_string", "replace_all"],
        "find_in_file": ["file_path", "pattern", "case_sensitive", "context_lines"],
        "edit_lines": ["file_path", "start_line", "end_line", "content"],
        "move_file": ["source_path", "destination_path"],
        "delete_file": ["file_path"],
        "glob": ["pattern", "path"],
        "grep": ["pattern", "path", "glob", "output_mode", "regex", "case_sensitive"],
    }
    for tool in tools:
        assert isinstance(tool, StructuredTool)
        assert tool.coroutine is not None
        assert tool.description


def test_schemas_carry_types_defaults_and_descriptions(tools: dict[str, BaseTool]) -> None:
    read = schema(tools["read_file"])
    assert read["required"] == ["file_path"]
    props = read["properties"]
    assert props["file_path"]["type"] == "string"
    assert props["file_path"]["description"]
    assert props["offset"] == {**props["offset"], "type": "integer", "default": 0, "minimum": 0}
    assert props["limit"]["default"] == 2000
    edit = schema(tools["edit_file"])["properties"]
    assert edit["replace_all"]["type"] == "boolean"
    assert edit["replace_all"]["default"] is False
    assert schema(tools["ls"])["properties"]["path"]["default"] == "/"


def test_middleware_basics(fs: FileSystem) -> None:
    assert isinstance(fs, Middleware)
    assert fs.key == "file_system"
    assert isinstance(fs.store, MemoryFileStore)
    assert fs.overrides("tools")
    assert fs.overrides("system_prompt")
    fs.validate()


def test_system_prompt_lists_the_enabled_tools() -> None:
    prompt = FileSystem().system_prompt()
    assert prompt is not None
    for name in ALL_TOOLS:
        assert f"- {name}:" in prompt
    restricted = FileSystem(enabled_tools=["ls", "read_file"]).system_prompt()
    assert restricted is not None
    assert "- read_file:" in restricted
    assert "write_file" not in restricted
    assert FileSystem(enabled_tools=[]).system_prompt() is None


def test_enabled_tools_restricts_the_tools() -> None:
    fs = FileSystem(enabled_tools={"read_file", "ls"})
    fs.validate()
    assert [tool.name for tool in fs.tools()] == ["ls", "read_file"]  # in the canonical order
    assert fs.enabled_tools == ("ls", "read_file")
    assert FileSystem(enabled_tools=()).tools() == []


def test_validate_rejects_unknown_tool_names() -> None:
    fs = FileSystem(enabled_tools=["ls", "rm", "cat"])
    with pytest.raises(InvalidMiddleware) as info:
        fs.validate()
    message = str(info.value)
    assert "cat, rm" in message
    for name in ALL_TOOLS:
        assert name in message


def test_validate_rejects_a_bare_string() -> None:
    fs = FileSystem(enabled_tools="ls")
    with pytest.raises(InvalidMiddleware, match=r"enabled_tools=\['ls'\]"):
        fs.validate()
    assert fs.tools() == []


def test_validate_rejects_a_bad_size_limit() -> None:
    fs = FileSystem(MemoryFileStore(), max_file_size=0)
    with pytest.raises(InvalidMiddleware, match="max_file_size"):
        fs.validate()


async def test_tool_descriptions_and_display_texts_replace_the_built_in_ones() -> None:
    fs = FileSystem(
        tool_descriptions={"write_file": "Save a document of the case file."},
        display_texts={"write_file": "Saving a document", "ls": "Looking at the files"},
    )
    fs.validate()
    tools = {tool.name: tool for tool in fs.tools()}
    assert tools["write_file"].description == "Save a document of the case file."
    assert tools["read_file"].description == FileSystem().tools()[1].description
    assert tool_display_text(tools["write_file"], "write_file") == "Saving a document"
    assert tool_display_text(tools["ls"], "ls") == "Looking at the files"
    assert tool_display_text(tools["read_file"], "read_file") == "Read file"
    # Each call of tools() builds its tools afresh: nothing leaks into another instance.
    assert tool_display_text(FileSystem().tools()[0], "ls") == "Ls"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tool_descriptions": {"rm": "Remove."}}, "tool_descriptions names an unknown tool 'rm'"),
        ({"display_texts": {"ls": "  "}}, r"display_texts\['ls'\] must be a non-empty string"),
    ],
)
def test_validate_rejects_texts_for_unknown_tools_or_empty_ones(
    options: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidMiddleware, match=match):
        FileSystem(**options).validate()


async def test_two_middleware_can_share_a_store() -> None:
    store = MemoryFileStore()
    one = {tool.name: tool for tool in FileSystem(store).tools()}
    two = {tool.name: tool for tool in FileSystem(store).tools()}
    await call(one, "write_file", file_path="/shared.md", content="hi")
    assert "hi" in await call(two, "read_file", file_path="/shared.md")


async def test_with_a_disk_store(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=3600) as store:
        tools = {tool.name: tool for tool in FileSystem(store).tools()}
        await call(tools, "write_file", file_path="notes/a.md", content="a\n")
        await store.flush()
        assert (tmp_path / "notes" / "a.md").read_text() == "a\n"
        with pytest.raises(PathNotAllowed):
            await call(tools, "write_file", file_path="../escape.md", content="x")
    assert not (tmp_path.parent / "escape.md").exists()


# -- ls ----------------------------------------------------------------------------------------


async def test_ls(tools: dict[str, BaseTool]) -> None:
    assert await call(tools, "ls") == "No files yet."
    for path in ["/b.md", "/notes/a.md", "/notes/deep/c.md", "/notes2.md"]:
        await call(tools, "write_file", file_path=path, content="")
    assert await call(tools, "ls") == "/b.md\n/notes/\n/notes2.md"
    assert await call(tools, "ls", path="/") == "/b.md\n/notes/\n/notes2.md"
    assert await call(tools, "ls", path="notes") == "/notes/a.md\n/notes/deep/"
    assert await call(tools, "ls", path="/notes/deep/") == "/notes/deep/c.md"
    assert await call(tools, "ls", path="/b.md") == "/b.md"


async def test_ls_errors(tools: dict[str, BaseTool]) -> None:
    with pytest.raises(FileSystemError, match="no such directory: /missing"):
        await call(tools, "ls", path="/missing")
    with pytest.raises(PathNotAllowed):
        await call(tools, "ls", path="..")


# -- read_file ---------------------------------------------------------------------------------


async def test_read_file_numbers_lines_like_cat_n(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.md", content="alpha\n\tbeta\n\ngamma")
    assert await call(tools, "read_file", file_path="a.md") == (
        "     1\talpha\n     2\t\tbeta\n     3\t\n     4\tgamma"
    )


async def test_read_file_offset_and_limit(tools: dict[str, BaseTool]) -> None:
    content = "".join(f"line {i}\n" for i in range(1, 11))
    await call(tools, "write_file", file_path="/a.md", content=content)
    page = await call(tools, "read_file", file_path="/a.md", offset=3, limit=2)
    lines = page.split("\n")
    assert lines[:2] == ["     4\tline 4", "     5\tline 5"]
    assert "truncated" in lines[2]
    assert "lines 4-5 of 10" in lines[2]
    assert "offset=5" in lines[2]
    tail = await call(tools, "read_file", file_path="/a.md", offset=8)
    assert tail == "     9\tline 9\n    10\tline 10"
    whole = await call(tools, "read_file", file_path="/a.md", offset=0, limit=10)
    assert "truncated" not in whole


async def test_read_file_large_numbers_and_long_lines(tools: dict[str, BaseTool]) -> None:
    content = "x\n" * 1_000_000 + "y" * 5000
    store = MemoryFileStore(max_file_size=10_000_000)
    tools = {tool.name: tool for tool in FileSystem(store, max_file_size=10_000_000).tools()}
    await store.write("/big.txt", content)
    last = await call(tools, "read_file", file_path="/big.txt", offset=999_999)
    assert last.startswith("1000000\tx\n1000001\t" + "y" * 2000)
    assert "line cut: characters 0-2000 of 5000" in last


async def test_read_file_errors(tools: dict[str, BaseTool]) -> None:
    with pytest.raises(FileSystemError, match="no such file: /nope.md"):
        await call(tools, "read_file", file_path="/nope.md")
    await call(tools, "write_file", file_path="/a.md", content="one\ntwo\n")
    with pytest.raises(
        FileSystemError, match="offset 2 is past the end of /a.md, which has 2 lines"
    ):
        await call(tools, "read_file", file_path="/a.md", offset=2)
    with pytest.raises(ValidationError):
        await call(tools, "read_file", file_path="/a.md", offset=-1)
    with pytest.raises(ValidationError):
        await call(tools, "read_file", file_path="/a.md", limit=0)
    with pytest.raises(PathNotAllowed):
        await call(tools, "read_file", file_path="/a/../../etc/passwd")


async def test_read_empty_file(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/empty.md", content="")
    assert await call(tools, "read_file", file_path="/empty.md") == "/empty.md is empty."


# -- write_file --------------------------------------------------------------------------------


async def test_write_file(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    assert await call(tools, "write_file", file_path="a.md", content="1\n2\n") == (
        "Created /a.md (2 lines)."
    )
    assert await call(tools, "write_file", file_path="/a.md", content="new") == (
        "Overwrote /a.md (1 line)."
    )
    assert await fs.store.read("/a.md") == "new"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/..", "~/x", "C:\\x", "a\x00b", ""])
async def test_write_file_rejects_escaping_paths(
    fs: FileSystem, tools: dict[str, BaseTool], bad: str
) -> None:
    with pytest.raises(PathNotAllowed):
        await call(tools, "write_file", file_path=bad, content="x")
    assert await fs.store.list() == []


async def test_write_file_size_limit() -> None:
    tools = {tool.name: tool for tool in FileSystem(max_file_size=10).tools()}
    await call(tools, "write_file", file_path="/ok.md", content="0123456789")
    with pytest.raises(FileSystemError, match="over the limit of 10 bytes"):
        await call(tools, "write_file", file_path="/big.md", content="é" * 6)


async def test_middleware_limit_applies_to_a_given_store() -> None:
    fs = FileSystem(MemoryFileStore(max_file_size=100), max_file_size=5)
    tools = {tool.name: tool for tool in fs.tools()}
    with pytest.raises(FileSystemError, match="limit of 5 bytes"):
        await call(tools, "write_file", file_path="/a.md", content="123456")


# -- edit_file ---------------------------------------------------------------------------------


async def test_edit_file_replaces_a_unique_match(
    fs: FileSystem, tools: dict[str, BaseTool]
) -> None:
    await call(tools, "write_file", file_path="/a.py", content="x = 1\ny = 2\n")
    result = await call(
        tools, "edit_file", file_path="/a.py", old_string="y = 2", new_string="y = 3"
    )
    assert result == "Replaced 1 occurrence in /a.py."
    assert await fs.store.read("/a.py") == "x = 1\ny = 3\n"


async def test_edit_file_missing_match(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.py", content="x = 1\n")
    with pytest.raises(FileSystemError, match="not found in /a.py"):
        await call(tools, "edit_file", file_path="/a.py", old_string="x=1", new_string="x = 2")
    assert await fs.store.read("/a.py") == "x = 1\n"


async def test_edit_file_ambiguous_match(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.py", content="a\na\nb a\n")
    with pytest.raises(FileSystemError, match="occurs 3 times") as info:
        await call(tools, "edit_file", file_path="/a.py", old_string="a", new_string="c")
    assert "replace_all" in str(info.value)
    assert "context" in str(info.value) or "surrounding" in str(info.value)
    assert await fs.store.read("/a.py") == "a\na\nb a\n"
    result = await call(
        tools, "edit_file", file_path="/a.py", old_string="a", new_string="c", replace_all=True
    )
    assert result == "Replaced 3 occurrences in /a.py."
    assert await fs.store.read("/a.py") == "c\nc\nb c\n"


async def test_edit_file_other_errors(tools: dict[str, BaseTool]) -> None:
    with pytest.raises(FileSystemError, match="no such file"):
        await call(tools, "edit_file", file_path="/nope", old_string="a", new_string="b")
    await call(tools, "write_file", file_path="/a", content="a")
    with pytest.raises(FileSystemError, match="old_string is empty"):
        await call(tools, "edit_file", file_path="/a", old_string="", new_string="b")
    with pytest.raises(FileSystemError, match="identical"):
        await call(tools, "edit_file", file_path="/a", old_string="a", new_string="a")


async def test_edit_file_respects_the_size_limit() -> None:
    fs = FileSystem(max_file_size=5)
    tools = {tool.name: tool for tool in fs.tools()}
    await call(tools, "write_file", file_path="/a", content="abc")
    with pytest.raises(FileSystemError, match="limit of 5 bytes"):
        await call(tools, "edit_file", file_path="/a", old_string="b", new_string="bbbbb")
    assert await fs.store.read("/a") == "abc"


# -- find_in_file ------------------------------------------------------------------------------

_TEXT = "alpha\nBeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\n"


async def test_find_in_file(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/g.txt", content=_TEXT)
    result = await call(tools, "find_in_file", file_path="/g.txt", pattern=r"^(zeta|eta)$")
    assert result == "2 matching lines in /g.txt:\n     6:\tzeta\n     7:\teta"


async def test_find_in_file_case(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/g.txt", content=_TEXT)
    assert "No match" in await call(tools, "find_in_file", file_path="/g.txt", pattern="beta")
    result = await call(
        tools, "find_in_file", file_path="/g.txt", pattern="beta", case_sensitive=False
    )
    assert result == "1 matching line in /g.txt:\n     2:\tBeta"


async def test_find_in_file_context(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/g.txt", content=_TEXT)
    result = await call(
        tools, "find_in_file", file_path="/g.txt", pattern="^(alpha|gamma|theta)$", context_lines=1
    )
    assert result.split("\n") == [
        "3 matching lines in /g.txt:",
        "     1:\talpha",
        "     2-\tBeta",
        "     3:\tgamma",
        "     4-\tdelta",
        "--",
        "     7-\teta",
        "     8:\ttheta",
    ]


async def test_find_in_file_caps_the_matches(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/many.txt", content="hit\n" * 600)
    result = await call(tools, "find_in_file", file_path="/many.txt", pattern="hit")
    assert result.startswith("600 matching lines in /many.txt (only the first 500")
    assert len(result.split("\n")) == 501


async def test_find_in_file_errors(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/g.txt", content=_TEXT)
    with pytest.raises(FileSystemError, match="invalid regular expression"):
        await call(tools, "find_in_file", file_path="/g.txt", pattern="(unclosed")
    with pytest.raises(FileSystemError, match="no such file"):
        await call(tools, "find_in_file", file_path="/nope", pattern="x")
    with pytest.raises(ValidationError):
        await call(tools, "find_in_file", file_path="/g.txt", pattern="x", context_lines=-1)


# -- edit_lines --------------------------------------------------------------------------------


async def test_edit_lines_replaces_a_range(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a", content="1\n2\n3\n4\n")
    result = await call(
        tools, "edit_lines", file_path="/a", start_line=2, end_line=3, content="two\nthree\n3.5"
    )
    assert result == "Replaced lines 2-3 of /a with 3 lines; it now has 5 lines."
    assert await fs.store.read("/a") == "1\ntwo\nthree\n3.5\n4\n"


async def test_edit_lines_deletes_and_keeps_the_final_newline_convention(
    fs: FileSystem, tools: dict[str, BaseTool]
) -> None:
    await call(tools, "write_file", file_path="/a", content="1\n2\n3")
    await call(tools, "edit_lines", file_path="/a", start_line=2, end_line=2, content="")
    assert await fs.store.read("/a") == "1\n3"
    await call(tools, "edit_lines", file_path="/a", start_line=2, end_line=2, content="three\n")
    assert await fs.store.read("/a") == "1\nthree"
    await call(tools, "edit_lines", file_path="/a", start_line=1, end_line=2, content="")
    assert await fs.store.read("/a") == ""


async def test_edit_lines_validates_the_range(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a", content="1\n2\n3\n")
    with pytest.raises(FileSystemError, match="has 3 lines"):
        await call(tools, "edit_lines", file_path="/a", start_line=3, end_line=4, content="x")
    with pytest.raises(FileSystemError, match="before start_line"):
        await call(tools, "edit_lines", file_path="/a", start_line=3, end_line=2, content="x")
    with pytest.raises(ValidationError):
        await call(tools, "edit_lines", file_path="/a", start_line=0, end_line=1, content="x")
    with pytest.raises(FileSystemError, match="no such file"):
        await call(tools, "edit_lines", file_path="/b", start_line=1, end_line=1, content="x")
    assert await fs.store.read("/a") == "1\n2\n3\n"


# -- move_file and delete_file -----------------------------------------------------------------


async def test_move_file(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.md", content="a")
    result = await call(tools, "move_file", source_path="a.md", destination_path="/old/a.md")
    assert result == "Moved /a.md to /old/a.md."
    assert await fs.store.list() == ["/old/a.md"]


async def test_move_file_errors(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.md", content="a")
    await call(tools, "write_file", file_path="/b.md", content="b")
    with pytest.raises(FileSystemError, match="already exists"):
        await call(tools, "move_file", source_path="/a.md", destination_path="/b.md")
    with pytest.raises(FileSystemError, match="no such file"):
        await call(tools, "move_file", source_path="/c.md", destination_path="/d.md")
    with pytest.raises(PathNotAllowed):
        await call(tools, "move_file", source_path="/a.md", destination_path="../a.md")
    assert await fs.store.list() == ["/a.md", "/b.md"]


async def test_delete_file(fs: FileSystem, tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.md", content="a")
    assert await call(tools, "delete_file", file_path="/a.md") == "Deleted /a.md."
    assert await fs.store.list() == []
    with pytest.raises(FileSystemError, match="no such file"):
        await call(tools, "delete_file", file_path="/a.md")
    with pytest.raises(PathNotAllowed):
        await call(tools, "delete_file", file_path="~/a.md")


# -- files belong to their agent (issue 11 item 2) ---------------------------------------------


def _run_tools(agent_id: str, fs: FileSystem, *calls: tuple[str, dict[str, Any]]) -> Any:
    """An agent (run inline, without a runtime) that makes ``calls`` in turn, then stops."""
    from sagents import Agent
    from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall

    script = [Reply(tool_calls=[ToolCall(name=name, args=args)]) for name, args in calls]
    return Agent(
        agent_id=agent_id,
        model=ScriptedChatModel(script=[*script, Reply(text="done")]),
        middleware=[fs],
        retry=RetryPolicy(max_attempts=1),
    )


async def test_inline_runs_of_two_agents_do_not_share_files() -> None:
    from langchain_core.messages import ToolMessage

    from sagents import Done, State

    fs = FileSystem()  # one instance, reused for two agents, as a factory would
    write = ("write_file", {"file_path": "/secret.txt", "content": "A's secret"})
    read = ("read_file", {"file_path": "/secret.txt"})
    first = await _run_tools("conv-A", fs, write, read).run(State())
    second = await _run_tools("conv-B", fs, read).run(State())
    again = await _run_tools("conv-A", fs, read).run(State())
    assert isinstance(first, Done)
    assert isinstance(second, Done)
    assert isinstance(again, Done)
    [seen_by_b] = [m for m in second.state.messages if isinstance(m, ToolMessage)]
    assert seen_by_b.status == "error"
    assert "no such file: /secret.txt" in str(seen_by_b.content)
    [seen_by_a] = [m for m in again.state.messages if isinstance(m, ToolMessage)]
    assert "A's secret" in str(seen_by_a.content)  # an agent keeps its own files across runs
    assert await fs.store.list() == []  # and nothing went to the instance's own store


def test_a_middleware_with_its_own_store_needs_none_from_the_runtime() -> None:
    assert FileSystem().needs_file_store()
    assert not FileSystem(MemoryFileStore()).needs_file_store()
    assert not FileSystem(enabled_tools=[]).needs_file_store()


# -- hardening (issue 16) ----------------------------------------------------------------------


async def test_catastrophic_regex_completes(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.txt", content="a" * 25 + "!\n")
    result = await call(tools, "find_in_file", file_path="/a.txt", pattern="^(a+)+$")
    assert result == "No match for '^(a+)+$' in /a.txt."
    huge = "a" * 200_000 + "!"
    await call(tools, "write_file", file_path="/b.txt", content=huge)
    result = await call(tools, "find_in_file", file_path="/b.txt", pattern="(a|aa)+$")
    assert result.startswith("No match")


@pytest.mark.parametrize(
    ("pattern", "feature"),
    [(r"(a)\1", "backreference"), ("(?=a)a", "lookahead"), ("(?<!b)a", "lookbehind")],
)
async def test_patterns_re2_cannot_run_are_refused_with_a_clear_message(
    tools: dict[str, BaseTool], pattern: str, feature: str
) -> None:
    await call(tools, "write_file", file_path="/a.txt", content="aa\n")
    with pytest.raises(FileSystemError) as info:
        await call(tools, "find_in_file", file_path="/a.txt", pattern=pattern)
    message = str(info.value)
    assert message.startswith(f"invalid regular expression {pattern!r}"), feature
    assert "RE2" in message
    assert "backreferences" in message
    assert "lookaround" in message


async def test_find_in_file_keeps_python_syntax_it_can_run(tools: dict[str, BaseTool]) -> None:
    await call(tools, "write_file", file_path="/a.py", content="def f(x):\n    return x\n")
    result = await call(
        tools, "find_in_file", file_path="/a.py", pattern=r"(?P<kw>def|return)\s+\w+"
    )
    assert result.startswith("2 matching lines")
    result = await call(
        tools, "find_in_file", file_path="/a.py", pattern="DEF", case_sensitive=False
    )
    assert result == "1 matching line in /a.py:\n     1:\tdef f(x):"


async def test_edit_file_replace_all_refuses_an_oversized_result_before_building_it() -> None:
    import tracemalloc

    fs = FileSystem(max_file_size=1_000_000)
    tools = {tool.name: tool for tool in fs.tools()}
    await call(tools, "write_file", file_path="/a.txt", content="a" * 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(FileSystemError, match="would be 500000000 bytes"):
            await call(
                tools,
                "edit_file",
                file_path="/a.txt",
                old_string="a",
                new_string="b" * 5000,
                replace_all=True,
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # building the result would take 500 MB
    assert await fs.store.read("/a.txt") == "a" * 100_000
    multibyte = await call(
        tools, "edit_file", file_path="/a.txt", old_string="a", new_string="é", replace_all=True
    )
    assert multibyte == "Replaced 100000 occurrences in /a.txt."  # 200,000 bytes: allowed


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_concurrent_edits_of_one_file_both_land(tmp_path: Path, kind: str) -> None:
    import asyncio

    store: MemoryFileStore | DiskFileStore
    if kind == "memory":
        store = MemoryFileStore()
    else:
        store = await DiskFileStore.open(tmp_path, debounce=0)
    async with store:
        tools = {tool.name: tool for tool in FileSystem(store).tools()}
        await call(tools, "write_file", file_path="/a.txt", content="one\ntwo\nthree\nfour\n")
        await asyncio.gather(
            call(tools, "edit_file", file_path="/a.txt", old_string="one", new_string="ONE"),
            call(tools, "edit_file", file_path="/a.txt", old_string="two", new_string="TWO"),
            call(tools, "edit_lines", file_path="/a.txt", start_line=4, end_line=4, content="4"),
        )
        assert await store.read("/a.txt") == "ONE\nTWO\nthree\n4\n"
    if kind == "disk":
        assert (tmp_path / "a.txt").read_text() == "ONE\nTWO\nthree\n4\n"


async def test_long_lines_can_be_read_to_the_end_with_char_offset(
    tools: dict[str, BaseTool],
) -> None:
    line = "".join(str(i % 10) for i in range(4500))  # one line of JSON, say
    await call(tools, "write_file", file_path="/data.json", content=f"first\n{line}\nlast\n")
    first = await call(tools, "read_file", file_path="/data.json")
    assert f"     2\t{line[:2000]}... [line cut: characters 0-2000 of 4500" in first
    assert "read_file(offset=1, limit=1, char_offset=2000)" in first
    assert "     3\tlast" in first
    pieces = [line[:2000]]
    offset = 2000
    while True:
        page = await call(
            tools, "read_file", file_path="/data.json", offset=1, limit=1, char_offset=offset
        )
        body = page.split("\t", 1)[1]
        pieces.append(body[: min(2000, 4500 - offset)])
        if "read on with" not in page:
            assert f"[characters {offset}-4500 of 4500]" in page
            break
        offset += 2000
    assert "".join(pieces) == line
    description = tools["read_file"].description
    assert "2000 characters is cut" in description
    assert "char_offset" in description


async def test_edit_file_matches_a_crlf_file_and_keeps_its_line_endings(
    fs: FileSystem, tools: dict[str, BaseTool]
) -> None:
    await fs.store.write("/w.txt", "alpha\r\nbeta\r\ngamma\r\n")
    result = await call(
        tools,
        "edit_file",
        file_path="/w.txt",
        old_string="alpha\nbeta\n",
        new_string="ALPHA\nBETA\nBETA2\n",
    )
    assert result == "Replaced 1 occurrence in /w.txt."
    assert await fs.store.read("/w.txt") == "ALPHA\r\nBETA\r\nBETA2\r\ngamma\r\n"
    # The reverse: \r\n sent for a file with \n line endings.
    await fs.store.write("/u.txt", "one\ntwo\n")
    await call(tools, "edit_file", file_path="/u.txt", old_string="one\r\ntwo", new_string="1\r\n2")
    assert await fs.store.read("/u.txt") == "1\n2\n"
    # edit_lines keeps them too, also on a last line without a final newline.
    await fs.store.write("/v.txt", "a\r\nb\r\nc")
    await call(tools, "edit_lines", file_path="/v.txt", start_line=2, end_line=3, content="x\ny")
    assert await fs.store.read("/v.txt") == "a\r\nx\r\ny"
