"""Pure physics: curve, limits, energy register consistency."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargepoint_sim.physics import (
    EV_MODELS,
    ChargerSpec,
    ConnectorPhysics,
    EVModel,
    delivered_power_w,
    ev_from_spec,
)

SEDAN = EV_MODELS["sedan"]


def test_ac_power_is_min_of_charger_and_ev() -> None:
    assert delivered_power_w(ChargerSpec.ac(22), SEDAN, 0.5, None, True) == 11_000
    assert delivered_power_w(ChargerSpec.ac(7.4), SEDAN, 0.5, None, True) == pytest.approx(7_400)
    assert delivered_power_w(ChargerSpec.ac(22), EV_MODELS["suv"], 0.5, None, True) == 22_000


def test_one_phase_car_on_three_phase_charger() -> None:
    p = delivered_power_w(ChargerSpec.ac(22), EV_MODELS["compact"], 0.5, None, True)
    assert p == pytest.approx(7_333.3, 0.01)


def test_dc_tapers_above_80_percent() -> None:
    dc = ChargerSpec.dc(150)
    assert delivered_power_w(dc, SEDAN, 0.5, None, True) == 150_000
    assert delivered_power_w(dc, SEDAN, 0.80, None, True) == 150_000
    p90 = delivered_power_w(dc, SEDAN, 0.90, None, True)
    p99 = delivered_power_w(dc, SEDAN, 0.99, None, True)
    assert 150_000 > p90 > p99 > 0
    assert delivered_power_w(dc, SEDAN, 1.0, None, True) == 0


def test_limit_relay_and_no_ev() -> None:
    ac = ChargerSpec.ac(22)
    assert delivered_power_w(ac, SEDAN, 0.5, 4_000, True) == 4_000
    assert delivered_power_w(ac, SEDAN, 0.5, 0, True) == 0
    assert delivered_power_w(ac, SEDAN, 0.5, None, False) == 0
    assert delivered_power_w(ac, None, 0.5, None, True) == 0


def test_amps_conversion() -> None:
    assert ChargerSpec.ac(22).amps_to_watts(16) == pytest.approx(11_040)
    assert ChargerSpec.ac(22).amps_to_watts(16, phases=1) == pytest.approx(3_680)
    assert ChargerSpec.dc(150).amps_to_watts(100) == pytest.approx(40_000)


def test_bad_specs_rejected() -> None:
    with pytest.raises(ValueError):
        ChargerSpec.ac(50)
    with pytest.raises(ValueError):
        EVModel("x", capacity_kwh=0, max_ac_kw=11, max_dc_kw=50)
    with pytest.raises(ValueError, match="unknown EV model"):
        ev_from_spec("tractor")
    assert ev_from_spec("sedan", capacity_kwh=80).capacity_kwh == 80


def test_one_hour_at_11kw() -> None:
    ph = ConnectorPhysics(charger=ChargerSpec.ac(22), relay_closed=True)
    ph.plug(SEDAN, 0.1)
    ph.relay_closed = True
    added = ph.advance(3600)
    assert added == pytest.approx(11_000)
    assert ph.energy_register_wh == 11_000
    assert ph.soc == pytest.approx(0.1 + 11 / 60)


def test_stops_at_full_and_target() -> None:
    ph = ConnectorPhysics(charger=ChargerSpec.dc(150))
    ph.plug(SEDAN, 0.7, target_soc=0.8)
    ph.relay_closed = True
    ph.advance(3600)
    assert ph.soc == pytest.approx(0.8)
    assert ph.energy_wh == pytest.approx(6_000)
    assert ph.power_w() == 0 and ph.ev_full()


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=600),  # dt
            st.one_of(st.none(), st.floats(min_value=0, max_value=200_000)),  # limit
            st.booleans(),  # relay
        ),
        min_size=1,
        max_size=30,
    ),
    soc=st.floats(min_value=0, max_value=1),
    dc=st.booleans(),
    model=st.sampled_from(sorted(EV_MODELS)),
)
def test_register_monotonic_and_consistent_with_power(steps, soc, dc, model) -> None:
    charger = ChargerSpec.dc(150) if dc else ChargerSpec.ac(22)
    ev = EV_MODELS[model]
    ph = ConnectorPhysics(charger=charger)
    ph.plug(ev, soc)
    last_reg = ph.energy_register_wh
    for dt, limit, relay in steps:
        ph.limit_w = limit
        ph.relay_closed = relay
        p_before = ph.power_w()
        e0 = ph.energy_wh
        added = ph.advance(dt)
        assert ph.energy_wh - e0 == pytest.approx(added, abs=1e-6)
        # energy never exceeds what the power at the start of the step allows (power only falls with SoC)
        assert added <= p_before * dt / 3600 + 1e-6
        if limit is not None:
            assert added <= limit * dt / 3600 + 1e-6
        assert ph.energy_register_wh >= last_reg
        assert ph.energy_register_wh == math.floor(ph.energy_wh + 1e-9)
        last_reg = ph.energy_register_wh
        assert 0 <= ph.soc <= 1


@settings(max_examples=100, deadline=None)
@given(soc=st.floats(min_value=0, max_value=0.75), minutes=st.integers(min_value=1, max_value=20))
def test_battery_receives_what_the_meter_counts(soc, minutes) -> None:
    ph = ConnectorPhysics(charger=ChargerSpec.ac(11))
    ph.plug(SEDAN, soc)
    ph.relay_closed = True
    added = ph.advance(minutes * 60)
    assert (ph.soc - soc) * SEDAN.capacity_kwh * 1000 == pytest.approx(added, rel=1e-6, abs=1e-6)
    # constant-power region: exactly P * t
    assert added == pytest.approx(11_000 * minutes / 60, rel=1e-9)
