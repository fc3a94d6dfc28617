from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from csms.settlement.rounding import energy_wh_at_power, msat_for_energy, seconds_to_deliver
from csms.settlement.tariff import (
    DEFAULT_TARIFF,
    Tariff,
    TariffError,
    TimeOfUseSchedule,
    TouWindow,
    increment_wh_for,
    price_at,
)

# -- rounding ------------------------------------------------------------------------------------------


def test_money_rounds_down_toward_the_buyer() -> None:
    assert msat_for_energy(100, 100_000) == 10_000
    assert msat_for_energy(1, 1_999) == 1  # 1.999 msat -> 1
    assert msat_for_energy(0, 123_456) == 0
    with pytest.raises(ValueError):
        msat_for_energy(-1, 1000)


def test_energy_estimates_round_up_and_time_to_exhaustion_rounds_down() -> None:
    assert energy_wh_at_power(7_000, 60) == 117  # 116.67 Wh -> 117
    assert energy_wh_at_power(0, 60) == 0
    assert energy_wh_at_power(-5, 60) == 0
    assert seconds_to_deliver(117, 7_000) == 60  # 60.17 s -> 60


# -- defaults and validation --------------------------------------------------------------------------


def test_defaults() -> None:
    assert DEFAULT_TARIFF.price_msat_per_kwh == 100_000
    assert DEFAULT_TARIFF.increment_wh == 100
    assert DEFAULT_TARIFF.min_invoice_interval_s == 60
    assert DEFAULT_TARIFF.allowance_wh == 50
    assert DEFAULT_TARIFF.grace_s == 30
    assert DEFAULT_TARIFF.stop_after_s == 300
    assert DEFAULT_TARIFF.invoice_expiry_s == 600
    assert DEFAULT_TARIFF.schedule is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price_msat_per_kwh": -1}, "price_msat_per_kwh"),
        ({"price_msat_per_kwh": 0}, "price_msat_per_kwh"),
        ({"session_fee_msat": -1}, "session_fee_msat"),
        ({"increment_wh": 0}, "increment_wh"),
        ({"increment_wh": -100}, "increment_wh"),
        ({"min_invoice_interval_s": -1}, "min_invoice_interval_s"),
        ({"allowance_wh": -1}, "allowance_wh"),
        ({"grace_s": -1}, "grace_s"),
        ({"stop_after_s": -1}, "stop_after_s"),
        ({"invoice_expiry_s": 0}, "invoice_expiry_s"),
        ({"increment_wh": 1.5}, "increment_wh"),
        ({"allowance_wh": True}, "allowance_wh"),
        ({"grace_s": "30"}, "grace_s"),
        ({"name": ""}, "name"),
        # 1 Wh at 999 msat/kWh would be a 0-msat invoice
        ({"increment_wh": 1, "price_msat_per_kwh": 999}, "price_msat_per_kwh"),
    ],
)
def test_bad_values_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TariffError) as caught:
        DEFAULT_TARIFF.with_changes(changes)
    assert caught.value.field == field
    assert field in str(caught.value)


def _schedule(zone: str, *windows: dict[str, Any]) -> dict[str, Any]:
    return {"schedule": {"zone": zone, "windows": list(windows)}}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (_schedule("Mars/Olympus_Mons"), "schedule.zone"),
        (_schedule(""), "schedule.zone"),
        (_schedule("../../etc/passwd"), "schedule.zone"),
        (
            _schedule("UTC", {"start": "25:00", "end": "06:00", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].start",
        ),
        (
            _schedule("UTC", {"start": "7:00", "end": "08:00", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].start",
        ),
        (
            _schedule("UTC", {"start": "24:00", "end": "08:00", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].start",
        ),
        (
            _schedule("UTC", {"start": "07:00", "end": "07:60", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].end",
        ),
        (
            _schedule("UTC", {"start": "07:00", "end": "07:00", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].end",
        ),
        (
            _schedule("UTC", {"start": "00:00", "end": "24:00", "price_msat_per_kwh": 1000}),
            "schedule.windows[0].end",
        ),
        (
            _schedule("UTC", {"start": "07:00", "end": "08:00", "price_msat_per_kwh": -5}),
            "schedule.windows[0].price_msat_per_kwh",
        ),
        (_schedule("UTC", {"start": "07:00", "end": "08:00"}), "schedule.windows[0].price_msat_per_kwh"),
        (
            _schedule("UTC", {"start": "07:00", "end": "08:00", "price_msat_per_kwh": 1000, "x": 1}),
            "schedule.windows[0].x",
        ),
        (
            _schedule(
                "UTC",
                {"start": "07:00", "end": "09:00", "price_msat_per_kwh": 1000},
                {"start": "08:59", "end": "10:00", "price_msat_per_kwh": 2000},
            ),
            "schedule.windows[1]",
        ),
        (  # a midnight-crossing window overlapping an early-morning one
            _schedule(
                "UTC",
                {"start": "22:00", "end": "06:00", "price_msat_per_kwh": 1000},
                {"start": "05:00", "end": "07:00", "price_msat_per_kwh": 2000},
            ),
            "schedule.windows[1]",
        ),
        (  # two midnight-crossing windows always overlap
            _schedule(
                "UTC",
                {"start": "23:00", "end": "01:00", "price_msat_per_kwh": 1000},
                {"start": "23:30", "end": "00:30", "price_msat_per_kwh": 2000},
            ),
            "schedule.windows[1]",
        ),
        ({"schedule": {"windows": []}}, "schedule.zone"),
        ({"schedule": {"zone": "UTC", "windows": "nope"}}, "schedule.windows"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_schedules_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TariffError) as caught:
        DEFAULT_TARIFF.with_changes(changes)
    assert caught.value.field == field


def test_adjacent_windows_do_not_overlap() -> None:
    tariff = DEFAULT_TARIFF.with_changes(
        _schedule(
            "UTC",
            {"start": "22:00", "end": "06:00", "price_msat_per_kwh": 50_000},
            {"start": "06:00", "end": "22:00", "price_msat_per_kwh": 150_000},
        )
    )
    assert tariff.schedule is not None and len(tariff.schedule.windows) == 2


def test_constructor_validates_too() -> None:
    with pytest.raises(TariffError) as caught:
        Tariff(increment_wh=0)
    assert (caught.value.field, caught.value.message) == ("increment_wh", "must be > 0")
    with pytest.raises(TariffError) as caught:
        Tariff(schedule=TimeOfUseSchedule("Nowhere/Atlantis"))
    assert caught.value.field == "schedule.zone"


def test_dict_round_trip_and_patch(night_tariff: Tariff) -> None:
    assert Tariff.from_dict(night_tariff.to_dict()) == night_tariff
    patched = night_tariff.with_changes({"increment_wh": 250})
    assert patched.increment_wh == 250 and patched.schedule == night_tariff.schedule
    assert Tariff.from_dict({}) == DEFAULT_TARIFF


# -- time-of-use pricing ------------------------------------------------------------------------------


def test_base_price_without_schedule(tariff: Tariff, t0: datetime) -> None:
    assert price_at(tariff, t0) == tariff.price_msat_per_kwh


def test_naive_time_is_rejected(tariff: Tariff) -> None:
    with pytest.raises(ValueError):
        price_at(tariff, datetime(2025, 1, 1, 12, 0))


def test_window_boundaries_start_inclusive_end_exclusive(night_tariff: Tariff) -> None:
    berlin_winter = timezone(timedelta(hours=1))  # CET, the zone's offset in January

    def at(hh: int, mm: int, day: int = 15) -> int:
        return price_at(night_tariff, datetime(2025, 1, day, hh, mm, tzinfo=berlin_winter))

    assert at(16, 59) == 100_000
    assert at(17, 0) == 200_000
    assert at(19, 59) == 200_000
    assert at(20, 0) == 100_000
    assert at(21, 59) == 100_000
    # the night window crosses midnight
    assert at(22, 0) == 50_000
    assert at(23, 59) == 50_000
    assert at(0, 0, day=16) == 50_000
    assert at(5, 59, day=16) == 50_000
    assert at(6, 0, day=16) == 100_000


def test_price_follows_the_schedule_zone_not_the_input_zone(night_tariff: Tariff) -> None:
    # 21:30 UTC in winter is 22:30 in Berlin (night), in summer 23:30 (night); 20:30 UTC in winter is 21:30
    assert price_at(night_tariff, datetime(2025, 1, 15, 21, 30, tzinfo=UTC)) == 50_000
    assert price_at(night_tariff, datetime(2025, 1, 15, 20, 30, tzinfo=UTC)) == 100_000
    # summer time (CEST, UTC+2): 20:30 UTC is 22:30 local
    assert price_at(night_tariff, datetime(2025, 7, 15, 20, 30, tzinfo=UTC)) == 50_000
    # 15:30 UTC: 16:30 local in winter (base), 17:30 local in summer (peak)
    assert price_at(night_tariff, datetime(2025, 1, 15, 15, 30, tzinfo=UTC)) == 100_000
    assert price_at(night_tariff, datetime(2025, 7, 15, 15, 30, tzinfo=UTC)) == 200_000


def test_window_ending_at_midnight() -> None:
    tariff = Tariff(schedule=TimeOfUseSchedule("UTC", (TouWindow("18:00", "24:00", 300_000),)))
    assert price_at(tariff, datetime(2025, 1, 1, 23, 59, 59, tzinfo=UTC)) == 300_000
    assert price_at(tariff, datetime(2025, 1, 2, 0, 0, tzinfo=UTC)) == tariff.price_msat_per_kwh


# -- increment sizing --------------------------------------------------------------------------------


def test_increment_is_at_least_increment_wh(tariff: Tariff) -> None:
    assert increment_wh_for(tariff, 0) == 100
    assert increment_wh_for(tariff, -3_000) == 100
    assert increment_wh_for(tariff, 3_700) == 100  # 61.7 Wh a minute < 100 Wh


def test_increment_grows_with_power_so_fast_chargers_do_not_flood_the_node(tariff: Tariff) -> None:
    assert increment_wh_for(tariff, 150_000) == 2_500  # one invoice a minute at 150 kW
    assert increment_wh_for(tariff, 11_000) == 184  # 183.3 Wh rounded up
    assert increment_wh_for(tariff.with_changes({"min_invoice_interval_s": 0}), 150_000) == 100


def test_sub_minute_instants_do_not_matter_for_price(tariff: Tariff) -> None:
    when = datetime(2025, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    assert price_at(tariff, when) == tariff.price_msat_per_kwh
