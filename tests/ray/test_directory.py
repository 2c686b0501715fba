"""The directory's bookkeeping, without Ray: placement and shared filesystem scopes."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from sagents import ConfigurationError
from sagents.ray._directory import Directory
from sagents.ray._host import files_key


def test_a_shared_scope_is_held_by_one_host_at_a_time() -> None:
    directory = Directory()
    directory.add_host("h1")
    directory.add_host("h2")
    assert directory.claim_files("'team'", "h1") is None
    assert directory.claim_files("'team'", "h1") is None  # again: still its own
    assert directory.claim_files("'team'", "h2") == "h1"
    directory.release_files("h2", "'team'")  # not its own: nothing changes
    assert directory.claim_files("'team'", "h2") == "h1"
    directory.release_files("h1", "'team'")
    assert directory.claim_files("'team'", "h2") is None


def test_a_dead_host_s_scopes_are_free_again() -> None:
    directory = Directory()
    directory.add_host("h1")
    directory.add_host("h2")
    assert directory.claim_files("'a'", "h1") is None
    assert directory.claim_files("'b'", "h1") is None
    directory.forget_host("h1")
    assert directory.claim_files("'a'", "h2") is None
    assert directory.claim_files("'b'", "h2") is None


def test_a_draining_host_keeps_its_scopes_until_it_releases_them() -> None:
    directory = Directory()
    directory.add_host("h1")
    directory.add_host("h2")
    assert directory.claim_files("'a'", "h1") is None
    directory.drain("h1")
    assert directory.claim_files("'a'", "h2") == "h1"  # its agents are still saving
    directory.release_files("h1")
    assert directory.claim_files("'a'", "h2") is None


def test_a_files_key_is_the_same_in_every_process() -> None:
    assert files_key("team") == "team"
    assert files_key(("tenant", 7)) == '§("tenant",7)'
    # A frozenset's repr follows the hash seed; its key does not.
    assert files_key(frozenset({"b", "a"})) == files_key(frozenset({"a", "b"}))
    with pytest.raises(ConfigurationError, match="same key in every process"):
        files_key(object())
