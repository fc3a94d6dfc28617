"""Fixtures for the settlement core tests (pure: no sockets, no database, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from csms.settlement.tariff import Tariff, TimeOfUseSchedule, TouWindow


@pytest.fixture
def t0() -> datetime:
    """A fixed, timezone-aware session start."""
    return datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def tariff() -> Tariff:
    """Round numbers that make the rules easy to read: 100 sat/kWh, 100 Wh increments, a 5 sat fee."""
    return Tariff(
        name="test",
        price_msat_per_kwh=100_000,
        session_fee_msat=5_000,
        increment_wh=100,
        min_invoice_interval_s=60,
        allowance_wh=50,
        grace_s=30,
        stop_after_s=300,
        invoice_expiry_s=600,
    )


@pytest.fixture
def night_tariff() -> Tariff:
    """Cheap nights (22:00-06:00, crossing midnight) and a pricey evening peak, in Berlin local time."""
    return Tariff(
        name="tou",
        price_msat_per_kwh=100_000,
        schedule=TimeOfUseSchedule(
            zone="Europe/Berlin",
            windows=(
                TouWindow("22:00", "06:00", 50_000),
                TouWindow("17:00", "20:00", 200_000),
            ),
        ),
    )
