"""The charge point: connection life cycle, connectors, transactions and faults, version-free.

:class:`ChargePoint` owns everything a charger does regardless of the OCPP version: it connects (and
reconnects with back-off), boots (retrying while Pending / Rejected, honouring ``interval``), sends
heartbeats, keeps an ordered outbox in which transaction messages survive disconnects and are replayed in
order, samples the meter, applies charging profiles to the hardware, and exposes a small driving API
for tests, the CLI and the demo.  The two protocol adapters (:mod:`chargepoint_sim.v16`,
:mod:`chargepoint_sim.v201`) subclass it and supply the messages and the CSMS-call handlers.

Driving a charge point programmatically::

    cp = create_charge_point(ChargePointOptions(id="CP1", csms_url="ws://127.0.0.1:8180/ocpp",
                                                protocol="2.0.1", password="secret"))
    await cp.start()                        # runs in the background, reconnecting as needed
    await cp.wait_online(timeout_s=10)      # BootNotification accepted
    await cp.plug_in(1, ev="sedan", soc=0.3)
    await cp.authorize(1, "TAG-1")          # card swipe: Authorize, then the transaction starts
    await cp.wait_status(1, "Charging")
    await cp.disconnect(for_s=5)            # fault: go offline, queue, replay with offline=true
    await cp.unplug(1)                      # ends the transaction
    await cp.stop()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import websockets
from websockets.exceptions import InvalidHandshake, InvalidURI

from chargepoint_sim.clock import Clock, iso
from chargepoint_sim.hardware import ConnectorHardware, SimulatedConnector
from chargepoint_sim.physics import ChargerSpec, EVModel, ev_from_spec
from chargepoint_sim.refusal import refusal_reason
from chargepoint_sim.rpc import CallError, ConnectionLost, OcppConnection, Reply, Stats

log = logging.getLogger("chargepoint_sim")

OcppVersion = Literal["1.6", "2.0.1"]
PROTOCOLS: tuple[str, ...] = ("1.6", "2.0.1")

QUIRKS: dict[str, str] = {
    "energy_kwh": "report the energy register in kWh instead of Wh",
    "power_kw": "report power in kW instead of W",
    "missing_measurand": "omit the measurand field of the energy register sample (the spec default)",
    "meter_values_without_tx_id": "1.6: MeterValues without transactionId; 2.0.1: samples in MeterValues "
    "instead of TransactionEvent Updated",
    "meter_start_resets_on_boot": "the energy register restarts at 0 on every boot",
    "naive_timestamps": "timestamps without a time zone",
    "unsynced_clock": "timestamps in 1970 until the first BootNotification is accepted",
}

# connector status, in the 1.6 vocabulary (2.0.1 maps it to Available/Occupied/Unavailable/Faulted)
STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)


@dataclass
class Faults:
    """Misbehaviour switched on at will (scenario ``faults:``, CLI flags, or attribute assignment)."""

    reject_charging_profiles: bool = False
    duplicate_sends: bool = False  # every CALL sent twice
    duplicate_mode: Literal["same_id", "new_id"] = "same_id"  # same frame twice, or a resend with a new id
    clock_skew_s: float = 0.0
    quirks: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        unknown = set(self.quirks) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirk(s) {sorted(unknown)}; known: {', '.join(QUIRKS)}")
        if self.duplicate_mode not in ("same_id", "new_id"):
            raise ValueError("duplicate_mode must be 'same_id' or 'new_id'")


@dataclass
class ChargePointOptions:
    id: str
    csms_url: str
    protocol: str = "2.0.1"
    password: str | None = None
    connectors: int = 1
    charger: ChargerSpec = field(default_factory=ChargerSpec)
    vendor: str = "satwatt"
    model: str = "SimCharger"
    serial: str | None = None
    firmware: str = "sim-0.1"
    meter_interval_s: float = 60.0  # initial MeterValueSampleInterval / TxUpdatedInterval (sim seconds)
    heartbeat_interval_s: float = 300.0  # until the CSMS says otherwise
    boot_retry_default_s: float = 10.0  # when Pending/Rejected come with interval 0
    call_timeout_s: float = 30.0  # real seconds
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    reboot_delay_s: float = 0.5
    message_attempts: int = 3  # TransactionMessageAttempts
    message_retry_s: float = 5.0  # TransactionMessageRetryInterval (real seconds, times the attempt number)
    connection_timeout_s: float = 60.0  # authorised but not plugged in: give up after this (sim seconds)
    clock_scale: float = 1.0
    initial_energy_wh: float = 0.0
    validate_outbound: bool = False
    log_size: int = 1000
    faults: Faults = field(default_factory=Faults)
    # answer Accepted to a new Basic auth password (1.6 AuthorizationKey, 2.0.1 BasicAuthPassword),
    # then reconnect with it; False: answer Rejected and keep the old one
    accept_new_password: bool = True
    # wss://: the TLS context (a CA to trust, a client certificate); None: the system's defaults
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.connectors < 1:
            raise ValueError("connectors must be >= 1")


@dataclass
class Transaction:
    connector_id: int
    id_tag: str | None
    meter_start_wh: int
    started_at: float  # charger clock, epoch seconds
    local_id: int
    tx_id: str | None = None  # 2.0.1: the charger's id; 1.6: the CSMS's id, as a string once known
    csms_id: int | None = None  # 1.6 transactionId assigned by the CSMS
    seq_no: int = 0  # 2.0.1: next seqNo
    remote_start_id: int | None = None
    charging_state: str = "EVConnected"
    authorized: bool = False
    ended: bool = False
    stop_reason: str | None = None
    meter_stop_wh: int | None = None
    id_tag_status: str | None = None
    begin_sample: dict[str, Any] | None = None
    id_type: str = "ISO14443"

    def next_seq(self) -> int:
        n = self.seq_no
        self.seq_no += 1
        return n


@dataclass
class Authorization:
    id_tag: str
    at: float  # sim monotonic
    id_type: str = "ISO14443"
    remote_start_id: int | None = None
    remote: bool = False
    profile: dict[str, Any] | None = None


@dataclass
class Profile:
    """A charging profile in normalised form (1.6 and 2.0.1 both map to it)."""

    id: int
    connector_id: int  # 0 = the whole charger
    stack_level: int
    purpose: str  # TxProfile / TxDefaultProfile / ChargePointMaxProfile
    kind: str  # Absolute / Relative / Recurring
    unit: str  # W / A
    periods: list[tuple[float, float, int | None]]  # (startPeriod s, limit, numberPhases)
    start_schedule: float | None = None  # epoch
    duration: float | None = None
    recurrency: str | None = None
    transaction_ref: str | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    received_at: float = 0.0  # epoch


@dataclass
class Connector:
    id: int
    hw: ConnectorHardware
    sim: SimulatedConnector | None = None
    status: str = "Available"
    reported_status: str | None = None
    operative: bool = True
    pending_operative: bool | None = None  # a ChangeAvailability Scheduled until the transaction ends
    tx: Transaction | None = None
    last_tx: Transaction | None = None
    auth: Authorization | None = None
    finishing: bool = False
    faulted: bool = False
    error_code: str = "NoError"
    profiles: dict[int, Profile] = field(default_factory=dict)
    limit_w: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    eval_task: asyncio.Future[None] | None = None

    @property
    def plugged(self) -> bool:
        return self.hw.ev.plugged()

    def power_w(self) -> float:
        return self.hw.meter.power_w()

    def energy_wh(self) -> float:
        return self.hw.meter.energy_wh()


@dataclass
class Outgoing:
    """One entry of the ordered outbox."""

    action: str
    build: Callable[[], dict[str, Any] | None]  # None = drop (nothing to send any more)
    persistent: bool  # transaction message: survives disconnects, replayed in order
    on_result: Callable[[dict[str, Any]], None] | None = None
    result: asyncio.Future[dict[str, Any]] | None = None
    payload: dict[str, Any] | None = None  # built once, so retries and replays are identical
    attempts: int = 0
    key: int | None = None  # its row in the journal (a charge point with a durable outbox)


class OutboxJournal(Protocol):
    """Where a charge point with a durable outbox (the firmware shim) writes transaction messages before
    they are sent, and the transactions they belong to; the simulator has none (its outbox is memory)."""

    def append(self, action: str, payload: dict[str, Any], tx: Transaction | None) -> int:
        """Store a message (and the current state of its transaction); returns its key."""
        ...

    def done(self, key: int) -> None:
        """The message was answered (or given up on): never send it again."""
        ...

    def set_csms_tx_id(self, local_id: int, csms_id: int) -> None:
        """1.6: the central system's transactionId of a local transaction."""
        ...


@dataclass
class FrameRecord:
    t: float  # real time.time()
    direction: str  # in / out
    kind: str  # call / result / error / reply / raw
    action: str | None
    payload: Any


class ChargePoint:
    """Version-free charge point.  Use :func:`create_charge_point` to get the right subclass."""

    version: ClassVar[str] = ""
    subprotocol: ClassVar[str] = ""
    _tx_seq: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(
        self,
        options: ChargePointOptions,
        *,
        stats: Stats | None = None,
        clock: Clock | None = None,
        hardware: dict[int, ConnectorHardware] | None = None,
    ) -> None:
        self.options = options
        self.id = options.id
        self.faults = options.faults
        self.stats = stats or Stats()
        self.clock = clock or Clock(scale=options.clock_scale, skew_s=options.faults.clock_skew_s)
        if "unsynced_clock" in self.faults.quirks:
            self.clock.unsynced_until_boot = True
            self.clock.mark_unsynced()
        self.connectors: dict[int, Connector] = {}
        for cid in range(1, options.connectors + 1):
            if hardware and cid in hardware:
                conn = Connector(cid, hardware[cid])
            else:
                sim = SimulatedConnector(options.charger, self.clock, options.initial_energy_wh)
                conn = Connector(cid, sim.hardware, sim)
            conn.hw.subscribe(self._make_listener(conn))
            self.connectors[cid] = conn
        # connection state
        # stopped/connecting/booting/pending/rejected/accepted/offline/rebooting/disconnected/refused
        self.state = "stopped"
        self.registration: str | None = None
        self.conn: OcppConnection | None = None
        self.boot_count = 0
        self.boot_reason = "PowerUp"
        self.heartbeat_interval = options.heartbeat_interval_s
        self.meter_interval = options.meter_interval_s
        self.outbox: deque[Outgoing] = deque()
        self.frames: deque[FrameRecord] = deque(maxlen=options.log_size)
        self.data_transfers: list[dict[str, Any]] = []
        self.costs: list[dict[str, Any]] = []
        self.last_error: str | None = None
        self.connect_count = 0
        self.disconnect_count = 0
        self._main: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._session_tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._online_allowed = asyncio.Event()
        self._online_allowed.set()
        self._offline_until: float | None = None
        self._reboot_requested: str | None = None
        self._changed = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._hb_wake = asyncio.Event()
        self._meter_wake = asyncio.Event()
        self._station_profile_store: list[Profile] = []
        self.lock_meter_interval = False  # load tests: refuse the CSMS's meter interval changes
        self.journal: OutboxJournal | None = None  # durable outbox (the firmware shim); None: memory only
        self._csms_tx_ids: dict[int, int] = {}  # 1.6: local transaction id -> the CSMS's transactionId
        self._init_config()

    # ============================================================ version hooks (subclasses)
    def _init_config(self) -> None:
        raise NotImplementedError

    def _boot_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _send_status(self, conn: Connector) -> None:
        raise NotImplementedError

    async def _send_all_statuses(self) -> None:
        for c in self.connectors.values():
            await self._send_status(c)

    def _authorize_payload(self, id_tag: str) -> dict[str, Any]:
        raise NotImplementedError

    def _authorize_status(self, result: dict[str, Any]) -> str:
        raise NotImplementedError

    def _on_tx_started(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        raise NotImplementedError

    def _on_tx_authorized(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        """2.0.1 only: a transaction started at plug-in becomes authorised."""

    def _on_tx_sample(self, conn: Connector, tx: Transaction | None, trigger: str) -> None:
        raise NotImplementedError

    def _on_tx_ended(self, conn: Connector, tx: Transaction, reason: str, trigger: str) -> None:
        raise NotImplementedError

    def _on_charging_state(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        """2.0.1: TransactionEvent Updated on chargingState changes."""

    def _starts_on_plug(self) -> bool:
        return False

    async def _handle(self, action: str, payload: dict[str, Any]) -> Reply:
        raise NotImplementedError

    def _after_boot_accepted(self) -> None:
        pass

    # ============================================================ public driving API
    async def start(self) -> None:
        """Start the connection loop in the background (idempotent)."""
        if self._main is None or self._main.done():
            self._stopping = False
            self._main = asyncio.create_task(self._run(), name=f"cp-{self.id}")
            # the meter keeps sampling while offline: samples of a transaction queue up for replay
            self._spawn(self._meter_loop())

    async def run(self) -> None:
        """Run in the foreground until :meth:`stop`."""
        await self.start()
        assert self._main is not None
        await self._main

    async def stop(self, end_transactions: bool = False) -> None:
        """Stop: optionally end running transactions first (their messages are sent if online)."""
        if end_transactions:
            for c in self.connectors.values():
                if c.tx is not None:
                    async with c.lock:
                        await self._stop_tx(c, "Local", "StopAuthorized")
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda: not any(o.persistent for o in self.outbox) or not self.online, 5)
        self._stopping = True
        self._online_allowed.set()
        if self.conn is not None:
            await self.conn.close()
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
        for t in list(self._tasks):
            t.cancel()
        self.state = "stopped"
        self._pulse()

    async def plug_in(
        self, connector_id: int = 1, ev: str | EVModel = "sedan", soc: float = 0.3, target_soc: float = 1.0
    ) -> None:
        """Plug a simulated EV in (Preparing; the transaction starts once authorised)."""
        conn = self._conn(connector_id)
        if conn.sim is None:
            raise RuntimeError("plug_in drives the simulated hardware only")
        conn.sim.plug_in(ev_from_spec(ev), soc, target_soc)
        await self._settle(conn)

    async def unplug(self, connector_id: int = 1) -> None:
        """Unplug the EV: ends a running transaction (EVDisconnected)."""
        conn = self._conn(connector_id)
        if conn.sim is None:
            raise RuntimeError("unplug drives the simulated hardware only")
        conn.sim.unplug()
        await self._settle(conn)

    async def authorize(self, connector_id: int, id_tag: str) -> bool:
        """Present an id tag at the connector (RFID swipe).  Starts a transaction when the tag is accepted
        (and the EV is plugged, or once it is plugged within the connection timeout); presenting the tag
        of the running transaction stops it.  Returns whether the tag was accepted."""
        conn = self._conn(connector_id)
        if conn.tx is not None and conn.tx.id_tag == id_tag:
            await self.stop_charging(connector_id, reason="Local")
            return True
        status = await self._authorize_remote(id_tag)
        if status != "Accepted":
            return False
        conn.auth = Authorization(id_tag, self.clock.monotonic())
        conn.finishing = False
        await self._evaluate(conn)
        return True

    async def stop_charging(self, connector_id: int = 1, reason: str = "Local") -> None:
        """End the running transaction on a connector (the stop button / the same card again)."""
        conn = self._conn(connector_id)
        trigger = {"Remote": "RemoteStop", "DeAuthorized": "Deauthorized"}.get(reason, "StopAuthorized")
        async with conn.lock:
            if conn.tx is not None:
                await self._stop_tx(conn, reason, trigger)

    async def disconnect(self, for_s: float = 0.0, graceful: bool = True) -> None:
        """Drop the connection; stay offline for ``for_s`` real seconds (0 = reconnect right away).
        Transaction messages generated meanwhile are queued and replayed in order on reconnect."""
        if for_s > 0:
            self._online_allowed.clear()
            self._offline_until = time.monotonic() + for_s
            self._spawn(self._reenable_online(for_s))
        conn = self.conn
        if conn is not None:
            if graceful:
                await conn.close()
            else:
                conn.ws.transport.abort()  # no close frame: a half-open socket as far as the CSMS knows
        await self.wait_for(lambda: self.conn is None or self.conn is not conn, 5)

    def go_offline(self) -> None:
        """Stay offline until :meth:`go_online` (and drop the connection now)."""
        self._online_allowed.clear()
        self._offline_until = None
        if self.conn is not None:
            self._spawn(self.conn.close())

    def go_online(self) -> None:
        self._online_allowed.set()

    async def reboot(self, reason: str = "RemoteReset") -> None:
        """Reboot as after a Reset: end transactions, flush the outbox, drop the link, boot again."""
        self._reboot_requested = reason
        for c in self.connectors.values():
            if c.tx is not None:
                async with c.lock:
                    if c.tx is not None:
                        await self._stop_tx(c, self._reset_stop_reason(reason), "ResetCommand")
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: not self.outbox or not self.online, 5)
        self.state = "rebooting"
        self._pulse()
        if self.conn is not None:
            await self.conn.close()

    def _reset_stop_reason(self, reason: str) -> str:
        return "SoftReset" if reason != "HardReset" else "HardReset"

    def set_fault(self, connector_id: int, faulted: bool, error_code: str = "OtherError") -> None:
        """Put a connector in Faulted (ends nothing by itself; a real fault opens the contactor)."""
        conn = self._conn(connector_id)
        conn.faulted = faulted
        conn.error_code = error_code if faulted else "NoError"
        if faulted:
            conn.hw.contactor.open()
        elif conn.tx is not None:
            conn.hw.contactor.close()
        self._spawn(self._refresh_status(conn))

    @property
    def online(self) -> bool:
        return self.conn is not None and self.registration == "Accepted" and not self.conn.closed.is_set()

    def connector(self, connector_id: int = 1) -> Connector:
        return self._conn(connector_id)

    def transaction(self, connector_id: int = 1) -> Transaction | None:
        return self._conn(connector_id).tx

    def sent(self, action: str | None = None) -> list[Any]:
        """Payloads of CALLs sent so far (from the frame log), optionally for one action."""
        return [
            f.payload
            for f in self.frames
            if f.direction == "out" and f.kind == "call" and (action is None or f.action == action)
        ]

    # ---------------------------------------------------------------- waiting
    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true, re-checking on every state change; TimeoutError if not."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                ev = self._changed
                with contextlib.suppress(TimeoutError):
                    # re-check at least every 0.2 s for conditions on time-driven values
                    await asyncio.wait_for(ev.wait(), 0.5)

    async def wait_online(self, timeout_s: float = 10.0) -> None:
        await self.wait_for(lambda: self.online, timeout_s)

    async def wait_status(self, connector_id: int, status: str, timeout_s: float = 10.0) -> None:
        conn = self._conn(connector_id)
        await self.wait_for(lambda: conn.status == status, timeout_s)

    async def wait_transaction(self, connector_id: int = 1, timeout_s: float = 10.0) -> Transaction:
        conn = self._conn(connector_id)
        await self.wait_for(lambda: conn.tx is not None, timeout_s)
        assert conn.tx is not None
        return conn.tx

    async def wait_outbox_empty(self, timeout_s: float = 10.0) -> None:
        await self.wait_for(lambda: not self.outbox and self.online, timeout_s)

    def snapshot(self) -> dict[str, Any]:
        """A view-friendly summary (used by the live table and the demo)."""
        conns = []
        for c in self.connectors.values():
            tx = c.tx
            conns.append(
                {
                    "id": c.id,
                    "status": c.status,
                    "power_kw": round(c.power_w() / 1000.0, 2),
                    "energy_kwh": round(c.energy_wh() / 1000.0, 3),
                    "session_kwh": round((c.energy_wh() - tx.meter_start_wh) / 1000.0, 3) if tx else None,
                    "soc": c.hw.meter.soc_percent(),
                    "transaction": (tx.tx_id or f"local-{tx.local_id}") if tx else None,
                    "id_tag": tx.id_tag if tx else None,
                    "limit_w": c.limit_w,
                }
            )
        return {
            "id": self.id,
            "protocol": self.version,
            "state": self.state,
            "online": self.online,
            "queued": len(self.outbox),
            "connectors": conns,
        }

    # ============================================================ internals: connection loop
    def _conn(self, connector_id: int) -> Connector:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise ValueError(f"{self.id} has no connector {connector_id}") from None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ConnectionLost | TimeoutError | CallError):
                log.error("%s: background task failed: %r", self.id, exc, exc_info=exc)

    async def _reenable_online(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._offline_until = None
        self._online_allowed.set()
        self._pulse()

    @property
    def url(self) -> str:
        return self.options.csms_url.rstrip("/") + "/" + self.id

    def take_new_password(self, password: str) -> bool:
        """A new HTTP Basic password from the CSMS: kept (used from the next connection) unless this
        charger is set to refuse it."""
        if not self.options.accept_new_password:
            return False
        self.options.password = password
        log.info("%s: new password accepted; reconnecting with it", self.id)
        return True

    async def reconnect_with_new_password(self) -> None:
        """After the reply accepting a new password: drop the link; the reconnect uses the new one."""
        await self.disconnect()

    def _headers(self) -> dict[str, str]:
        if self.options.password is None:
            return {}
        token = base64.b64encode(f"{self.id}:{self.options.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _backoff(self, attempt: int) -> float:
        base = min(self.options.reconnect_max_s, self.options.reconnect_min_s * (2 ** min(attempt, 16)))
        return base * random.uniform(0.5, 1.0)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            if not self._online_allowed.is_set():
                self.state = "offline"
                self._pulse()
                await self._online_allowed.wait()
                continue
            if self._reboot_requested is not None:
                await self._do_reboot()
            self.state = "connecting"
            self._pulse()
            try:
                ws = await websockets.connect(
                    self.url,
                    subprotocols=[self.subprotocol],  # type: ignore[list-item]
                    additional_headers=self._headers(),
                    open_timeout=self.options.connect_timeout_s,
                    close_timeout=2,
                    max_size=2**22,
                    **({"ssl": self.options.ssl_context} if self.options.ssl_context is not None else {}),
                )
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as e:
                self.stats.connect_failures += 1
                refusal = refusal_reason(e)  # answered 401 & co.: say so, not just "disconnected"
                if refusal is not None and refusal != self.last_error:
                    log.info("%s: %s", self.id, refusal)  # chargepoint-sim run prints it
                self.last_error = refusal or f"connect: {e}"
                self.state = "disconnected" if refusal is None else "refused"
                self._pulse()
                if isinstance(e, InvalidURI):
                    raise
                await self._sleep_unless_stopping(self._backoff(attempt))
                attempt += 1
                continue
            if ws.subprotocol != self.subprotocol:
                self.last_error = f"server chose subprotocol {ws.subprotocol!r}, wanted {self.subprotocol!r}"
                log.warning("%s: %s", self.id, self.last_error)
                await ws.close()
                self.stats.connect_failures += 1
                await self._sleep_unless_stopping(self._backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            self.stats.connects += 1
            self.connect_count += 1
            conn = OcppConnection(
                ws,
                self.version,
                self._handle,
                stats=self.stats,
                call_timeout=self.options.call_timeout_s,
                validate_outbound=self.options.validate_outbound,
                on_frame=self._record_frame,
                spawn=self._spawn,
            )
            self.conn = conn
            reader = asyncio.create_task(conn.run())
            session = asyncio.create_task(self._session(conn))
            self._session_tasks = [reader, session]
            try:
                await asyncio.wait({reader, session}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if session.done() and not session.cancelled() and session.exception() is not None:
                    exc = session.exception()
                    if not isinstance(exc, ConnectionLost):
                        log.error("%s: session failed: %r", self.id, exc, exc_info=exc)
                        self.last_error = f"session: {exc!r}"
                await conn.close()
                for t in (reader, session):
                    t.cancel()
                for t in (reader, session):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
                self.conn = None
                self.registration = None
                self._drop_transient()
                if not self._stopping:
                    self.stats.disconnects += 1
                    self.disconnect_count += 1
                    self.state = "disconnected"
                self._pulse()
            if not self._stopping and self._reboot_requested is None and self._online_allowed.is_set():
                await self._sleep_unless_stopping(self._backoff(0))

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        if self._stopping:
            return
        await asyncio.sleep(seconds)

    async def _do_reboot(self) -> None:
        reason = self._reboot_requested or "RemoteReset"
        self._reboot_requested = None
        self.state = "rebooting"
        self._pulse()
        await asyncio.sleep(self.options.reboot_delay_s)
        self.boot_reason = reason
        if "meter_start_resets_on_boot" in self.faults.quirks:
            for c in self.connectors.values():
                if c.sim is not None:
                    c.sim.reset_register()
        # volatile state is lost in a reboot; installed profiles (except TxProfiles) persist
        for c in self.connectors.values():
            c.auth = None
            c.profiles = {k: p for k, p in c.profiles.items() if p.purpose != "TxProfile"}
            self._apply_limit(c)
            if c.pending_operative is not None:
                c.operative = c.pending_operative
                c.pending_operative = None
        if "unsynced_clock" in self.faults.quirks:
            self.clock.mark_unsynced()

    def _drop_transient(self) -> None:
        kept: deque[Outgoing] = deque()
        for item in self.outbox:
            if item.persistent:
                kept.append(item)
            elif item.result is not None and not item.result.done():
                item.result.set_exception(ConnectionLost(item.action))
        self.outbox = kept

    def _record_frame(self, direction: str, kind: str, info: Any) -> None:
        action: str | None = None
        payload: Any = info
        if isinstance(info, tuple) and len(info) == 2:
            action, payload = info
        self.frames.append(FrameRecord(time.time(), direction, kind, action, payload))

    async def _session(self, conn: OcppConnection) -> None:
        await self._boot(conn)
        self._after_boot_accepted()
        await self._send_all_statuses()
        tasks = [
            asyncio.create_task(self._heartbeat_loop(conn)),
            asyncio.create_task(self._outbox_loop(conn)),
        ]
        try:
            await conn.closed.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _boot(self, conn: OcppConnection) -> None:
        self.state = "booting"
        self._pulse()
        while True:
            self.boot_count += 1
            try:
                result = await conn.call("BootNotification", self._boot_payload())
            except CallError as e:
                self.last_error = f"BootNotification: {e}"
                await self.clock.sleep(self.options.boot_retry_default_s)
                continue
            except TimeoutError:
                continue
            status = result.get("status")
            interval = float(result.get("interval") or 0)
            self.registration = status
            if status == "Accepted":
                if interval > 0:
                    self.heartbeat_interval = interval
                    self._set_heartbeat_config(interval)
                if "currentTime" in result:
                    self.clock.sync()
                self.state = "accepted"
                self.boot_reason = "PowerUp"
                self._pulse()
                return
            self.state = "pending" if status == "Pending" else "rejected"
            self._pulse()
            await self.clock.sleep(interval if interval > 0 else self.options.boot_retry_default_s)

    def _set_heartbeat_config(self, interval: float) -> None:
        """Reflect a heartbeat interval from BootNotification in the configuration store."""

    async def _heartbeat_loop(self, conn: OcppConnection) -> None:
        while True:
            self._hb_wake.clear()
            interval = self.heartbeat_interval
            if interval <= 0:
                await self._hb_wake.wait()
                continue
            try:
                await asyncio.wait_for(self._hb_wake.wait(), self.clock.real_seconds(interval))
                continue  # interval changed: restart the timer
            except TimeoutError:
                pass
            with contextlib.suppress(TimeoutError, CallError):
                await self._call(conn, "Heartbeat", {})

    async def _meter_loop(self) -> None:
        while True:
            self._meter_wake.clear()
            interval = self.meter_interval
            if interval <= 0:
                await self._meter_wake.wait()
                continue
            try:
                await asyncio.wait_for(self._meter_wake.wait(), self.clock.real_seconds(interval))
                continue
            except TimeoutError:
                pass
            self._sample_all()

    def _sample_all(self) -> None:
        for c in self.connectors.values():
            self._apply_limit(c)
            if c.tx is not None:
                self._on_tx_sample(c, c.tx, "MeterValuePeriodic")
            self._spawn(self._refresh_status(c))

    async def _call(self, conn: OcppConnection, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A CALL with the duplicate-send fault applied."""
        dup = self.faults.duplicate_sends
        if dup and self.faults.duplicate_mode == "same_id":
            return await conn.call(action, payload, duplicate=True)
        result = await conn.call(action, payload)
        if dup:
            with contextlib.suppress(CallError, TimeoutError):
                await conn.call(action, payload)
        return result

    # ---------------------------------------------------------------- outbox
    def _post(
        self,
        action: str,
        build: Callable[[], dict[str, Any] | None] | dict[str, Any],
        *,
        persistent: bool = False,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        want_result: bool = False,
        tx: Transaction | None = None,
    ) -> asyncio.Future[dict[str, Any]] | None:
        """Queue a message.  Transient messages are dropped while offline; persistent (transaction)
        messages wait and are replayed in order.  A persistent message is a complete payload apart from
        what :meth:`_resolve` adds when it is sent (1.6: the CSMS's transactionId of ``tx``); with a
        journal it is written there before it is queued."""
        if not persistent and not self.online:
            return None
        key: int | None = None
        if persistent:
            template = build() if callable(build) else build
            if template is None:
                return None
            local_id = tx.local_id if tx is not None else None
            if self.journal is not None:
                key = self.journal.append(action, template, tx)

            def resolved() -> dict[str, Any] | None:
                return self._resolve(action, template, local_id)

            build = resolved
        builder: Callable[[], dict[str, Any] | None]
        if isinstance(build, dict):
            fixed = build

            def builder() -> dict[str, Any] | None:
                return fixed
        else:
            builder = build
        fut: asyncio.Future[dict[str, Any]] | None = None
        if want_result:
            fut = asyncio.get_running_loop().create_future()
        self.outbox.append(Outgoing(action, builder, persistent, on_result, fut, key=key))
        self._outbox_wake.set()
        self._pulse()
        return fut

    def _resolve(self, action: str, payload: dict[str, Any], local_id: int | None) -> dict[str, Any] | None:
        """The payload of a queued transaction message as it is sent (None: drop it)."""
        return payload

    def _remember_csms_tx_id(self, local_id: int, csms_id: int) -> None:
        self._csms_tx_ids[local_id] = csms_id
        if self.journal is not None:
            self.journal.set_csms_tx_id(local_id, csms_id)

    def _outbox_item_done(self, item: Outgoing) -> None:
        if item.key is not None and self.journal is not None:
            self.journal.done(item.key)

    async def _outbox_loop(self, conn: OcppConnection) -> None:
        while True:
            if not self.outbox:
                self._outbox_wake.clear()
                await self._outbox_wake.wait()
                continue
            item = self.outbox[0]
            if item.payload is None:
                item.payload = item.build()
                if item.payload is None:
                    self.outbox.popleft()
                    self._outbox_item_done(item)
                    continue
            try:
                result = await self._call(conn, item.action, item.payload)
            except ConnectionLost:
                return  # stays at the head; replayed after reconnect
            except (TimeoutError, CallError) as e:
                item.attempts += 1
                if item.attempts < self.options.message_attempts and item.persistent:
                    await asyncio.sleep(self.options.message_retry_s * item.attempts)
                    continue
                self.outbox.popleft()
                self._outbox_item_done(item)
                if item.result is not None and not item.result.done():
                    item.result.set_exception(e)
                self._pulse()
                continue
            self.outbox.popleft()
            if item.on_result is not None:
                try:
                    item.on_result(result)
                except Exception:
                    log.exception("%s: handling the result of %s failed", self.id, item.action)
            self._outbox_item_done(item)  # after on_result: a 1.6 transactionId is journalled first
            if item.result is not None and not item.result.done():
                item.result.set_result(result)
            self._pulse()

    # ============================================================ internals: connectors & transactions
    def _make_listener(self, conn: Connector) -> Callable[[], None]:
        def listener() -> None:
            conn.eval_task = self._spawn(self._evaluate(conn))

        return listener

    def hardware_changed(self, connector_id: int) -> None:
        """For hardware drivers: something changed at the connector (plug state, EV full)."""
        conn = self._conn(connector_id)
        conn.eval_task = self._spawn(self._evaluate(conn))

    async def _settle(self, conn: Connector) -> None:
        if conn.eval_task is not None:
            await conn.eval_task
        else:
            await self._evaluate(conn)

    async def _authorize_remote(self, id_tag: str) -> str:
        if not self.online:
            return "Accepted" if self._local_authorize_offline() else "Invalid"
        fut = self._post("Authorize", self._authorize_payload(id_tag), want_result=True)
        if fut is None:
            return "Accepted" if self._local_authorize_offline() else "Invalid"
        try:
            result = await asyncio.wait_for(fut, self.options.call_timeout_s + 5)
        except (ConnectionLost, TimeoutError):
            return "Accepted" if self._local_authorize_offline() else "Invalid"
        except CallError:
            return "Invalid"
        return self._authorize_status(result)

    def _local_authorize_offline(self) -> bool:
        return True

    async def _evaluate(self, conn: Connector) -> None:
        """React to the current hardware state: start / stop transactions, update status."""
        async with conn.lock:
            now = self.clock.monotonic()
            if conn.auth is not None and now - conn.auth.at > self.options.connection_timeout_s:
                conn.auth = None
            if conn.plugged:
                if conn.tx is None and not conn.finishing and conn.operative and not conn.faulted:
                    if conn.auth is not None:
                        await self._start_tx(conn, conn.auth)
                    elif self._starts_on_plug():
                        await self._start_tx(conn, None)
                elif conn.tx is not None and not conn.tx.authorized and conn.auth is not None:
                    self._authorize_tx(conn, conn.tx, conn.auth)
            else:
                conn.finishing = False
                if conn.tx is not None:
                    await self._stop_tx(conn, "EVDisconnected", "EVDeparted")
            await self._refresh_status_locked(conn)

    def _authorize_tx(self, conn: Connector, tx: Transaction, auth: Authorization) -> None:
        tx.authorized = True
        tx.id_tag = auth.id_tag
        tx.id_type = auth.id_type
        tx.remote_start_id = auth.remote_start_id
        conn.auth = None
        self._install_auth_profile(conn, auth)
        conn.hw.contactor.close()
        self._apply_limit(conn)
        self._on_tx_authorized(conn, tx, "RemoteStart" if auth.remote else "Authorized")

    async def _start_tx(self, conn: Connector, auth: Authorization | None) -> None:
        tx = Transaction(
            connector_id=conn.id,
            id_tag=auth.id_tag if auth else None,
            meter_start_wh=int(conn.energy_wh()),
            started_at=self.clock.epoch(),
            local_id=self._new_local_id(),
            remote_start_id=auth.remote_start_id if auth else None,
            authorized=auth is not None,
            id_type=auth.id_type if auth else "ISO14443",
        )
        conn.tx = tx
        conn.last_tx = tx
        if auth is not None:
            conn.auth = None
            self._install_auth_profile(conn, auth)
            if not conn.faulted:
                conn.hw.contactor.close()
        self._apply_limit(conn)
        tx.charging_state = self._charging_state(conn)
        trigger = "CablePluggedIn" if auth is None else ("RemoteStart" if auth.remote else "Authorized")
        self._on_tx_started(conn, tx, trigger)
        self._pulse()

    def _new_local_id(self) -> int:
        return next(ChargePoint._tx_seq)

    def _install_auth_profile(self, conn: Connector, auth: Authorization) -> None:
        if auth.profile is not None:
            prof = self._parse_profile(auth.profile, conn.id)
            if prof is not None:
                conn.profiles[prof.id] = prof

    async def _stop_tx(self, conn: Connector, reason: str, trigger: str) -> None:
        tx = conn.tx
        if tx is None:
            return
        conn.hw.contactor.open()
        tx.ended = True
        tx.stop_reason = reason
        tx.meter_stop_wh = int(conn.energy_wh())
        tx.charging_state = "EVConnected" if conn.plugged else "Idle"
        self._on_tx_ended(conn, tx, reason, trigger)
        conn.tx = None
        conn.finishing = conn.plugged
        conn.profiles = {k: p for k, p in conn.profiles.items() if p.purpose != "TxProfile"}
        self._apply_limit(conn)
        if conn.pending_operative is not None:
            conn.operative = conn.pending_operative
            conn.pending_operative = None
        await self._refresh_status_locked(conn)
        self._pulse()

    def _charging_state(self, conn: Connector) -> str:
        if conn.tx is None:
            return "EVConnected" if conn.plugged else "Idle"
        if not conn.plugged:
            return "Idle"
        if not conn.tx.authorized:
            return "EVConnected"
        if not conn.hw.contactor.closed or (conn.limit_w is not None and conn.limit_w <= 0):
            return "SuspendedEVSE"
        if not conn.hw.ev.drawing_allowed():
            return "SuspendedEV"
        return "Charging"

    def _compute_status(self, conn: Connector) -> str:
        if conn.faulted:
            return "Faulted"
        if conn.tx is not None:
            state = self._charging_state(conn)
            if state == "EVConnected":
                return "Preparing"
            return "Finishing" if state == "Idle" else state
        if not conn.operative:
            return "Unavailable"
        if conn.plugged:
            return "Finishing" if conn.finishing else "Preparing"
        if conn.auth is not None:
            return "Preparing"
        return "Available"

    async def _refresh_status(self, conn: Connector) -> None:
        async with conn.lock:
            await self._refresh_status_locked(conn)

    async def _refresh_status_locked(self, conn: Connector) -> None:
        new = self._compute_status(conn)
        tx = conn.tx
        if tx is not None:
            cs = self._charging_state(conn)
            if cs != tx.charging_state:
                tx.charging_state = cs
                self._on_charging_state(conn, tx, "ChargingStateChanged")
        if new != conn.status:
            conn.status = new
            self._pulse()
        if conn.reported_status != self._wire_status(new) and self.online:
            await self._send_status(conn)

    def _wire_status(self, status: str) -> str:
        return status

    # ---------------------------------------------------------------- charging profiles
    def _parse_profile(self, raw: dict[str, Any], connector_id: int) -> Profile | None:
        raise NotImplementedError

    def _apply_limit(self, conn: Connector) -> None:
        limit = self._effective_limit(conn)
        if limit != conn.limit_w:
            conn.limit_w = limit
            conn.hw.ev.set_power_limit_w(limit)
            self._pulse()

    def _profile_limit_w(self, prof: Profile, now: float, tx: Transaction | None) -> float | None:
        if prof.valid_from is not None and now < prof.valid_from:
            return None
        if prof.valid_to is not None and now > prof.valid_to:
            return None
        if prof.kind == "Relative":
            origin = tx.started_at if tx is not None else now
        elif prof.kind == "Recurring" and prof.start_schedule is not None:
            period = 7 * 86400 if prof.recurrency == "Weekly" else 86400
            origin = prof.start_schedule + ((now - prof.start_schedule) // period) * period
        else:
            origin = prof.start_schedule if prof.start_schedule is not None else prof.received_at
        elapsed = now - origin
        if elapsed < 0 or (prof.duration is not None and elapsed > prof.duration):
            return None
        chosen: tuple[float, float, int | None] | None = None
        for period in sorted(prof.periods):
            if period[0] <= elapsed:
                chosen = period
        if chosen is None:
            return None
        _, limit, phases = chosen
        charger = self.options.charger
        return charger.amps_to_watts(limit, phases) if prof.unit == "A" else float(limit)

    def _effective_limit(self, conn: Connector) -> float | None:
        now = self.clock.epoch()
        tx = conn.tx
        candidates: list[Profile] = list(conn.profiles.values())
        candidates += [p for p in self._station_profiles() if p.connector_id == 0]

        def best(purpose: str) -> float | None:
            ps = [p for p in candidates if p.purpose == purpose]
            if purpose == "TxProfile":
                ps = [
                    p
                    for p in ps
                    if tx is not None and (p.transaction_ref is None or p.transaction_ref == self._tx_ref(tx))
                ]
            for p in sorted(ps, key=lambda p: (-p.stack_level, p.connector_id == 0)):
                limit = self._profile_limit_w(p, now, tx)
                if limit is not None:
                    return limit
            return None

        limit = best("TxProfile")
        if limit is None:
            limit = best("TxDefaultProfile")
        cap = best("ChargePointMaxProfile")
        if cap is not None:
            limit = cap if limit is None else min(limit, cap)
        return limit

    def _tx_ref(self, tx: Transaction) -> str | None:
        return tx.tx_id

    def _station_profiles(self) -> list[Profile]:
        return self._station_profile_store

    def _store_profile(self, prof: Profile) -> None:
        if prof.connector_id == 0:
            self._station_profile_store = [p for p in self._station_profile_store if p.id != prof.id]
            # same stack level and purpose replaces (spec)
            self._station_profile_store = [
                p
                for p in self._station_profile_store
                if not (p.stack_level == prof.stack_level and p.purpose == prof.purpose)
            ]
            self._station_profile_store.append(prof)
            for c in self.connectors.values():
                c.profiles.pop(prof.id, None)
        else:
            conn = self._conn(prof.connector_id)
            for k, p in list(conn.profiles.items()):
                if p.stack_level == prof.stack_level and p.purpose == prof.purpose:
                    del conn.profiles[k]
            conn.profiles[prof.id] = prof
        for c in self.connectors.values():
            self._apply_limit(c)
            self._spawn(self._refresh_status(c))

    def _clear_profiles(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: str | None,
        stack_level: int | None,
    ) -> bool:
        def matches(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            if connector_id is not None and p.connector_id != connector_id:
                return False
            if purpose is not None and p.purpose != purpose:
                return False
            return not (stack_level is not None and p.stack_level != stack_level)

        removed = False
        before = len(self._station_profile_store)
        self._station_profile_store = [p for p in self._station_profile_store if not matches(p)]
        removed |= len(self._station_profile_store) != before
        for c in self.connectors.values():
            for k, p in list(c.profiles.items()):
                if matches(p):
                    del c.profiles[k]
                    removed = True
        for c in self.connectors.values():
            self._apply_limit(c)
            self._spawn(self._refresh_status(c))
        return removed

    # ---------------------------------------------------------------- meter samples
    def _ts(self) -> str:
        return iso(self.clock.now(), naive="naive_timestamps" in self.faults.quirks)

    def _measure(self, conn: Connector, measurand: str) -> tuple[float, str, str] | None:
        """(value, unit, location) of one measurand in SI-ish units (Wh, W, A, V, Percent); None when
        this charger cannot measure it right now.  Quirks that change units are applied by the caller."""
        charger = self.options.charger
        if measurand == "Energy.Active.Import.Register":
            return float(int(conn.energy_wh())), "Wh", "Outlet"
        if measurand == "Power.Active.Import":
            return round(conn.power_w(), 1), "W", "Outlet"
        if measurand == "SoC":
            soc = conn.hw.meter.soc_percent()
            return (round(soc, 1), "Percent", "EV") if soc is not None else None
        if measurand == "Current.Import":
            return round(charger.watts_to_amps(conn.power_w()), 2), "A", "Outlet"
        if measurand == "Voltage":
            return charger.voltage, "V", "Outlet"
        if measurand == "Power.Offered":
            offered = charger.max_power_w if conn.limit_w is None else min(conn.limit_w, charger.max_power_w)
            return round(offered, 1), "W", "Outlet"
        if measurand == "Current.Offered":
            offered = charger.max_power_w if conn.limit_w is None else min(conn.limit_w, charger.max_power_w)
            return round(charger.watts_to_amps(offered), 2), "A", "Outlet"
        return None


SUPPORTED_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "SoC",
    "Current.Import",
    "Voltage",
    "Power.Offered",
    "Current.Offered",
)


def create_charge_point(
    options: ChargePointOptions,
    *,
    stats: Stats | None = None,
    clock: Clock | None = None,
    hardware: dict[int, ConnectorHardware] | None = None,
) -> ChargePoint:
    """The charge point class for ``options.protocol`` ("1.6" or "2.0.1")."""
    from chargepoint_sim.v16 import ChargePoint16
    from chargepoint_sim.v201 import ChargePoint201

    cls: type[ChargePoint] = ChargePoint16 if options.protocol == "1.6" else ChargePoint201
    return cls(options, stats=stats, clock=clock, hardware=hardware)
