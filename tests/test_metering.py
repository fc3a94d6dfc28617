"""Meter normalisation and the energy account: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.charging.metering import EnergyAccount, SampledValue, normalise

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sv(value: str, measurand: str = "Energy.Active.Import.Register", **fields: object) -> SampledValue:
    return SampledValue(value=Decimal(value), measurand=measurand, **fields)  # type: ignore[arg-type]


def test_default_measurand_and_unit_is_energy_register_in_wh() -> None:
    reading = normalise(T0, [SampledValue(value=Decimal("1234.9"))])
    assert reading.energy_register_wh == 1234  # floored: a fraction of a Wh is not yet delivered


def test_kwh_and_multiplier() -> None:
    assert normalise(T0, [sv("12.3456", unit="kWh")]).energy_register_wh == 12345
    assert normalise(T0, [sv("15", unit="Wh", multiplier=3)]).energy_register_wh == 15000
    assert normalise(T0, [sv("7.4", "Power.Active.Import", unit="kW")]).power_w == 7400


def test_total_preferred_over_phases_and_phases_summed_when_no_total() -> None:
    phases = [sv("100", phase="L1"), sv("110", phase="L2"), sv("120", phase="L3")]
    assert normalise(T0, phases).energy_register_wh == 330
    assert normalise(T0, [*phases, sv("331")]).energy_register_wh == 331
    power = [sv("3600", "Power.Active.Import", phase=p) for p in ("L1-N", "L2-N", "L3-N")]
    assert normalise(T0, power).power_w == 10800


def test_outlet_preferred_inlet_fallback_ev_ignored() -> None:
    assert (
        normalise(T0, [sv("500", location="Inlet"), sv("480", location="Outlet")]).energy_register_wh == 480
    )
    assert normalise(T0, [sv("500", location="Inlet")]).energy_register_wh == 500
    assert normalise(T0, [sv("500", location="EV")]).energy_register_wh is None


def test_signed_unknown_units_negative_and_soc() -> None:
    assert normalise(T0, [SampledValue(value=None, signed=True)]).energy_register_wh is None
    assert normalise(T0, [sv("5", unit="varh")]).energy_register_wh is None
    assert normalise(T0, [sv("-5")]).energy_register_wh == -5  # kept: plausibility flags it
    assert normalise(T0, [sv("-0.5")]).energy_register_wh == -1  # floored
    reading = normalise(
        T0, [sv("81", "SoC", unit="Percent", location="EV"), sv("10", context="Sample.Clock")]
    )
    assert reading.soc_percent == 81 and reading.context == "Sample.Clock"


def test_energy_account_explicit_start_and_close() -> None:
    account = EnergyAccount()
    account.start(1000, T0)
    assert account.apply(1100, T0 + timedelta(seconds=10))
    assert not account.apply(1050, T0 + timedelta(seconds=5))  # out of order: no decrease
    account.close(1200, T0 + timedelta(seconds=20))
    assert account.energy_wh == 200
    assert not account.apply(5000, T0 + timedelta(seconds=30))  # after the end: closed total stays
    assert account.energy_wh == 200


def test_energy_account_without_explicit_start_uses_earliest_reading() -> None:
    account = EnergyAccount()
    account.apply(1050, T0 + timedelta(seconds=10))
    assert account.energy_wh == 0
    account.apply(1000, T0)  # Transaction.Begin arrives late (offline replay)
    assert account.energy_wh == 50


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3600), st.integers(0, 10**7)), min_size=1, max_size=40), st.randoms()
)
def test_energy_never_decreases_whatever_the_order(readings: list[tuple[int, int]], rng: object) -> None:
    ordered = sorted(readings)
    account = EnergyAccount()
    account.start(ordered[0][1], T0)
    shuffled = list(readings)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    previous = 0
    for seconds, register in shuffled:
        account.apply(register, T0 + timedelta(seconds=seconds))
        assert account.energy_wh >= previous
        previous = account.energy_wh
    assert account.energy_wh == max(0, max(r for _, r in readings) - ordered[0][1])
