"""The car's payer agent: a car with a Lightning node that pays its charging session's invoices.

It behaves like Distributed Charge's car. It finds its session (a walk-up session token, or a payer token
and the id tag it badged in with), follows the session's server-sent events (reconnecting with
``Last-Event-ID``), and pays each invoice under a :class:`PayerPolicy`:

* the price per kWh must not exceed the car's maximum, nor the price agreed when the session started;
* the invoice must be what its event says (the BOLT11 is decoded: amount and payment hash must match),
  and its amount must not exceed its energy at its price plus the agreed session fee;
* an increment invoice must not be larger than the agreed increment (2x for the first, which may carry
  the session fee) plus the energy delivered and not yet paid; a final invoice at most the energy
  delivered and not yet paid;
* the car pays only while it stays at most ``max_ahead_wh`` plus a tolerance ahead of the energy
  delivered (otherwise it waits for more energy);
* fee limit ``max(3 %, 2 sat)``, payment timeout 25 s.

An invoice that fails a check is refused: a :class:`Refusal` record and a WARNING log line. The decision
is the pure function :func:`decide`; :class:`PayerAgent` does the I/O.

Modes for scenarios (:class:`PayerMode`): a good payer, a late payer (``delay_s`` before each payment),
a payer that stops paying after ``stop_after_wh`` delivered, and the policy's maximum price.

Use::

    backend = LndBackend(LndConfig.from_simnet(simnet, "car1"))     # or from_lndconnect(uri)
    agent = PayerAgent("http://127.0.0.1:8180", backend, session_token=walk_up["token"],
                       session_id=walk_up["id"])
    stats = await agent.run()                                       # until the session closes
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from lightning import Backend, InvalidRequest, LightningError, PaymentFailed, decode_payreq

log = logging.getLogger("chargepoint_sim.payer")

WH_PER_KWH = 1000


# ====================================================================================== the policy (pure)


@dataclass(frozen=True)
class PayerPolicy:
    """What the car agrees to pay. Defaults follow Distributed Charge's car."""

    max_price_msat_per_kwh: int = 1_000_000  # 1,000 sat/kWh
    max_ahead_wh: int | None = None  # None: twice the agreed increment (at the current power)
    tolerance_wh: int = 75  # plus tolerance_fraction of the energy delivered
    tolerance_fraction: float = 0.05  # Distributed Charge: 2.5-20 %
    first_invoice_factor: int = 2  # the first invoice may be this many increments (and carry the fee)
    fee_limit_fraction: float = 0.03
    fee_limit_min_msat: int = 2_000
    payment_timeout_s: float = 25.0

    def __post_init__(self) -> None:
        if self.max_price_msat_per_kwh < 1:
            raise ValueError("max_price_msat_per_kwh must be >= 1")
        if self.max_ahead_wh is not None and self.max_ahead_wh < 0:
            raise ValueError("max_ahead_wh must be >= 0")
        if self.tolerance_wh < 0 or not 0 <= self.tolerance_fraction <= 1:
            raise ValueError("tolerance_wh must be >= 0 and tolerance_fraction in [0, 1]")
        if self.first_invoice_factor < 1:
            raise ValueError("first_invoice_factor must be >= 1")
        if self.payment_timeout_s <= 0:
            raise ValueError("payment_timeout_s must be > 0")

    def fee_limit_msat(self, amount_msat: int) -> int:
        """Routing fee the car accepts for one payment: max(3 %, 2 sat)."""
        return max(math.ceil(amount_msat * self.fee_limit_fraction), self.fee_limit_min_msat)

    def tolerance(self, delivered_wh: int) -> int:
        return self.tolerance_wh + math.ceil(max(0, delivered_wh) * self.tolerance_fraction)


@dataclass(frozen=True)
class Agreement:
    """The terms agreed when the session started (from the session's tariff)."""

    price_msat_per_kwh: int  # the highest price the tariff may ask (base or any time-of-use window)
    increment_wh: int
    min_invoice_interval_s: int = 0
    session_fee_msat: int = 0

    @classmethod
    def from_tariff(cls, tariff: Mapping[str, Any]) -> Agreement:
        prices = [int(tariff["price_msat_per_kwh"])]
        schedule = tariff.get("schedule") or {}
        prices += [int(w["price_msat_per_kwh"]) for w in schedule.get("windows", [])]
        return cls(
            price_msat_per_kwh=max(prices),
            increment_wh=int(tariff["increment_wh"]),
            min_invoice_interval_s=int(tariff.get("min_invoice_interval_s", 0)),
            session_fee_msat=int(tariff.get("session_fee_msat", 0)),
        )

    def increment_at(self, power_w: int) -> int:
        """The increment at this power: satwatt sizes invoices to last min_invoice_interval_s."""
        by_time = math.ceil(max(0, power_w) * self.min_invoice_interval_s / 3600)
        return max(self.increment_wh, by_time)


@dataclass(frozen=True)
class InvoiceOffer:
    """An invoice as the session's event announces it, with what its BOLT11 actually says."""

    key: str
    kind: str  # increment / final
    amount_msat: int
    energy_wh: int
    price_msat_per_kwh: int
    fee_msat: int
    payment_hash: str  # hex, from the event
    decoded_amount_msat: int
    decoded_payment_hash: str  # hex, from the BOLT11
    expires_at: datetime


@dataclass(frozen=True)
class Knowledge:
    """What the car knows about its session when it decides."""

    delivered_wh: int  # metered energy so far (projected at the last power, when the car projects)
    paid_wh: int  # energy of the invoices paid so far
    invoices_paid: int
    fee_paid: bool
    power_w: int = 0
    ended: bool = False


@dataclass(frozen=True)
class Pay:
    fee_limit_msat: int
    timeout_s: float


@dataclass(frozen=True)
class Wait:
    """Not now: the car is far enough ahead; ask again when more energy was delivered."""

    reason: str


@dataclass(frozen=True)
class Refuse:
    reason: str  # price_above_max, price_above_agreed, amount_mismatch, hash_mismatch, expired, ...
    detail: str


Decision = Pay | Wait | Refuse


def decide(
    offer: InvoiceOffer, known: Knowledge, agreement: Agreement, policy: PayerPolicy, now: datetime
) -> Decision:
    """Should the car pay this invoice now? Pure: the same inputs always give the same answer."""
    if offer.decoded_payment_hash.lower() != offer.payment_hash.lower():
        return Refuse("hash_mismatch", "the BOLT11's payment hash is not the one announced")
    if offer.decoded_amount_msat != offer.amount_msat:
        return Refuse(
            "amount_mismatch",
            f"the BOLT11 asks {offer.decoded_amount_msat} msat, the event says {offer.amount_msat} msat",
        )
    if offer.amount_msat <= 0:
        return Refuse("no_amount", "an invoice without an amount is never paid")
    if now >= offer.expires_at:
        return Refuse("expired", f"the invoice expired at {offer.expires_at.isoformat()}")
    if offer.price_msat_per_kwh > policy.max_price_msat_per_kwh:
        return Refuse(
            "price_above_max",
            f"{offer.price_msat_per_kwh} msat/kWh is above the car's maximum "
            f"{policy.max_price_msat_per_kwh} msat/kWh",
        )
    if offer.price_msat_per_kwh > agreement.price_msat_per_kwh:
        return Refuse(
            "price_above_agreed",
            f"{offer.price_msat_per_kwh} msat/kWh is above the agreed "
            f"{agreement.price_msat_per_kwh} msat/kWh",
        )
    fee_allowed = 0 if known.fee_paid else agreement.session_fee_msat
    if offer.fee_msat < 0 or offer.fee_msat > fee_allowed:
        return Refuse("fee_above_agreed", f"session fee {offer.fee_msat} msat, agreed {fee_allowed} msat")
    priced = offer.energy_wh * offer.price_msat_per_kwh // WH_PER_KWH + offer.fee_msat
    if offer.energy_wh < 0 or offer.amount_msat > priced:
        return Refuse(
            "amount_above_rate",
            f"{offer.amount_msat} msat for {offer.energy_wh} Wh is more than the stated price "
            f"({priced} msat)",
        )
    unpaid_wh = max(0, known.delivered_wh - known.paid_wh)
    tolerance = policy.tolerance(known.delivered_wh)
    if offer.kind == "final":
        if offer.energy_wh > unpaid_wh + tolerance:
            return Refuse(
                "final_above_delivered",
                f"final invoice for {offer.energy_wh} Wh, only {unpaid_wh} Wh delivered and not paid",
            )
        return Pay(policy.fee_limit_msat(offer.amount_msat), policy.payment_timeout_s)
    increment = agreement.increment_at(known.power_w)
    factor = policy.first_invoice_factor if known.invoices_paid == 0 else 1
    largest = factor * increment + unpaid_wh + tolerance
    if offer.energy_wh > largest:
        return Refuse(
            "larger_than_agreed",
            f"{offer.energy_wh} Wh is more than the agreed increment ({factor} x {increment} Wh) plus "
            f"{unpaid_wh} Wh delivered and not paid",
        )
    if known.ended:
        return Refuse("session_ended", "the charge has ended: only a final invoice is paid now")
    max_ahead = policy.max_ahead_wh if policy.max_ahead_wh is not None else 2 * increment
    ahead_after = known.paid_wh + offer.energy_wh - known.delivered_wh
    if ahead_after > max_ahead + tolerance:
        return Wait(f"would be {ahead_after} Wh ahead (at most {max_ahead} + {tolerance} Wh)")
    return Pay(policy.fee_limit_msat(offer.amount_msat), policy.payment_timeout_s)


# ====================================================================================== modes and stats


@dataclass(frozen=True)
class PayerMode:
    """How the car behaves in a scenario: a good payer by default."""

    delay_s: float = 0.0  # late payer: wait this long before each payment
    stop_after_wh: int | None = None  # stops paying once this much energy was delivered

    @property
    def name(self) -> str:
        if self.stop_after_wh is not None:
            return f"stops paying after {self.stop_after_wh} Wh"
        if self.delay_s > 0:
            return f"late payer ({self.delay_s:g} s)"
        return "good payer"


@dataclass(frozen=True)
class Refusal:
    """An invoice the car would not pay, and why (reported, and logged as a WARNING)."""

    session_id: str
    invoice_key: str
    kind: str
    reason: str
    detail: str
    amount_msat: int
    energy_wh: int
    price_msat_per_kwh: int
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


@dataclass
class PayerStats:
    invoices_seen: int = 0
    invoices_paid: int = 0
    invoices_refused: int = 0
    invoices_skipped: int = 0  # not paid on purpose (a car that stopped paying)
    payment_failures: int = 0
    payments_in_doubt: int = 0  # still in flight when the agent had to return: outcome unknown to it
    paid_msat: int = 0
    fees_msat: int = 0
    suspensions: int = 0
    resumptions: int = 0
    stopped: bool = False
    outcome: str | None = None
    delivered_wh: int = 0
    power_w: int = 0
    state: str = "finding session"


# ====================================================================================== the agent


class SessionNotFound(Exception):
    """The payer's session did not appear in time."""


@dataclass
class _Invoice:
    offer: InvoiceOffer
    bolt11: str
    settled: bool = False
    done: bool = False  # paid, refused, skipped or superseded
    paying: bool = False  # a payment call is in flight at the node


@dataclass
class _Known:
    delivered_wh: int = 0
    power_w: int = 0
    meter_at: float = 0.0  # monotonic time of the last meter event
    paid: dict[str, int] = field(default_factory=dict)  # invoice key -> energy_wh
    fee_paid: bool = False
    ended: bool = False


class PayerAgent:
    """Follows one session and pays its invoices under ``policy`` and ``mode``.

    Give ``session_id`` with a session token (walk-up), or ``payer_token`` and ``id_tag`` (the car badged
    in at the charger; the agent looks for the newest open session on that tag that it has not seen).
    """

    def __init__(
        self,
        csms_url: str,
        backend: Backend,
        *,
        session_token: str | None = None,
        session_id: str | None = None,
        payer_token: str | None = None,
        id_tag: str | None = None,
        policy: PayerPolicy | None = None,
        mode: PayerMode | None = None,
        name: str = "car",
        ignore_sessions: set[str] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if session_token is None and (payer_token is None or id_tag is None):
            raise ValueError("give a session token, or a payer token and an id tag")
        self.base_url = csms_url.rstrip("/")
        self.backend = backend
        self.token = session_token or payer_token or ""
        self.session_id = session_id
        self.id_tag = id_tag
        self.payer_token = payer_token
        self.policy = policy or PayerPolicy()
        self.mode = mode or PayerMode()
        self.name = name
        self.ignore_sessions = set(ignore_sessions or ())
        self.on_event = on_event
        self.clock = clock
        self.stats = PayerStats()
        self.refusals: list[Refusal] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.agreement: Agreement | None = None
        self.closed = asyncio.Event()
        self._known = _Known()
        self._invoices: dict[str, _Invoice] = {}
        self._last_event_id: int | None = None
        self._pay_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------------------ public

    async def find_session(self, timeout_s: float = 30.0, poll_s: float = 0.25) -> str:
        """The session's id: given, or the newest open session of the id tag (payer token)."""
        if self.session_id is not None:
            return self.session_id
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._auth(), timeout=10) as client:
            async with asyncio.timeout(timeout_s):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get("/api/v1/sessions", params={"limit": 20})
                        if response.status_code == 200:
                            for session in response.json():  # newest first
                                if (
                                    session["id_tag"] == self.id_tag
                                    and session["id"] not in self.ignore_sessions
                                    and session["ended_at"] is None
                                ):
                                    self.session_id = session["id"]
                                    return session["id"]
                    await asyncio.sleep(poll_s)

    async def run(self, find_timeout_s: float = 30.0) -> PayerStats:
        """Find the session, follow it and pay, until it closes. Returns the stats."""
        try:
            session_id = await self.find_session(find_timeout_s)
        except TimeoutError:
            self.stats.state = "no session"
            raise SessionNotFound(f"{self.name}: no open session for id tag {self.id_tag!r}") from None
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._auth(), timeout=10) as client:
            session = (await client.get(f"/api/v1/sessions/{session_id}")).raise_for_status().json()
            if session.get("tariff"):
                self.agreement = Agreement.from_tariff(session["tariff"])
            self.stats.state = session["state"]
            try:
                await self._follow(client, session_id)
            finally:
                await self._finish_payments()
        return self.stats

    async def _finish_payments(self) -> None:
        """Before returning: let payments already in flight at the node finish and count them (the
        session's `closed` can arrive while the node is still reporting a payment it made), and cancel
        the rest (not yet started: nothing to pay any more). A payment still unresolved after its
        timeout is counted as in doubt."""
        in_flight: set[asyncio.Task[None]] = set()
        for task in list(self._tasks):
            invoice = self._invoices.get(task.get_name().removeprefix("pay-"))
            if invoice is not None and invoice.paying:
                in_flight.add(task)
            else:
                task.cancel()
        if in_flight:
            log.info("%s: waiting for %d payment(s) in flight before returning", self.name, len(in_flight))
            _, unresolved = await asyncio.wait(in_flight, timeout=self.policy.payment_timeout_s + 5)
            self.stats.payments_in_doubt += len(unresolved)
            for task in unresolved:
                log.warning(
                    "%s: payment %s still unresolved; counted as in doubt", self.name, task.get_name()
                )
                task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true, re-checked on every event and payment; TimeoutError if not."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.5)

    # ------------------------------------------------------------------------------ internals

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _follow(self, client: httpx.AsyncClient, session_id: str) -> None:
        backoff = 0.2
        while not self.closed.is_set():
            try:
                async for event_id, kind, data in self._stream(client, session_id):
                    backoff = 0.2
                    self._last_event_id = event_id
                    self._handle(kind, data)
                    if kind == "closed":
                        return
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in (401, 403, 404):
                    raise
                log.info("%s: event stream failed (%s), reconnecting", self.name, exc)
            except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
                log.info("%s: event stream lost (%s), reconnecting", self.name, type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _stream(
        self, client: httpx.AsyncClient, session_id: str
    ) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        headers = {} if self._last_event_id is None else {"Last-Event-ID": str(self._last_event_id)}
        url = f"/api/v1/sessions/{session_id}/events"
        timeout = httpx.Timeout(10, read=None)
        async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
            response.raise_for_status()
            current: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "event" in current and "id" in current:
                        yield int(current["id"]), current["event"], json.loads(current.get("data", "{}"))
                    current = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    current[name] = value.removeprefix(" ")

    def _handle(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))
        known = self._known
        if kind in ("started", "meter", "ended"):
            known.delivered_wh = max(known.delivered_wh, int(data.get("energy_wh") or 0))
            known.power_w = int(data.get("power_w") or 0) if kind != "ended" else 0
            known.meter_at = time.monotonic()
            self.stats.delivered_wh, self.stats.power_w = known.delivered_wh, known.power_w
            if kind == "ended":
                known.ended = True
            if kind == "started":
                self.stats.state = "charging"
        elif kind == "invoice":
            self._on_invoice(data)
        elif kind == "paid":
            invoice = self._invoices.get(data["key"])
            known.paid[data["key"]] = int(data.get("energy_wh") or 0)
            if invoice is not None:
                invoice.settled = invoice.done = True
                if invoice.offer.fee_msat > 0:
                    known.fee_paid = True
        elif kind == "suspended":
            self.stats.suspensions += 1
            self.stats.state = "suspended"
        elif kind == "resumed":
            self.stats.resumptions += 1
            self.stats.state = "charging"
        elif kind == "stopping":
            self.stats.stopped = True
            self.stats.state = "stopping"
        elif kind == "closed":
            self.stats.outcome = data.get("outcome")
            self.stats.state = "ended"
            self.closed.set()
        if self.on_event is not None:
            self.on_event(kind, data)
        if kind in ("meter", "ended", "paid", "resumed"):
            self._reconsider()
        self._pulse()

    def _on_invoice(self, data: dict[str, Any]) -> None:
        self.stats.invoices_seen += 1
        key = data["key"]
        if key in self._invoices or not data.get("bolt11"):
            return
        try:
            decoded = decode_payreq(data["bolt11"])
            decoded_amount, decoded_hash = decoded.amount_msat, decoded.payment_hash.hex()
            expires_at = min(decoded.expires_at, datetime.fromisoformat(data["expires_at"]))
        except (InvalidRequest, KeyError, ValueError) as exc:
            decoded_amount, decoded_hash, expires_at = -1, "", self.clock()
            log.warning("%s: invoice %s cannot be decoded: %s", self.name, key, exc)
        offer = InvoiceOffer(
            key=key,
            kind=data.get("kind", "increment"),
            amount_msat=int(data["amount_msat"]),
            energy_wh=int(data.get("energy_wh") or 0),
            price_msat_per_kwh=int(data.get("price_msat_per_kwh") or 0),
            fee_msat=int(data.get("fee_msat") or 0),
            payment_hash=str(data.get("payment_hash", "")),
            decoded_amount_msat=decoded_amount,
            decoded_payment_hash=decoded_hash,
            expires_at=expires_at,
        )
        # a new invoice replaces the older unpaid ones (satwatt keeps one outstanding)
        for older in self._invoices.values():
            if not older.settled:
                older.done = True
        self._invoices[key] = _Invoice(offer, data["bolt11"])
        self._reconsider()

    def _knowledge(self) -> Knowledge:
        known = self._known
        delivered = known.delivered_wh
        if known.power_w > 0 and not known.ended:  # satwatt projects at the last power; so does the car
            elapsed = max(0.0, time.monotonic() - known.meter_at)
            delivered += math.ceil(known.power_w * elapsed / 3600)
        return Knowledge(
            delivered_wh=delivered,
            paid_wh=sum(known.paid.values()),
            invoices_paid=len(known.paid),
            fee_paid=known.fee_paid,
            power_w=known.power_w,
            ended=known.ended,
        )

    def _reconsider(self) -> None:
        for invoice in self._invoices.values():
            if not invoice.done and not self._busy(invoice.offer.key):
                self._spawn(self._consider(invoice), invoice.offer.key)

    def _busy(self, key: str) -> bool:
        return any(t.get_name() == f"pay-{key}" and not t.done() for t in self._tasks)

    def _spawn(self, coro: Any, key: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"pay-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consider(self, invoice: _Invoice) -> None:
        offer = invoice.offer
        if self.mode.stop_after_wh is not None and self._known.delivered_wh >= self.mode.stop_after_wh:
            invoice.done = True
            self.stats.invoices_skipped += 1
            self._pulse()
            log.info(
                "%s: not paying invoice %s (%d msat): this car stops paying after %d Wh",
                self.name,
                offer.key,
                offer.amount_msat,
                self.mode.stop_after_wh,
            )
            return
        agreement = self.agreement or Agreement(offer.price_msat_per_kwh, offer.energy_wh)
        decision = decide(offer, self._knowledge(), agreement, self.policy, self.clock())
        if isinstance(decision, Wait):
            log.debug("%s: invoice %s waits: %s", self.name, offer.key, decision.reason)
            return
        if isinstance(decision, Refuse):
            invoice.done = True
            if decision.reason == "expired":  # satwatt replaces it; nothing wrong with it
                log.info("%s: invoice %s expired unpaid", self.name, offer.key)
            elif decision.reason == "session_ended":  # no longer needed: satwatt cancels it at the end
                self.stats.invoices_skipped += 1
                log.info(
                    "%s: invoice %s not paid: the charge ended (a final invoice follows if needed)",
                    self.name,
                    offer.key,
                )
            else:
                self._refuse(offer, decision)
            return
        if self.mode.delay_s > 0:
            await asyncio.sleep(self.mode.delay_s)
        async with self._pay_lock:
            if invoice.done:
                return
            await self._pay(invoice, decision)

    def _refuse(self, offer: InvoiceOffer, refusal: Refuse) -> None:
        record = Refusal(
            session_id=self.session_id or "",
            invoice_key=offer.key,
            kind=offer.kind,
            reason=refusal.reason,
            detail=refusal.detail,
            amount_msat=offer.amount_msat,
            energy_wh=offer.energy_wh,
            price_msat_per_kwh=offer.price_msat_per_kwh,
            at=self.clock(),
        )
        self.refusals.append(record)
        self.stats.invoices_refused += 1
        self._pulse()
        log.warning(
            "%s: REFUSED invoice %s of session %s (%d msat, %d Wh at %d msat/kWh): %s: %s",
            self.name,
            offer.key,
            record.session_id,
            offer.amount_msat,
            offer.energy_wh,
            offer.price_msat_per_kwh,
            refusal.reason,
            refusal.detail,
        )

    async def _pay(self, invoice: _Invoice, decision: Pay) -> None:
        offer = invoice.offer
        for attempt in range(3):
            invoice.paying = True
            try:
                result = await self.backend.pay_invoice(
                    invoice.bolt11, fee_limit_msat=decision.fee_limit_msat, timeout_s=decision.timeout_s
                )
            except PaymentFailed as exc:
                self.stats.payment_failures += 1
                log.warning("%s: payment of %s failed (%s), try %d", self.name, offer.key, exc, attempt + 1)
            except LightningError as exc:
                self.stats.payment_failures += 1
                log.warning("%s: node error paying %s: %s", self.name, offer.key, exc)
            else:
                invoice.done = invoice.settled = True
                self._known.paid[offer.key] = offer.energy_wh
                if offer.fee_msat > 0:
                    self._known.fee_paid = True
                self.stats.invoices_paid += 1
                self.stats.paid_msat += result.amount_msat or offer.amount_msat
                self.stats.fees_msat += result.fee_msat
                self._pulse()
                log.debug("%s: paid %s (%d msat)", self.name, offer.key, offer.amount_msat)
                return
            finally:
                invoice.paying = False
            if invoice.done or self.closed.is_set():  # superseded meanwhile, or nothing to pay any more
                return
            await asyncio.sleep(0.5 * (attempt + 1))
