"""Settings from the environment: defaults, a .env file, clear errors, secrets that never print."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from service.access import ALL_SCOPES
from service.config import Secret, Settings, SettingsError
from tests.processes import command


def test_defaults_match_the_design() -> None:
    """With nothing set: embedded database, 127.0.0.1:8080, a one-day lifetime, 30 s sweeps, open endpoints."""
    s = Settings.from_env({}, env_file=None)
    assert (s.database_url, s.host, s.port, s.lifetime, s.sweep_interval) == (None, "127.0.0.1", 8080, 86400, 30.0)
    assert (s.api_keys, s.webhook_token, s.web_concurrency, s.log_level, s.log_format) == (
        (),
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
    assert [(k.name, k.key, k.scopes) for k in s.api_keys] == [
        ("key-1", Secret("k1"), ALL_SCOPES),
        ("key-2", Secret("k2"), ALL_SCOPES),
    ]
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
        ("DLR_EMBEDDED_SHARED_BUFFERS", "4G", "DLR_EMBEDDED_SHARED_BUFFERS must be auto, or a size"),
        ("DLR_EMBEDDED_SHARED_BUFFERS", "512mb", "DLR_EMBEDDED_SHARED_BUFFERS must be auto, or a size"),
        ("DLR_EMBEDDED_SHARED_BUFFERS", "8MB", "DLR_EMBEDDED_SHARED_BUFFERS must be auto, or a size"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, words: str) -> None:
    """A malformed value stops the service with a message that names the variable."""
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({name: value}, env_file=None)


def test_the_embedded_servers_buffers_are_auto_or_a_size() -> None:
    """Unset or `auto`: chosen from the machine at start (None here); otherwise megabytes, as PostgreSQL spells it."""
    read = [Settings.from_env(env, env_file=None).embedded_shared_buffers_mb for env in (
        {}, {"DLR_EMBEDDED_SHARED_BUFFERS": "auto"}, {"DLR_EMBEDDED_SHARED_BUFFERS": "512MB"},
        {"DLR_EMBEDDED_SHARED_BUFFERS": "4GB"},
    )]  # fmt: skip
    assert read == [None, None, 512, 4096]


def test_embedded_buffers_beside_a_database_url_stop_the_start() -> None:
    """The setting sizes only the embedded server: beside DATABASE_URL it would do nothing, so it is refused."""
    env = {"DATABASE_URL": "postgresql://u:p@db/x", "DLR_EMBEDDED_SHARED_BUFFERS": "4GB"}
    with pytest.raises(
        SettingsError, match=r"^DLR_EMBEDDED_SHARED_BUFFERS sizes the embedded server; with DATABASE_URL"
    ):
        Settings.from_env(env, env_file=None)
    assert Settings.from_env({**env, "DLR_EMBEDDED_SHARED_BUFFERS": "auto"}, env_file=None).database_url is not None


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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DLR_WEBHOOK_SECRET_TWILLIO", "tw-auth-token"),  # misspelt: Twilio's signature would go unchecked
        ("DLR_WEBHOOK_TOKEN_KANEL", "kannel-token"),
        ("DLR_WEBHOOK_TOKEN_", "bare-token"),
    ],
)
def test_a_per_dialect_variable_for_no_dialect_stops_the_start(name: str, value: str) -> None:
    """`DLR_WEBHOOK_SECRET_<X>` / `DLR_WEBHOOK_TOKEN_<X>` for a dialect that does not exist is an error
    naming the variable (and the dialects there are), never its value: a misspelling must not switch a
    sender's authentication off silently."""
    with pytest.raises(SettingsError, match=f"^{name} names no dialect; the dialects are generic, ") as raised:
        Settings.from_env({name: value}, env_file=None)
    assert value not in str(raised.value)


@pytest.mark.parametrize("value", [" , ", ",", "   "])
def test_api_keys_set_to_no_key_stop_the_start(value: str) -> None:
    """`DLR_API_KEYS` set to separators or spaces only is an error, not "no keys" (which would open the
    API to anyone); unset or empty it means an open API."""
    with pytest.raises(SettingsError, match="DLR_API_KEYS is set but holds no key"):
        Settings.from_env({"DLR_API_KEYS": value}, env_file=None)
    assert Settings.from_env({"DLR_API_KEYS": ""}, env_file=None).api_keys == ()


@pytest.mark.parametrize("command_name", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("DLR_WEBHOOK_SECRET_TWILLIO", "tw-auth-token", "DLR_WEBHOOK_SECRET_TWILLIO names no dialect"),
        ("DLR_API_KEYS", " , ", "DLR_API_KEYS is set but holds no key"),
    ],
)
def test_the_cli_refuses_to_start_on_a_silent_opening(
    tmp_path: Path, command_name: str, name: str, value: str, words: str
) -> None:
    """`dlr-tracker serve` and `migrate` exit with status 2 and a configuration error naming the variable
    (never its value) before touching a database, when a setting would silently open an endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLR_", "DATABASE_URL"))}
    env.update({"DLR_DATA_DIR": str(tmp_path / "data"), name: value})
    done = subprocess.run(
        [*command(), command_name], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"dlr-tracker: configuration error: {words}" in done.stderr
    if value.strip(" ,"):
        assert value not in done.stdout + done.stderr
    assert not (tmp_path / "data").exists()
