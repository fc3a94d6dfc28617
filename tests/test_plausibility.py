"""What a meter reading may be (csms.charging.plausibility): the rules one by one, the issue's
examples, and properties over any order of arrival (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from csms.charging.plausibility import (
    FASTER_THAN_MAX_POWER,
    FROM_THE_FUTURE,
    KEPT,
    POWER_OUT_OF_RANGE,
    REGISTER_DECREASED,
    REGISTER_OUT_OF_RANGE,
    Limits,
    Point,
    ReadingHistory,
    check_value,
    elapsed,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_power_w=360_000, margin_wh=1000, meter_max_wh=10**11, clock_tolerance_s=300)  # 100 Wh/s


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_allowance_is_integer_power_times_time_plus_margin() -> None:
    assert LIMITS.allowance_wh(timedelta(seconds=10)) == 2000  # 360 kW x 10 s = 1000 Wh, + 1000
    assert LIMITS.allowance_wh(timedelta(microseconds=1)) == 1000  # floored: 0.0001 Wh is not a Wh
    assert LIMITS.allowance_wh(timedelta(seconds=-5)) == 1000  # never less than the margin
    assert Limits(max_power_w=1, margin_wh=0).allowance_wh(timedelta(hours=1)) == 1


def test_values_out_of_range_and_from_the_future() -> None:
    now = s(0)
    assert check_value(s(0), now, 0, 0, LIMITS) is None
    assert check_value(s(0), now, 10**11, 360_000, LIMITS) is None  # the edges are taken
    assert check_value(s(300), now, 5, None, LIMITS) is None  # within the clock tolerance
    assert check_value(s(301), now, 5, None, LIMITS) == FROM_THE_FUTURE
    year_9999 = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert check_value(year_9999, now, 5, None, LIMITS) == FROM_THE_FUTURE
    assert check_value(s(0), now, -1, None, LIMITS) == REGISTER_OUT_OF_RANGE
    assert check_value(s(0), now, 10**18, None, LIMITS) == REGISTER_OUT_OF_RANGE  # the 2.0.1 example
    assert check_value(s(0), now, None, 360_001, LIMITS) == POWER_OUT_OF_RANGE
    assert check_value(s(0), now, None, -360_001, LIMITS) == POWER_OUT_OF_RANGE
    assert check_value(s(-(10**6)), now, None, None, LIMITS) is None  # late (an offline replay) is fine


def test_the_issue_16_transaction() -> None:
    """meterStart 1000, samples 2000, 1500, 1200, 5000, "1000000000", 6000, 3.0 kWh, meterStop 500,
    a minute apart: the plausible ones are 1000, 2000, 5000 and 6000, so 5000 Wh were delivered."""
    history = ReadingHistory()
    registers = [1000, 2000, 1500, 1200, 5000, 1_000_000_000, 6000, 3000, 500]
    verdicts = [history.take(s(60 * i), s(60 * i), wh, None, LIMITS) for i, wh in enumerate(registers)]
    assert verdicts == [
        None,
        None,
        REGISTER_DECREASED,
        REGISTER_DECREASED,
        None,
        FASTER_THAN_MAX_POWER,
        None,
        REGISTER_DECREASED,
        REGISTER_DECREASED,
    ]
    plausible = [p.register_wh for p in history.points]
    assert plausible == [1000, 2000, 5000, 6000] and plausible[-1] - plausible[0] == 5000


def test_a_stuck_clock_counts_readings_by_their_arrival_but_a_burst_gains_only_the_margin() -> None:
    # the charger stamps every reading alike; satwatt received them ten seconds apart
    history = ReadingHistory()
    for i, wh in enumerate([100, 200, 300, 1300, 2300]):
        assert history.take(s(0), s(10 * i), wh, None, LIMITS) is None
    # the same, all received at once: one margin's worth for the whole transaction, not per reading
    burst = ReadingHistory()
    verdicts = [burst.take(s(0), s(0), wh, None, LIMITS) for wh in (0, 1000, 2000, 3000)]
    assert verdicts == [None, None, FASTER_THAN_MAX_POWER, FASTER_THAN_MAX_POWER]


def test_an_offline_replay_arriving_late_and_out_of_order_is_judged_by_its_timestamps() -> None:
    history = ReadingHistory()
    now = s(3600)  # an hour of readings, replayed together, newest first
    for minute in range(60, -1, -10):
        assert history.take(s(60 * minute), now, 1000 + 1000 * minute, None, LIMITS) is None
    # a reading placed between two plausible ones must lie between their registers
    assert history.take(s(60 * 15), now, 100_000, None, LIMITS) == REGISTER_DECREASED
    assert history.take(s(60 * 15), now, 15_000, None, LIMITS) is None
    # before the first reading: no higher than it, and not too far below what follows
    assert history.take(s(-60), now, 2000, None, LIMITS) == REGISTER_DECREASED
    assert history.take(s(-1), now, 0, None, LIMITS) is None  # 1000 Wh in 1 s: the margin allows it
    assert history.take(s(-2), now, -1, None, LIMITS) == REGISTER_OUT_OF_RANGE


def test_a_new_first_reading_is_bounded_against_the_last() -> None:
    """A late reading that would become the transaction's start must not create energy that no
    power could have delivered between it and the last reading."""
    history = ReadingHistory()
    assert history.take(s(100), s(100), 50_000, None, LIMITS) is None
    assert history.take(s(110), s(110), 50_500, None, LIMITS) is None
    assert history.take(s(90), s(120), 0, None, LIMITS) == FASTER_THAN_MAX_POWER  # 50 kWh in 20 s
    assert history.take(s(90), s(120), 49_000, None, LIMITS) is None


def test_a_resumed_history_knows_the_start_and_the_top() -> None:
    history = ReadingHistory.resumed(1000, s(0), 4000, s(60))
    assert [(p.register_wh, p.received_at) for p in history.points] == [(1000, None), (4000, None)]
    assert history.take(s(70), s(10_000), 3999, None, LIMITS) == REGISTER_DECREASED
    assert history.take(s(70), s(10_000), 5000, None, LIMITS) is None
    assert len(ReadingHistory.resumed(None, None, None, None)) == 0


def test_memory_stays_bounded_and_keeps_the_first_reading() -> None:
    history = ReadingHistory()
    for i in range(1000):
        assert history.take(s(i), s(i), 10 * i, None, LIMITS) is None
    points = history.points
    assert len(points) == KEPT + 1 and points[0].register_wh == 0 and points[-1].register_wh == 9990


# ----------------------------------------------------------------------------- properties
arrivals = st.lists(
    st.tuples(
        st.integers(min_value=-600, max_value=600),  # the charger's timestamp (s), stuck clocks included
        st.integers(min_value=0, max_value=30),  # seconds since the previous arrival
        st.integers(min_value=-10, max_value=200_000),  # the register (Wh)
        st.one_of(st.none(), st.integers(min_value=-500_000, max_value=500_000)),  # power (W)
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(arrivals)
def test_whatever_arrives_the_plausible_readings_are_a_possible_meter(
    readings: list[tuple[int, int, int, int | None]],
) -> None:
    """The readings kept never decrease in time, and neither any step between neighbours nor the whole
    transaction exceeds max power x elapsed + margin; every reading is either kept or has a reason."""
    history = ReadingHistory()
    received = s(0)
    kept = 0
    for at, gap, register_wh, power_w in readings:
        received += timedelta(seconds=gap)
        reason = history.take(s(at), received, register_wh, power_w, LIMITS)
        if reason is None:
            kept += 1
    points = history.points
    assert len(points) == kept
    for earlier, later in pairwise(points):
        assert earlier.key <= later.key
        assert earlier.register_wh <= later.register_wh
        assert later.register_wh - earlier.register_wh <= LIMITS.allowance_wh(elapsed(earlier, later))
    if points:
        first, last = points[0], points[-1]
        assert last.register_wh - first.register_wh <= LIMITS.allowance_wh(elapsed(first, last))
        assert all(0 <= p.register_wh <= LIMITS.meter_max_wh for p in points)
        assert all(p.at - p.received_at <= timedelta(seconds=300) for p in points if p.received_at)


@st.composite
def true_meter(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Readings a real meter takes (power within the limit, a monotonic register, clocks right or behind
    or stuck), as (charger timestamp, receipt time, register), in the order they arrive."""
    count = draw(st.integers(min_value=1, max_value=30))
    start = draw(st.integers(min_value=0, max_value=10**9))
    at, register_wh, taken = 0, start, []
    stuck = draw(st.booleans())
    for _ in range(count):
        step_s = draw(st.integers(min_value=0, max_value=120))
        power_w = draw(st.integers(min_value=0, max_value=LIMITS.max_power_w))
        register_wh += power_w * step_s // 3600
        at += step_s
        delay = draw(st.integers(min_value=0, max_value=3600))  # offline: received up to an hour late
        taken.append((0 if stuck else at, at + (0 if stuck else delay), register_wh))
    order = draw(st.permutations(range(count))) if not stuck else range(count)
    return [taken[i] for i in order]


@settings(max_examples=300, deadline=None)
@given(true_meter())
def test_true_readings_are_never_flagged_in_any_order(readings: list[tuple[int, int, int]]) -> None:
    history = ReadingHistory()
    latest = s(0)
    for at, received_at, register_wh in readings:
        latest = max(latest, s(received_at))  # satwatt's clock never goes back
        assert history.take(s(at), latest, register_wh, None, LIMITS) is None
    assert len(history) == min(len(readings), KEPT + 1)


def test_points_sort_readings_resumed_from_the_log_before_new_ones_at_one_timestamp() -> None:
    assert Point(s(0), None, 5).key < Point(s(0), s(0), 5).key < Point(s(0), s(1), 5).key
