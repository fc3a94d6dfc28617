"""Property tests: a simulated session (charger, meter, payer, restarts) driven by the policy.

The simulated charger honours Suspend/Resume/Stop at once and delivers ``power * dt`` Wh per tick while
running; its meter reports on some ticks and stays silent on others (the policy then runs on its timer);
the payer pays each invoice after its own random delay, or never, sometimes delivers a settle event twice,
and sometimes pays an invoice the policy had already expired or canceled (a payment racing the cancel).
At random ticks the state is "restarted" (rebuilt from its persisted JSON) and a "crash before persist"
is simulated (the step is recomputed from the persisted copy and must give the same decisions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from csms.settlement.bill import compute_bill, session_view
from csms.settlement.policy import (
    CloseSession,
    Decision,
    IssueFinalInvoice,
    IssueInvoice,
    RemoteStart,
    Resume,
    StopTransaction,
    Suspend,
    step,
)
from csms.settlement.rounding import msat_for_energy
from csms.settlement.session import (
    CloseOutcome,
    InvoiceKind,
    InvoiceStatus,
    SessionSettlement,
    open_session,
    record_meter,
    record_payment,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import Tariff, TimeOfUseSchedule, TouWindow, price_at

PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Starts near local midnight, a window edge and the spring DST switch in Berlin (01:00 UTC, 30 Mar 2025).
STARTS = (
    datetime(2025, 1, 15, 22, 50, tzinfo=UTC),
    datetime(2025, 3, 30, 0, 45, tzinfo=UTC),
    datetime(2025, 7, 1, 12, 0, tzinfo=UTC),
)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def schedules(draw: st.DrawFn) -> TimeOfUseSchedule:
    zone = draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]))
    count = draw(st.sampled_from([2, 4, 6]))
    points = sorted(draw(st.sets(st.integers(0, 95), min_size=count, max_size=count)))
    minutes = [p * 15 for p in points]
    if draw(st.booleans()):  # shift the pairing so the last window crosses midnight
        minutes = [*minutes[1:], minutes[0]]
    prices = draw(st.lists(st.integers(1, 400), min_size=count // 2, max_size=count // 2))
    windows = tuple(
        TouWindow(_hhmm(minutes[2 * i]), _hhmm(minutes[2 * i + 1]), prices[i] * 1000)
        for i in range(count // 2)
    )
    return TimeOfUseSchedule(zone=zone, windows=windows)


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    # Prices are whole sat/kWh (multiples of 1000 msat/kWh) so that a Wh-by-Wh reference is exact.
    return Tariff(
        name="prop",
        price_msat_per_kwh=draw(st.integers(1, 400)) * 1000,
        session_fee_msat=draw(st.sampled_from([0, 1, 2_000, 50_000])),
        increment_wh=draw(st.integers(10, 300)),
        min_invoice_interval_s=draw(st.sampled_from([0, 30, 60, 120])),
        allowance_wh=draw(st.integers(0, 100)),
        grace_s=draw(st.integers(0, 90)),
        stop_after_s=draw(st.integers(0, 600)),
        invoice_expiry_s=draw(st.integers(30, 600)),
        schedule=draw(st.none() | schedules()),
    )


@dataclass(frozen=True)
class Tick:
    dt_s: int
    power_w: int
    report: bool  # the meter sends a sample this tick
    restart: bool  # satwatt restarts: state rebuilt from its persisted copy
    crash: bool  # a crash before the step was persisted: recomputing it must give the same decisions


ticks = st.builds(
    Tick,
    dt_s=st.integers(1, 90),
    power_w=st.one_of(st.integers(0, 22_000), st.sampled_from([0, 3_700, 11_000, 50_000, 150_000])),
    report=st.booleans() | st.just(True),
    restart=st.booleans(),
    crash=st.booleans(),
)


@dataclass(frozen=True)
class Scenario:
    tariff: Tariff
    start: datetime
    remote_start: bool
    ticks: tuple[Tick, ...]
    pay_delays: tuple[int | None, ...]  # by invoice seq; None (or missing): never paid
    duplicate_settle_events: bool
    pays_after_cancel: bool


scenarios = st.builds(
    Scenario,
    tariff=tariffs(),
    start=st.sampled_from(STARTS),
    remote_start=st.booleans(),
    ticks=st.lists(ticks, min_size=1, max_size=40).map(tuple),
    pay_delays=st.lists(
        st.one_of(st.integers(0, 15), st.integers(0, 120), st.integers(0, 700), st.none()),
        min_size=1,
        max_size=30,
    ).map(tuple),
    duplicate_settle_events=st.booleans(),
    pays_after_cancel=st.booleans(),
)


@dataclass
class Simulation:
    scenario: Scenario
    use_restarts: bool
    state: SessionSettlement = field(init=False)
    now: datetime = field(init=False)
    true_wh: int = 0
    charger_on: bool = True
    energy_since_sample_check: int = 0
    pay_at: dict[str, datetime] = field(default_factory=dict)
    payer_paid: set[str] = field(default_factory=set)  # paid, or refused by the node for good
    paid_by_payer: set[str] = field(default_factory=set)  # settled at the node
    decision_keys: set[str] = field(default_factory=set)
    sample_checks: int = 0

    def __post_init__(self) -> None:
        self.now = self.scenario.start
        self.state = open_session("sim", self.now, remote_start=self.scenario.remote_start)
        if not self.scenario.remote_start:
            self.state = record_transaction_started(self.state, self.now)

    @property
    def tariff(self) -> Tariff:
        return self.scenario.tariff

    # -- the world ------------------------------------------------------------------------------------

    def run(self) -> SessionSettlement:
        self.check_policy(Tick(0, 0, report=False, restart=False, crash=True))
        for tick in self.scenario.ticks:
            self.advance(tick)
            if self.state.closed_at is not None:
                break
        if self.state.transaction_ended_at is None and self.state.closed_at is None:
            self.state = record_transaction_ended(self.state, self.now, self.true_wh)
            self.check_policy(Tick(0, 0, report=False, restart=False, crash=False))
        for _ in range(20):  # timer ticks until the final invoice is paid or expired
            if self.state.closed_at is not None:
                break
            self.advance(Tick(60, 0, report=False, restart=True, crash=True))
        assert self.state.closed_at is not None
        return self.state

    def advance(self, tick: Tick) -> None:
        self.now += timedelta(seconds=tick.dt_s)
        if self.state.transaction_active and self.charger_on:
            energy = tick.power_w * tick.dt_s // 3600
            self.true_wh += energy
            self.energy_since_sample_check += energy
        self.settle_payments()
        if tick.report and self.state.transaction_active:
            power = tick.power_w if self.charger_on else 0
            self.state = record_meter(self.state, self.true_wh, power, self.now)
            self.check_unpaid_energy()
            self.check_policy(tick)
            if self.charger_on:  # the check left the charger running on a fresh reading
                self.energy_since_sample_check = 0
            self.sample_checks += 1
        else:
            self.check_policy(tick)

    def settle_payments(self) -> None:
        for key, paid_at in sorted(self.pay_at.items(), key=lambda item: (item[1], item[0])):
            if paid_at > self.now or key in self.payer_paid:
                continue
            invoice = self.state.invoice(key)
            payable = invoice.status is InvoiceStatus.OPEN or self.scenario.pays_after_cancel
            self.payer_paid.add(key)  # paid now, or the node refused it for good
            if not payable:
                continue
            self.state = record_payment(self.state, key, paid_at)
            self.paid_by_payer.add(key)
            if self.scenario.duplicate_settle_events:
                again = record_payment(self.state, key, self.now)
                assert again == self.state, "a settle event delivered twice must not credit twice"

    # -- satwatt --------------------------------------------------------------------------------------

    def check_policy(self, tick: Tick) -> None:
        pending = True
        while pending:
            persisted = self.state
            result = step(persisted, self.tariff, self.now)
            if tick.crash:  # crashed before persisting: redo from the persisted copy
                assert step(_reload(persisted), self.tariff, self.now) == result
            assert step(result.state, self.tariff, self.now).decisions == (), "re-running decided again"
            self.state = _reload(result.state) if (tick.restart and self.use_restarts) else result.state
            pending = self.act(result.decisions)
            assert len(self.state.open_invoices(InvoiceKind.INCREMENT)) <= 1

    def act(self, decisions: tuple[Decision, ...]) -> bool:
        """Carry the decisions out; True when that changed the facts (the policy must run again)."""
        changed = False
        for decision in decisions:
            assert decision.key not in self.decision_keys, f"decision {decision.key} made twice"
            self.decision_keys.add(decision.key)
            match decision:
                case IssueInvoice() | IssueFinalInvoice():
                    delays = self.scenario.pay_delays
                    delay = delays[decision.seq - 1] if decision.seq <= len(delays) else None
                    if delay is not None:
                        self.pay_at[decision.key] = decision.at + timedelta(seconds=delay)
                case Suspend():
                    self.charger_on = False
                case Resume():
                    self.charger_on = True
                case RemoteStart():
                    self.state = record_transaction_started(self.state, self.now)
                    self.energy_since_sample_check = 0
                    changed = True
                case StopTransaction():
                    self.state = record_transaction_ended(self.state, self.now, self.true_wh)
                    changed = True
                case CloseSession():
                    assert decision.bill == compute_bill(self.state, self.tariff, self.now)
        return changed

    # -- invariants during the session ------------------------------------------------------------------

    def check_unpaid_energy(self) -> None:
        """Unpaid energy never exceeds allowance_wh plus what was delivered since the last check that,
        on a fresh meter reading, left the charger running (or since the transaction started)."""
        unpaid_wh = self.true_wh - self.state.paid_wh
        assert unpaid_wh <= self.tariff.allowance_wh + self.energy_since_sample_check


def _reload(state: SessionSettlement) -> SessionSettlement:
    return SessionSettlement.from_dict(json.loads(json.dumps(state.to_dict())))


def _reference_cost(state: SessionSettlement) -> int:
    """Wh by Wh, FIFO over the paid invoices in invoice order, each Wh at its invoice's price."""
    if state.transaction_started_at is None:
        return 0
    wh_prices: list[int] = []
    for invoice in sorted(state.invoices, key=lambda i: i.seq):
        if invoice.status is InvoiceStatus.PAID:
            wh_prices += [invoice.price_msat_per_kwh // 1000] * invoice.energy_wh
    consumed = wh_prices[: state.delivered_wh]
    final = state.final_invoice
    increments = [i for i in state.invoices if i.kind is InvoiceKind.INCREMENT]
    offer = final if final is not None else max(increments, key=lambda i: i.seq)
    unprepaid_wh = state.delivered_wh - len(consumed)
    return sum(consumed) + unprepaid_wh * (offer.price_msat_per_kwh // 1000) + state.session_fee_msat


def _prices(tariff: Tariff) -> list[int]:
    windows = tariff.schedule.windows if tariff.schedule else ()
    return [tariff.price_msat_per_kwh, *(w.price_msat_per_kwh for w in windows)]


@PROPERTY_SETTINGS
@given(scenario=scenarios)
def test_simulated_sessions_keep_the_invariants(scenario: Scenario) -> None:
    sim = Simulation(scenario, use_restarts=True)
    state = sim.run()
    event(f"outcome {state.outcome}")
    for kind in sorted({key.split("/")[1] for key in sim.decision_keys}):
        event(f"decided {kind}")
    if state.final_invoice is not None:
        event("final invoice")
    tariff = scenario.tariff
    bill = compute_bill(state, tariff, sim.now)
    view = session_view(state, tariff, sim.now)

    # every invoice is priced from its Wh and the tariff's price when it was issued
    for invoice in state.invoices:
        assert (
            invoice.amount_msat
            == msat_for_energy(invoice.energy_wh, invoice.price_msat_per_kwh) + invoice.fee_msat
        )
        assert invoice.fee_msat in (0, tariff.session_fee_msat)
        if invoice.kind is InvoiceKind.INCREMENT:
            assert invoice.price_msat_per_kwh == price_at(tariff, invoice.created_at)
    assert len({i.key for i in state.invoices}) == len(state.invoices)
    assert not state.open_invoices(), "a closed session leaves no invoice open"

    # no invoice is credited twice: the state's paid total is exactly what the payer paid
    assert state.paid_msat == bill.paid_msat == sum(state.invoice(k).amount_msat for k in sim.paid_by_payer)
    assert view.billed_msat == view.paid_msat == bill.paid_msat

    # the meter's energy is what the charger delivered
    if state.transaction_started_at is not None:
        assert state.delivered_wh == sim.true_wh

    # billed msat equals the priced energy exactly
    assert bill.cost_msat == _reference_cost(state)
    assert bill.paid_msat - bill.refundable_msat + bill.shortfall_msat == bill.cost_msat
    assert sum(r.amount_msat for r in bill.refunds) == bill.refundable_msat
    consumed_wh = state.delivered_wh if state.transaction_started_at is not None else 0
    assert sum(r.energy_wh for r in bill.refunds) == max(0, state.paid_wh - consumed_wh)

    # the cost never exceeds what the tariff says
    if state.transaction_started_at is not None:
        assert bill.cost_msat <= tariff.session_fee_msat + msat_for_energy(
            state.delivered_wh, max(_prices(tariff))
        )
        assert bill.cost_msat >= tariff.session_fee_msat + msat_for_energy(
            state.delivered_wh, min(_prices(tariff))
        )

    # the outcome matches the money
    if state.outcome is CloseOutcome.SETTLED:
        assert bill.shortfall_msat == 0
        assert bill.paid_msat == bill.cost_msat + bill.refundable_msat
    elif state.outcome is CloseOutcome.UNPAID_DEBT:
        final = state.final_invoice
        assert final is not None and final.status is not InvoiceStatus.PAID
        # the debt is what is still owed (a late increment payment may have made it less than asked)
        assert 0 < bill.shortfall_msat <= final.amount_msat
    else:
        assert state.outcome is CloseOutcome.NOT_STARTED
        assert state.transaction_started_at is None
        assert bill.cost_msat == 0 and bill.refundable_msat == bill.paid_msat


@PROPERTY_SETTINGS
@given(scenario=scenarios)
def test_restarts_change_nothing(scenario: Scenario) -> None:
    with_restarts = Simulation(scenario, use_restarts=True).run()
    without = Simulation(scenario, use_restarts=False).run()
    assert with_restarts.to_dict() == without.to_dict()
