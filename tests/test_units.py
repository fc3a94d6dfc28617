"""Settings, strict date-times, schema error codes, secrets: small pure pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from csms.cli import redact_url
from csms.ocpp.schemas import OcppDateTimeError, PayloadError, error_code, parse_datetime, validate
from csms.security import ApiKey, hash_password, load_or_create_api_key, verify_password
from csms.settings import SettingsError, load_settings


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSMS_PORT", "eighty")
    monkeypatch.setenv("CSMS_DATABASE_URL", "mysql://root@localhost/x")
    monkeypatch.setenv("CSMS_METER_SAMPLE_INTERVAL_S", "0")
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert (
        "CSMS_PORT" in message
        and "CSMS_DATABASE_URL" in message
        and "CSMS_METER_SAMPLE_INTERVAL_S" in message
    )


def test_settings_file_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "satwatt.env"
    config.write_text("CSMS_PORT=9000\nCSMS_ALLOW_UNKNOWN_CHARGERS=true\n")
    monkeypatch.setenv("CSMS_CONFIG_FILE", str(config))
    monkeypatch.setenv("CSMS_PORT", "9100")
    settings = load_settings()
    assert settings.port == 9100 and settings.allow_unknown_chargers is True
    assert settings.is_sqlite and settings.should_auto_migrate
    monkeypatch.setenv("CSMS_CONFIG_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(SettingsError, match="CSMS_CONFIG_FILE"):
        load_settings()


def test_api_key_setting_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSMS_API_KEY", "super-secret-key")
    settings = load_settings()
    assert "super-secret-key" not in repr(settings) and "super-secret-key" not in str(settings.model_dump())


def test_strict_datetimes() -> None:
    assert parse_datetime("2026-11-01T12:00:00.5+01:00").isoformat() == "2026-11-01T11:00:00.500000+00:00"
    for bad in ("not-a-date", "2026-02-30T00:00:00Z", "2026-11-01 12:00", "2026-11-01T25:00:00Z"):
        with pytest.raises(OcppDateTimeError):
            parse_datetime(bad)
    with pytest.raises(OcppDateTimeError, match="no time zone"):
        parse_datetime("2026-11-01T12:00:00")
    assert parse_datetime("2026-11-01T12:00:00", require_zone=False).tzinfo is not None


def test_error_codes_follow_each_versions_spelling() -> None:
    assert error_code("1.6", "format") == "FormationViolation"
    assert error_code("2.0.1", "format") == "FormatViolation"
    assert error_code("1.6", "occurrence") == "OccurenceConstraintViolation"
    assert error_code("2.0.1", "occurrence") == "OccurrenceConstraintViolation"
    with pytest.raises(PayloadError) as error:
        validate("2.0.1", "Heartbeat", {"unexpected": True})
    assert error.value.code == "FormatViolation"


def test_passwords_and_api_keys(tmp_path: Path) -> None:
    stored = hash_password("charger-secret")
    assert "charger-secret" not in stored
    assert verify_password("charger-secret", stored) and not verify_password("other", stored)
    assert not verify_password("x", "garbage")
    key, plain = load_or_create_api_key(tmp_path, None)
    assert plain is not None and key.matches(plain)
    assert plain not in (tmp_path / "api-key.sha256").read_text()
    again, shown = load_or_create_api_key(tmp_path, None)
    assert shown is None and again.matches(plain)
    assert ApiKey.from_plain("a").matches("a") and not ApiKey.from_plain("a").matches("b")


def test_database_url_redaction() -> None:
    assert (
        redact_url("postgresql+asyncpg://app:hunter2@db/satwatt") == "postgresql+asyncpg://app:***@db/satwatt"
    )
    assert redact_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
