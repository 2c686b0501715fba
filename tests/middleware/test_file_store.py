"""Tests for sagents/middleware/_file_store.py: path rules, both stores, disk persistence."""

from __future__ import annotations

import asyncio
import logging
import os
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed
from sagents.middleware import DiskFileStore, FileStore, MemoryFileStore, normalize_path
from sagents.middleware._file_store import MAX_PATH_LENGTH

# -- normalize_path --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("notes/a.md", "/notes/a.md"),
        ("/notes/a.md", "/notes/a.md"),
        ("//notes///a.md", "/notes/a.md"),
        ("/./notes/./a.md", "/notes/a.md"),
        ("notes/a.md/", "/notes/a.md"),
        ("a", "/a"),
        ("/a/~b", "/a/~b"),  # only a *leading* "~" means a home directory
        ("/...", "/..."),  # three dots is an ordinary name
        ("/a..b", "/a..b"),
        ("/é/文件.txt", "/é/文件.txt"),
        ("/a b/c", "/a b/c"),
    ],
)
def test_normalize_path_accepts_and_normalises(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("../x", id="dotdot"),
        pytest.param("a/../../x", id="dotdot-nested"),
        pytest.param("/..", id="root-dotdot"),
        pytest.param("..", id="bare-dotdot"),
        pytest.param("a/..", id="trailing-dotdot"),
        pytest.param("a/b/../c", id="inner-dotdot"),
        pytest.param("~/x", id="home"),
        pytest.param("~root", id="home-user"),
        pytest.param("~", id="tilde"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("C:\\x", id="drive-backslash"),
        pytest.param("C:/x", id="drive-slash"),
        pytest.param("c:", id="drive-only"),
        pytest.param("/C:/x", id="drive-after-slash"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("a" * (MAX_PATH_LENGTH + 1), id="long-path"),
        pytest.param("/" * (MAX_PATH_LENGTH + 1), id="long-slashes"),
        pytest.param("a/" + "b" * 256, id="long-segment"),
        pytest.param("/" + "é" * 128, id="long-segment-in-bytes"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x1fb", id="unit-separator"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("a\x85b", id="c1-control"),
        pytest.param("a\ud800b", id="lone-surrogate"),
    ],
)
def test_normalize_path_rejects(bad: str) -> None:
    with pytest.raises(PathNotAllowed) as info:
        normalize_path(bad)
    message = str(info.value)
    assert "not allowed" in message
    assert "a valid path looks like" in message
    assert len(message) < 400  # a huge path is not echoed back whole


@pytest.mark.parametrize("bad", [None, b"/a", 3, Path("/a")])
def test_normalize_path_rejects_non_strings(bad: Any) -> None:
    with pytest.raises(PathNotAllowed, match="must be a string"):
        normalize_path(bad)


def test_normalize_path_messages_say_what_was_wrong() -> None:
    with pytest.raises(PathNotAllowed, match=r"'\.\.' segments"):
        normalize_path("../etc/passwd")
    with pytest.raises(PathNotAllowed, match="home directory"):
        normalize_path("~/x")
    with pytest.raises(PathNotAllowed, match="backslash"):
        normalize_path("a\\b")
    with pytest.raises(PathNotAllowed, match="drive letter"):
        normalize_path("C:/x")
    with pytest.raises(PathNotAllowed, match="control character"):
        normalize_path("a\x00b")


@pytest.mark.parametrize("root", ["/", "//", ".", "/./", "./."])
def test_root_is_a_directory_never_a_file(root: str) -> None:
    assert normalize_path(root, directory=True) == "/"
    with pytest.raises(PathNotAllowed, match="root directory"):
        normalize_path(root)


_SEGMENTS = st.sampled_from(
    ["a", "b.md", "..", ".", "", "...", "~", "~x", "C:", "c:x", "a\\b", "\x00", "\x1f", " ", "é"]
)
_PATHS = st.one_of(
    st.text(max_size=40),
    st.lists(_SEGMENTS, max_size=8).map("/".join),
    st.tuples(st.sampled_from(["", "/", "//", "./"]), st.lists(_SEGMENTS, max_size=8)).map(
        lambda parts: parts[0] + "/".join(parts[1])
    ),
)


def _check_normal_form(path: str) -> None:
    assert path.startswith("/")
    assert ".." not in path.split("/")
    assert "." not in path.split("/")
    assert "//" not in path
    assert "\\" not in path
    assert not any(unicodedata.category(char) == "Cc" for char in path)
    assert len(path) <= MAX_PATH_LENGTH


@given(_PATHS)
def test_normalize_path_property(raw: str) -> None:
    for directory in (False, True):
        try:
            path = normalize_path(raw, directory=directory)
        except PathNotAllowed:
            continue
        _check_normal_form(path)
        assert normalize_path(path, directory=directory) == path  # idempotent
        if path != "/":
            assert not path.endswith("/")


def test_disk_paths_stay_inside_base_dir(tmp_path: Path) -> None:
    store = asyncio.run(DiskFileStore.open(tmp_path / "base"))
    base = os.path.realpath(tmp_path / "base")

    @given(_PATHS)
    def check(raw: str) -> None:
        try:
            disk = store.disk_path(raw)
        except PathNotAllowed:
            return
        assert disk.startswith(base + os.sep)
        assert os.path.commonpath([base, os.path.realpath(disk)]) == base

    check()


# -- the FileStore contract, for every implementation ----------------------------------------

StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "disk-immediate", "disk-debounced"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A factory of stores (keyword limits pass through), closed after the test."""
    created: list[MemoryFileStore | DiskFileStore] = []

    async def make(**limits: int) -> MemoryFileStore | DiskFileStore:
        store: MemoryFileStore | DiskFileStore
        if request.param == "memory":
            store = MemoryFileStore(**limits)
        else:
            debounce = 0 if request.param == "disk-immediate" else 3600
            base = tmp_path / f"base{len(created)}"
            store = await DiskFileStore.open(base, debounce=debounce, **limits)
        created.append(store)
        return store

    yield make
    for store in created:
        await store.aclose()


@pytest.fixture
async def store(make_store: Any) -> FileStore:
    result: FileStore = await make_store()
    return result


async def test_write_then_read(store: FileStore) -> None:
    await store.write("notes/a.md", "hello\n")
    assert await store.read("/notes/a.md") == "hello\n"
    assert await store.read("//notes/./a.md") == "hello\n"
    assert await store.exists("/notes/a.md")
    await store.write("/notes/a.md", "again")
    assert await store.read("notes/a.md") == "again"


async def test_read_missing_file(store: FileStore) -> None:
    with pytest.raises(FileSystemError, match="no such file: /nope.md"):
        await store.read("/nope.md")
    assert not await store.exists("/nope.md")


async def test_a_directory_is_not_a_file(store: FileStore) -> None:
    await store.write("/d/x.md", "x")
    assert not await store.exists("/d")
    with pytest.raises(FileSystemError, match="is a directory"):
        await store.read("/d")
    with pytest.raises(FileSystemError, match="is a directory"):
        await store.write("/d", "x")
    with pytest.raises(FileSystemError, match="is a file"):
        await store.write("/d/x.md/y.md", "y")


async def test_delete(store: FileStore) -> None:
    await store.write("/a.md", "a")
    await store.delete("a.md")
    assert not await store.exists("/a.md")
    with pytest.raises(FileSystemError, match="no such file"):
        await store.delete("/a.md")


async def test_move(store: FileStore) -> None:
    await store.write("/a.md", "a")
    await store.write("/b.md", "b")
    await store.move("/a.md", "/dir/c.md")
    assert not await store.exists("/a.md")
    assert await store.read("/dir/c.md") == "a"
    with pytest.raises(FileSystemError, match="already exists"):
        await store.move("/dir/c.md", "/b.md")
    assert await store.read("/dir/c.md") == "a"
    with pytest.raises(FileSystemError, match="no such file"):
        await store.move("/missing.md", "/x.md")
    await store.move("/b.md", "b.md")  # onto itself: nothing to do
    assert await store.read("/b.md") == "b"


async def test_move_into_a_directory_freed_by_the_move(store: FileStore) -> None:
    await store.write("/a/b", "x")
    await store.move("/a/b", "/a")
    assert await store.read("/a") == "x"
    assert await store.list("/") == ["/a"]


async def test_failed_move_changes_nothing(store: FileStore) -> None:
    await store.write("/f", "file")
    await store.write("/src.md", "s")
    with pytest.raises(FileSystemError, match="is a file"):
        await store.move("/src.md", "/f/inner.md")
    assert await store.read("/src.md") == "s"
    assert await store.list() == ["/f", "/src.md"]


async def test_list(store: FileStore) -> None:
    for path in ["/b.md", "/a/x.md", "/a/y/z.md", "/ab.md"]:
        await store.write(path, "")
    assert await store.list() == ["/a/x.md", "/a/y/z.md", "/ab.md", "/b.md"]
    assert await store.list("/") == await store.list()
    assert await store.list("a") == ["/a/x.md", "/a/y/z.md"]
    assert await store.list("/a/y/") == ["/a/y/z.md"]
    assert await store.list("/missing") == []
    with pytest.raises(PathNotAllowed):
        await store.list("../")


@pytest.mark.parametrize("bad", ["../x", "/a/../../x", "~/x", "C:\\x", "a\x00b", ""])
async def test_every_operation_checks_paths(store: FileStore, bad: str) -> None:
    await store.write("/ok.md", "ok")
    with pytest.raises(PathNotAllowed):
        await store.read(bad)
    with pytest.raises(PathNotAllowed):
        await store.write(bad, "x")
    with pytest.raises(PathNotAllowed):
        await store.delete(bad)
    with pytest.raises(PathNotAllowed):
        await store.move("/ok.md", bad)
    with pytest.raises(PathNotAllowed):
        await store.move(bad, "/ok2.md")
    with pytest.raises(PathNotAllowed):
        await store.exists(bad)
    assert await store.list() == ["/ok.md"]


async def test_the_root_is_not_a_file(store: FileStore) -> None:
    with pytest.raises(PathNotAllowed, match="root directory"):
        await store.write("/", "x")


async def test_size_limit_counts_utf8_bytes(make_store: Any) -> None:
    store = await make_store(max_file_size=10)
    await store.write("/ok.md", "é" * 5)  # 10 bytes
    with pytest.raises(FileSystemError, match="11 bytes, over the limit of 10 bytes"):
        await store.write("/big.md", "é" * 5 + "x")
    assert not await store.exists("/big.md")
    with pytest.raises(FileSystemError, match="limit of 10 bytes"):
        await store.write("/ok.md", "x" * 11)
    assert await store.read("/ok.md") == "é" * 5


async def test_file_count_limit(make_store: Any) -> None:
    store = await make_store(max_files=2)
    await store.write("/a", "")
    await store.write("/b", "")
    await store.write("/a", "overwriting is fine")
    with pytest.raises(FileSystemError, match="2 files"):
        await store.write("/c", "")
    await store.delete("/a")
    await store.write("/c", "")


async def test_text_only(store: FileStore) -> None:
    with pytest.raises(FileSystemError, match="only text"):
        await store.write("/a", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(FileSystemError, match="not valid Unicode"):
        await store.write("/a", "\ud800")
    assert not await store.exists("/a")


async def test_closed_store_refuses_calls(store: FileStore) -> None:
    await store.write("/a", "a")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(FileSystemError, match="closed"):
        await store.read("/a")
    with pytest.raises(FileSystemError, match="closed"):
        await store.write("/b", "b")


@pytest.mark.parametrize("limits", [{"max_file_size": 0}, {"max_files": -1}])
def test_memory_store_limits_must_be_positive(limits: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryFileStore(**limits)


async def test_memory_store_is_an_async_context_manager() -> None:
    async with MemoryFileStore() as store:
        await store.write("/a", "a")
    with pytest.raises(FileSystemError, match="closed"):
        await store.read("/a")


# -- DiskFileStore -----------------------------------------------------------------------------


def _disk_files(base: Path) -> dict[str, str]:
    return {
        path.relative_to(base).as_posix(): path.read_text("utf-8")
        for path in base.rglob("*")
        if path.is_file()
    }


async def test_open_creates_the_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "deep" / "base"
    async with await DiskFileStore.open(base) as store:
        assert base.is_dir()
        assert store.base_dir == os.path.realpath(base)
        assert await store.list() == []


async def test_writes_reach_disk_only_on_flush(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=3600) as store:
        await store.write("/notes/a.md", "a\n")
        await store.write("/b.md", "b")
        assert _disk_files(tmp_path) == {}
        await store.flush()
        assert _disk_files(tmp_path) == {"notes/a.md": "a\n", "b.md": "b"}

        await store.delete("/notes/a.md")
        await store.move("/b.md", "/c/d.md")
        assert _disk_files(tmp_path) == {"notes/a.md": "a\n", "b.md": "b"}
        await store.flush()
        assert _disk_files(tmp_path) == {"c/d.md": "b"}
        assert not (tmp_path / "notes").exists()  # emptied directories are pruned


async def test_aclose_flushes_and_reopen_sees_the_files(tmp_path: Path) -> None:
    store = await DiskFileStore.open(tmp_path, debounce=3600)
    await store.write("/a.md", "alpha\r\nbeta")
    await store.write("/x/y/z.txt", "zé")
    await store.aclose()
    assert (tmp_path / "a.md").read_bytes() == b"alpha\r\nbeta"  # byte for byte, no translation
    assert (tmp_path / "x" / "y" / "z.txt").read_bytes() == "zé".encode()

    async with await DiskFileStore.open(tmp_path) as again:
        assert await again.list() == ["/a.md", "/x/y/z.txt"]
        assert await again.read("/a.md") == "alpha\r\nbeta"
        assert await again.read("/x/y/z.txt") == "zé"


async def test_debounce_zero_writes_before_returning(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=0) as store:
        await store.write("/a.md", "a")
        assert _disk_files(tmp_path) == {"a.md": "a"}
        await store.move("/a.md", "/b/a.md")
        assert _disk_files(tmp_path) == {"b/a.md": "a"}
        await store.delete("/b/a.md")
        assert _disk_files(tmp_path) == {}


async def test_a_file_can_replace_a_directory_in_one_flush(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=3600) as store:
        await store.write("/a/b", "inner")
        await store.flush()
        await store.delete("/a/b")
        await store.write("/a", "now a file")
        await store.flush()
        assert _disk_files(tmp_path) == {"a": "now a file"}


async def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=0) as store:
        for i in range(5):
            await store.write("/a.md", str(i))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


async def test_leftover_temporary_files_are_skipped_and_reserved(tmp_path: Path) -> None:
    (tmp_path / ".sagents-abc.tmp").write_text("half a write")
    async with await DiskFileStore.open(tmp_path) as store:
        assert await store.list() == []
        with pytest.raises(PathNotAllowed, match="reserved"):
            await store.write("/.sagents-x.tmp", "x")


async def test_timer_flushes_once_per_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The debounce timer is driven by hand: no sleeping, no timing assumptions."""
    loop = asyncio.get_running_loop()
    timers: list[tuple[float, Callable[[], None]]] = []

    class Handle:
        def cancel(self) -> None:
            pass

    def call_later(delay: float, callback: Callable[[], None], *args: Any) -> Handle:
        timers.append((delay, lambda: callback(*args)))
        return Handle()

    async with await DiskFileStore.open(tmp_path, debounce=7) as store:
        monkeypatch.setattr(loop, "call_later", call_later)
        await store.write("/a.md", "1")
        await store.write("/a.md", "2")
        await store.write("/b.md", "b")
        assert [delay for delay, _ in timers] == [7]  # one pending flush for the whole burst
        assert _disk_files(tmp_path) == {}

        timers[0][1]()  # the timer fires
        await _settle()
        assert _disk_files(tmp_path) == {"a.md": "2", "b.md": "b"}

        await store.write("/c.md", "c")
        assert len(timers) == 2  # a new burst, a new timer
        monkeypatch.undo()


async def test_failed_background_flush_keeps_changes_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    outside.mkdir()
    loop = asyncio.get_running_loop()
    timers: list[Callable[[], None]] = []

    class Handle:
        def cancel(self) -> None:
            pass

    def call_later(delay: float, callback: Callable[[], None], *args: Any) -> Handle:
        timers.append(lambda: callback(*args))
        return Handle()

    async with await DiskFileStore.open(base, debounce=7) as store:
        monkeypatch.setattr(loop, "call_later", call_later)
        await store.write("/d/x.md", "x")
        # A link planted after the write was accepted: the flush must still refuse it.
        os.symlink(outside, base / "d")
        with caplog.at_level(logging.WARNING, logger="sagents.middleware._file_store"):
            timers[0]()
            await _settle()
        assert "background flush" in caplog.text
        assert list(outside.iterdir()) == []

        with pytest.raises(PathNotAllowed, match="symbolic link"):
            await store.flush()
        assert list(outside.iterdir()) == []

        (base / "d").unlink()
        await store.flush()  # the change was kept and is written now
        assert _disk_files(base) == {"d/x.md": "x"}
        monkeypatch.undo()


async def _settle() -> None:
    """Wait for every other task (the store's flush) to finish."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    await asyncio.gather(*others)


async def test_concurrent_flushes_all_wait_for_the_disk(tmp_path: Path) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=3600) as store:
        for i in range(20):
            await store.write(f"/f{i}.md", str(i))
        await asyncio.gather(store.flush(), store.flush(), store.flush())
        assert len(_disk_files(tmp_path)) == 20


@pytest.mark.parametrize("debounce", [-1, float("nan"), float("inf")])
def test_debounce_must_be_a_finite_non_negative_number(tmp_path: Path, debounce: float) -> None:
    with pytest.raises(ConfigurationError, match="debounce"):
        DiskFileStore(tmp_path, debounce=debounce)


async def test_an_unopened_store_refuses_calls(tmp_path: Path) -> None:
    store = DiskFileStore(tmp_path)
    with pytest.raises(FileSystemError, match=r"DiskFileStore\.open"):
        await store.write("/a", "a")


# -- DiskFileStore and symbolic links ----------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("secret")
    return path


async def test_link_to_an_outside_file_is_refused_at_open(tmp_path: Path, outside: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    os.symlink(outside / "secret.txt", base / "link.txt")
    with pytest.raises(PathNotAllowed, match="outside the base directory"):
        await DiskFileStore.open(base)


async def test_link_to_an_outside_directory_is_refused_at_open(
    tmp_path: Path, outside: Path
) -> None:
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    os.symlink(outside, base / "sub" / "escape")
    with pytest.raises(PathNotAllowed, match="outside the base directory"):
        await DiskFileStore.open(base)


async def test_dangling_relative_link_out_is_refused_at_open(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    os.symlink("../../etc/passwd", base / "passwd")
    with pytest.raises(PathNotAllowed):
        await DiskFileStore.open(base)


async def test_writing_through_a_link_to_outside_is_refused(tmp_path: Path, outside: Path) -> None:
    base = tmp_path / "base"
    async with await DiskFileStore.open(base, debounce=0) as store:
        os.symlink(outside, base / "escape")
        os.symlink(outside / "secret.txt", base / "secret.txt")
        with pytest.raises(PathNotAllowed, match="symbolic link"):
            await store.write("/escape/new.txt", "pwned")
        with pytest.raises(PathNotAllowed, match="symbolic link"):
            await store.write("/secret.txt", "pwned")
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
        assert (outside / "secret.txt").read_text() == "secret"
        assert not await store.exists("/escape/new.txt")
        assert not await store.exists("/secret.txt")


async def test_moving_onto_a_link_is_refused(tmp_path: Path, outside: Path) -> None:
    base = tmp_path / "base"
    async with await DiskFileStore.open(base, debounce=0) as store:
        await store.write("/a.md", "a")
        os.symlink(outside, base / "escape")
        with pytest.raises(PathNotAllowed):
            await store.move("/a.md", "/escape/a.md")
        assert await store.read("/a.md") == "a"
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_link_inside_the_base_is_skipped_and_never_followed(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "real").mkdir(parents=True)
    (base / "real" / "a.md").write_text("a")
    os.symlink(base / "real", base / "alias")
    os.symlink(base / "real" / "a.md", base / "b.md")
    async with await DiskFileStore.open(base, debounce=0) as store:
        assert await store.list() == ["/real/a.md"]
        with pytest.raises(PathNotAllowed, match="inside the base directory"):
            await store.write("/alias/new.md", "x")
        with pytest.raises(PathNotAllowed, match="inside the base directory"):
            await store.write("/b.md", "x")
    assert (base / "real" / "a.md").read_text() == "a"
    assert not (base / "real" / "new.md").exists()


# -- DiskFileStore: files it cannot hold ---------------------------------------------------------


async def test_open_refuses_binary_files(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG\xff\xfe")
    with pytest.raises(FileSystemError, match="not UTF-8 text"):
        await DiskFileStore.open(tmp_path)


async def test_open_refuses_oversized_files(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 11)
    with pytest.raises(FileSystemError, match="over the limit of 10"):
        await DiskFileStore.open(tmp_path, max_file_size=10)


async def test_open_refuses_names_that_are_not_valid_paths(tmp_path: Path) -> None:
    (tmp_path / "a\\b").write_text("x")
    with pytest.raises(FileSystemError, match="not a valid path"):
        await DiskFileStore.open(tmp_path)


# -- paths the disk cannot hold, writes it refuses (issue 16 item 4) ---------------------------


def test_a_long_path_of_multibyte_characters_is_counted_in_bytes() -> None:
    # 1,024 characters, 4,048 bytes: the path of the issue.
    path = "/" + "/".join(["😀" * 63] * 16)
    assert len(path) == 1024
    assert len(path.encode()) == 4048
    with pytest.raises(PathNotAllowed, match="4048 bytes long in UTF-8, over 1024"):
        normalize_path(path)
    assert normalize_path("/" + "é" * 100) == "/" + "é" * 100


def _long_base(root: Path, size: int) -> Path:
    """A directory under ``root`` whose path is at least ``size`` bytes long."""
    base = root
    while len(os.fsencode(str(base))) < size:
        base = base / ("d" * 200)
    return base


async def test_paths_too_long_for_the_disk_are_refused_before_the_index(tmp_path: Path) -> None:
    base = _long_base(tmp_path, 3300)
    long_path = "/" + "/".join(["x" * 200] * 4)  # 804 bytes: fine alone, too long under base
    async with await DiskFileStore.open(base, debounce=3600) as store:
        await store.write("/before.md", "1")
        with pytest.raises(PathNotAllowed, match="bytes on disk, over this disk's limit"):
            await store.write(long_path, "x")
        assert not await store.exists(long_path)
        assert await store.list() == ["/before.md"]
        with pytest.raises(PathNotAllowed, match="over this disk's limit"):
            await store.move("/before.md", long_path)
        await store.write("/after.md", "2")
        await store.delete("/before.md")
        await store.flush()  # nothing is stuck in the batch
    assert _disk_files(base) == {"after.md": "2"}
    async with await DiskFileStore.open(base) as again:
        assert await again.list() == ["/after.md"]


def _refuse_writes_to(
    monkeypatch: pytest.MonkeyPatch, store: DiskFileStore, *names: str
) -> list[str]:
    """Make the disk refuse writes to files with these names; returns the refused targets."""
    refused: list[str] = []
    real = store._write_file

    def write_file(target: str, content: str) -> None:
        if os.path.basename(target) in names:
            refused.append(target)
            raise OSError(28, "No space left on device")
        real(target, content)

    monkeypatch.setattr(store, "_write_file", write_file)
    return refused


async def test_a_write_the_disk_refuses_fails_that_call_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=0) as store:
        await store.write("/bad.md", "old")
        _refuse_writes_to(monkeypatch, store, "bad.md", "new.md")
        with pytest.raises(FileSystemError, match="cannot save /bad.md.*No space left"):
            await store.write("/bad.md", "new")
        assert await store.read("/bad.md") == "old"  # the index did not keep what disk refused
        with pytest.raises(FileSystemError, match="cannot save /new.md"):
            await store.write("/new.md", "x")
        assert not await store.exists("/new.md")
        await store.write("/good.md", "fine")  # other files are not held back
        await store.flush()
        assert _disk_files(tmp_path) == {"bad.md": "old", "good.md": "fine"}
        assert await store.list() == ["/bad.md", "/good.md"]


async def test_a_move_the_disk_refuses_is_undone_in_memory_and_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=0) as store:
        await store.write("/a/b.md", "content")
        _refuse_writes_to(monkeypatch, store, "c.md")
        with pytest.raises(FileSystemError, match="cannot save /c.md"):
            await store.move("/a/b.md", "/c.md")
        assert await store.list() == ["/a/b.md"]
        assert _disk_files(tmp_path) == {"a/b.md": "content"}  # deleted by the move, put back


async def test_a_file_a_flush_cannot_write_never_blocks_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await DiskFileStore.open(tmp_path, debounce=3600) as store:
        for name in ("a", "bad", "c"):
            await store.write(f"/{name}.md", name)
        _refuse_writes_to(monkeypatch, store, "bad.md")
        with pytest.raises(FileSystemError, match="cannot save /bad.md"):
            await store.flush()
        assert _disk_files(tmp_path) == {"a.md": "a", "c.md": "c"}
        await store.write("/d.md", "d")
        with pytest.raises(FileSystemError, match="cannot save /bad.md"):
            await store.flush()  # still pending, still reported
        assert _disk_files(tmp_path) == {"a.md": "a", "c.md": "c", "d.md": "d"}
        monkeypatch.undo()
        await store.flush()
        assert _disk_files(tmp_path) == {"a.md": "a", "bad.md": "bad", "c.md": "c", "d.md": "d"}
