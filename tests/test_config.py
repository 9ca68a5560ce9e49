"""Settings from the environment: defaults, a .env file, clear errors, secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Secret, Settings, SettingsError


def test_defaults_match_the_design() -> None:
    """With nothing set: embedded database, 127.0.0.1:8080, a one-day lifetime, 30 s sweeps, open endpoints."""
    s = Settings.from_env({}, env_file=None)
    assert (s.database_url, s.host, s.port, s.lifetime, s.sweep_interval) == (None, "127.0.0.1", 8080, 86400, 30.0)
    assert (s.api_keys, s.webhook_token, s.web_concurrency, s.log_level, s.log_format) == (
        frozenset(),
        None,
        1,
        "info",
        "json",
    )
    assert s.data_dir == Path(".dlr-tracker")


def test_values_tokens_and_secrets_are_read() -> None:
    """Every documented variable is read; per-dialect tokens and secrets are keyed by lower-cased dialect."""
    env = {
        "DATABASE_URL": "postgresql://u:p@db/x",
        "PORT": "9000",
        "DLR_API_KEYS": " k1, k2 ,",
        "DLR_WEBHOOK_TOKEN": "t",
        "DLR_WEBHOOK_TOKEN_KANNEL": "tk",
        "DLR_WEBHOOK_SECRET_TWILIO": "tw",
        "DLR_PUBLIC_URL": "https://dlr.example.com/",
        "LOG_LEVEL": "DEBUG",
        "DLR_GROUP_COMMIT": "off",
    }
    s = Settings.from_env(env, env_file=None)
    assert s.port == 9000
    assert s.api_keys == frozenset({Secret("k1"), Secret("k2")})
    assert s.token_for("kannel") == Secret("tk")
    assert s.token_for("generic") == Secret("t")
    assert s.webhook_secrets == {"twilio": Secret("tw")}
    assert s.public_url == "https://dlr.example.com"
    assert (s.log_level, s.group_commit) == ("debug", False)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PORT", "eighty", "PORT must be an integer"),
        ("PORT", "70000", "PORT must be between"),
        ("DLR_LIFETIME", "0", "DLR_LIFETIME must be between"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of"),
        ("DLR_WEBHOOK_SECRET", "not-a-whsec", "DLR_WEBHOOK_SECRET must be a Standard Webhooks secret"),
        ("DLR_PUBLIC_URL", "dlr.example.com", "DLR_PUBLIC_URL must start with"),
        ("DLR_GROUP_COMMIT", "maybe", "DLR_GROUP_COMMIT must be one of"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, words: str) -> None:
    """A malformed value stops the service with a message that names the variable."""
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({name: value}, env_file=None)


def test_env_file_adds_to_the_environment(tmp_path: Path) -> None:
    """A .env file supplies what the environment lacks; the environment wins where both set a value."""
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9100\nDLR_WEBHOOK_TOKEN_JASMIN=fromfile\nHOST=0.0.0.0\n")
    s = Settings.from_env({"HOST": "127.0.0.2"}, env_file=env_file)
    assert (s.port, s.host) == (9100, "127.0.0.2")
    assert s.token_for("jasmin") == Secret("fromfile")


def test_secrets_never_print() -> None:
    """repr and str of settings show masks, never a token, key or database password."""
    s = Settings.from_env(
        {"DATABASE_URL": "postgresql://u:hunter2@db/x", "DLR_API_KEYS": "key-123", "DLR_WEBHOOK_TOKEN": "tok-456"},
        env_file=None,
    )
    shown = repr(s) + str(s)
    for secret in ("hunter2", "key-123", "tok-456"):
        assert secret not in shown
