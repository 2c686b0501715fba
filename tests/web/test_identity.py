"""Identity cookies (signed with HMAC) and the demo's configuration checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sagents import ConfigurationError
from sagents.web import WebConfig
from sagents.web._identity import Signer, load_secret


def test_a_signed_identity_verifies_and_a_tampered_one_does_not() -> None:
    signer = Signer(b"k" * 32)
    identity = signer.new_identity()
    value = signer.sign(identity)
    assert signer.verify(value) == identity
    other = signer.new_identity()
    signature = value.partition(".")[2]
    assert signer.verify(f"{other}.{signature}") is None  # someone else's id, my signature
    assert signer.verify(value[:-1]) is None
    assert signer.verify(identity) is None
    assert signer.verify("") is None
    assert signer.verify(None) is None
    assert signer.verify("../../etc.x") is None
    assert Signer(b"j" * 32).verify(value) is None  # another server's key


def test_the_secret_is_created_once_and_private(tmp_path: Path) -> None:
    key = load_secret(tmp_path / "data")
    assert len(key) == 32
    assert load_secret(tmp_path / "data") == key
    mode = (tmp_path / "data" / "secret.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "gpt-4o"},
        {"grace_period": -1},
        {"inactivity_timeout": 0},
        {"max_frame_bytes": 0},
        {"model_delay": float("nan")},
        {"secret": b"short"},
    ],
)
def test_invalid_configuration_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="WebConfig"):
        WebConfig(**overrides)  # type: ignore[arg-type]


def test_configuration_defaults(tmp_path: Path) -> None:
    config = WebConfig(data_dir=tmp_path)
    assert config.grace_period == 5.0
    assert config.inactivity_timeout == 600.0
    assert config.url == f"sqlite+aiosqlite:///{tmp_path / 'sagents.db'}"
    assert WebConfig(database_url="postgresql+asyncpg://x/y").url == "postgresql+asyncpg://x/y"


def test_a_damaged_key_file_is_refused_never_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_bytes(b"")  # e.g. left by a crash of an older version
    with pytest.raises(ConfigurationError, match="delete it"):
        load_secret(data)


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    load_secret(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]
