"""Tests for ``sagents.cli``: ``sagents db upgrade``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sagents.cli import main
from sagents.persistence.sql import sqlite_url


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    return names


def test_db_upgrade_creates_the_tables_then_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data" / "app.db"
    assert main(["db", "upgrade", "--url", sqlite_url(path)]) == 0
    out = capsys.readouterr().out
    assert "upgraded" in out
    assert "empty -> 0003" in out
    assert "sagents_*" in out
    assert {"sagents_conversations", "sagents_agent_messages"} <= _tables(path)

    assert main(["db", "upgrade", "--url", sqlite_url(path)]) == 0
    assert "already at revision 0003; nothing to do" in capsys.readouterr().out


def test_db_upgrade_with_a_table_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.db"
    assert main(["db", "upgrade", "--url", sqlite_url(path), "--table-prefix", "chat_"]) == 0
    assert "chat_*" in capsys.readouterr().out
    assert "chat_display_messages" in _tables(path)


def test_relative_sqlite_urls_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["db", "upgrade", "--url", "sqlite+aiosqlite:///tmp.db"]) == 0
    assert "sqlite+aiosqlite:///tmp.db" in capsys.readouterr().out
    assert "sagents_conversations" in _tables(tmp_path / "tmp.db")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table-prefix", "Bad-Prefix"], "table prefix 'Bad-Prefix' is invalid"),
        (["--revision", "nope"], "cannot upgrade to 'nope'"),
    ],
)
def test_errors_are_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["db", "upgrade", "--url", sqlite_url(tmp_path / "x.db"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sagents: error: ")
    assert message in err
    assert "Traceback" not in err


def test_a_bad_url_is_reported_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--url", "nosuch+driver://me:s3cret@host/db"]) == 1
    err = capsys.readouterr().err
    assert "cannot create a database engine" in err
    assert "s3cret" not in err


def test_without_a_command_the_help_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "db" in capsys.readouterr().err
    assert main(["db"]) == 2
    assert "upgrade" in capsys.readouterr().err


def test_the_url_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["db", "upgrade"])
    assert exited.value.code == 2
    assert "--url" in capsys.readouterr().err
