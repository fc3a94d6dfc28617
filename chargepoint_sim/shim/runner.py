"""The shim's life: open the relays, read the meters, replay the queue, speak OCPP, keep everything safe.

Start-up order: every relay is written *open* first (whatever state a crash or a power cut left it in),
then the offline queue is opened, the meters are read once, the charge point is built with the board's
hardware behind it, messages left in the queue are put back in its outbox in their order, and
transactions that were running when the shim last stopped are ended (reason PowerLoss) at the meter's
reading.  Then, per connector, a meter poller and a relay/EVSE actuator run beside the charge point,
and a watchdog opens the relay of a running session once the central system has been unreachable for
longer than ``offline.grace_s`` (it may close again once the central system is back).

Stopping (SIGTERM / SIGINT) opens every relay first, reads the meters, ends running transactions and
gives the outbox a few seconds to reach the central system (what does not is still in the queue).  An
unhandled error anywhere opens the relays and ends the run with exit code 1 (systemd restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

from chargepoint_sim.chargepoint import ChargePointOptions, Outgoing, Transaction
from chargepoint_sim.shim.chargepoint import ShimChargePoint, create_shim_charge_point
from chargepoint_sim.shim.config import ShimConfig
from chargepoint_sim.shim.connector import ShimConnector
from chargepoint_sim.shim.evse import EvseError, ModbusCurrentEvse, make_ev_input
from chargepoint_sim.shim.meters import PolledMeter, make_meter
from chargepoint_sim.shim.modbus import Buses
from chargepoint_sim.shim.queue import OfflineQueue, QueuedMessage, QueueError
from chargepoint_sim.shim.relays import RelayError, make_relay

log = logging.getLogger("satwatt.shim")

SHUTDOWN_FLUSH_S = 5.0
RELAY_OPEN_TIMEOUT_S = 5.0
WATCH_TICK_S = 0.1

FAULT_CODES = {"meter": "PowerMeterFailure", "relay": "PowerSwitchFailure", "evse": "OtherError"}


class StartupError(Exception):
    """The shim cannot start (a driver or the queue cannot be opened); the message says why."""


class Shim:
    def __init__(self, cfg: ShimConfig, firmware: str = "satwatt-shim") -> None:
        self.cfg = cfg
        self.firmware = firmware
        self.buses = Buses()
        self.connectors: dict[int, ShimConnector] = {}
        self.queue: OfflineQueue | None = None
        self.cp: ShimChargePoint | None = None
        self.stop_requested = asyncio.Event()
        self.stop_reason = "Local"
        self.fatal: BaseException | None = None
        self.faults: dict[int, dict[str, str]] = {}  # connector -> source -> message
        # connector -> the transaction found running in the queue at start, ended once its meter answers
        self._recoveries: dict[int, Transaction] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.offline_since: float | None = None
        self.ready = asyncio.Event()  # the charge point is running (tests wait on it)

    # ------------------------------------------------------------------ public
    def request_stop(self, reason: str = "Local") -> None:
        self.stop_reason = reason
        self.stop_requested.set()

    async def run(self) -> int:
        """Run until :meth:`request_stop` (exit code 0) or an unhandled error (1)."""
        try:
            await self._open_hardware()
            self._open_queue()
            await self._first_readings()
            self._make_charge_point()
            assert self.cp is not None
            await self._recover_transactions()
            await self.cp.start()
            for sc in self.connectors.values():
                self._spawn(self._meter_loop(sc), f"meter-{sc.id}")
                self._spawn(self._actuator_loop(sc), f"relay-{sc.id}")
            self._spawn(self._watchdog(), "watchdog")
            self.ready.set()
            log.info("%s: running (OCPP %s to %s)", self.cfg.charge_point.id, self.cp.version, self.cp.url)
            await self.stop_requested.wait()
        except StartupError:
            await self._safe_stop(graceful=False)
            raise
        except BaseException as e:  # anything at all: open the relays first, then report it
            self.fatal = self.fatal or e
        await self._safe_stop(graceful=self.fatal is None)
        if self.fatal is not None:
            if isinstance(self.fatal, asyncio.CancelledError | KeyboardInterrupt):
                return 130
            log.error("unhandled error, relays opened: %r", self.fatal, exc_info=self.fatal)
            return 1
        return 0

    # ------------------------------------------------------------------ start-up
    async def _open_hardware(self) -> None:
        for c in self.cfg.connectors:
            where = f"connectors[{c.id}]" if len(self.cfg.connectors) > 1 else ""
            prefix = f"{where}." if where else ""
            try:
                relay = make_relay(c.relay, self.buses)
            except RelayError as e:
                raise StartupError(f"{prefix}relay: {e}") from None
            evse = ModbusCurrentEvse(c.evse, self.buses) if c.evse is not None else None
            try:
                ev_input = make_ev_input(c.ev, self.buses) if c.ev is not None else None
            except EvseError as e:
                relay.close()
                raise StartupError(f"{prefix}ev: {e}") from None
            holder: dict[str, ShimConnector] = {}
            driver = make_meter(c.meter, self.buses, lambda h=holder: h["sc"].applied_closed is True)
            sc = ShimConnector(c, PolledMeter(driver, c.meter), relay, evse, ev_input)
            holder["sc"] = sc
            self.connectors[c.id] = sc
            self.faults[c.id] = {}
            try:
                await asyncio.wait_for(sc.open_now("startup"), RELAY_OPEN_TIMEOUT_S)
            except (RelayError, EvseError, TimeoutError) as e:
                source = "evse" if isinstance(e, EvseError) else "relay"
                self.faults[c.id][source] = str(e) or "timed out"
                log.error("connector %d: cannot open the relay at start: %s", c.id, e or "timed out")
            sc.holds.discard("startup")
            log.info("connector %d: meter %s, relay %s", c.id, driver.description, relay.description)

    def _open_queue(self) -> None:
        cp = self.cfg.charge_point
        try:
            self.queue = OfflineQueue(self.cfg.offline.queue, cp.id, cp.protocol)
        except QueueError as e:
            raise StartupError(str(e)) from None
        pending = self.queue.count()
        if pending:
            log.info("offline queue %s: %d message(s) to send", self.cfg.offline.queue, pending)

    async def _first_readings(self) -> None:
        for sc in self.connectors.values():
            if not await sc.meter.poll():
                sc.meter.failures = sc.meter.cfg.fault_after  # no reading at all: faulted until one comes
                self.faults[sc.id]["meter"] = sc.meter.last_error or "no reading"
                log.error("connector %d: meter not readable: %s", sc.id, sc.meter.last_error)

    def _make_charge_point(self) -> None:
        c = self.cfg.charge_point
        assert self.queue is not None
        options = ChargePointOptions(
            id=c.id,
            csms_url=c.base_url,
            protocol=c.protocol,
            password=c.password,
            connectors=len(self.connectors),
            vendor=c.vendor,
            model=c.model,
            serial=c.serial,
            firmware=self.firmware,
            meter_interval_s=c.meter_interval_s,
            heartbeat_interval_s=c.heartbeat_s,
            reconnect_min_s=1.0,
            reconnect_max_s=30.0,
            ssl_context=self._tls_context(),
        )
        meters = {sc.meter.driver.description.split(" (")[0] for sc in self.connectors.values()}
        cp = create_shim_charge_point(
            options, self.connectors, self.queue, self._on_unhandled, meter_type=", ".join(sorted(meters))
        )
        self.cp = cp
        for cid, sc in self.connectors.items():
            conn = cp.connector(cid)
            sc.assumed_present = lambda conn=conn: conn.auth is not None or conn.tx is not None
            if self.faults[cid]:
                self._sync_fault(cid)
        for msg in self.queue.pending():
            cp.outbox.append(self._restored(cp, msg))

    def _tls_context(self) -> ssl.SSLContext | None:
        c = self.cfg.charge_point
        if not c.base_url.startswith("wss://") or (c.ca_file is None and c.client_cert is None):
            return None
        try:
            context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise StartupError(f"charge_point.ca_file: not a usable CA file ({e})") from None
        if c.client_cert is not None:
            try:
                context.load_cert_chain(str(c.client_cert), str(c.client_key) if c.client_key else None)
            except (OSError, ssl.SSLError) as e:
                raise StartupError(
                    f"charge_point.client_cert: not a usable certificate and key ({e})"
                ) from None
        return context

    def _restored(self, cp: ShimChargePoint, msg: QueuedMessage) -> Outgoing:
        def build() -> dict[str, Any] | None:
            return cp._resolve(msg.action, msg.payload, msg.local_id)

        on_result = None
        if msg.action == "StartTransaction" and msg.local_id is not None:
            local_id = msg.local_id

            def on_result(result: dict[str, Any]) -> None:
                cp._remember_csms_tx_id(local_id, int(result["transactionId"]))

        return Outgoing(msg.action, build, True, on_result, key=msg.key)

    async def _recover_transactions(self) -> None:
        assert self.queue is not None and self.cp is not None
        for tx in self.queue.open_transactions():
            if tx.connector_id not in self.connectors:
                log.warning(
                    "a transaction of connector %d is in the queue, which has no such connector now",
                    tx.connector_id,
                )
                continue
            conn = self.cp.connector(tx.connector_id)
            conn.tx = tx  # no new transaction on this connector before this one is ended
            conn.last_tx = tx
            self._recoveries[tx.connector_id] = tx
            if self.connectors[tx.connector_id].meter.healthy:
                await self._end_recovered(tx.connector_id)

    async def _end_recovered(self, cid: int) -> None:
        tx = self._recoveries.pop(cid, None)
        if tx is None or self.cp is None:
            return
        conn = self.cp.connector(cid)
        async with conn.lock:
            if conn.tx is tx:
                await self.cp._stop_tx(conn, "PowerLoss", "AbnormalCondition")
        log.warning(
            "connector %d: transaction %s was running when the shim stopped; ended (PowerLoss) at %d Wh",
            cid,
            tx.tx_id or f"local-{tx.local_id}",
            tx.meter_stop_wh or 0,
        )

    # ------------------------------------------------------------------ loops
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"shim-{name}")
        task.add_done_callback(self._loop_done)
        self._tasks.append(task)

    def _loop_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._on_unhandled(task.exception())  # type: ignore[arg-type]

    def _on_unhandled(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.stop_requested.set()

    async def _meter_loop(self, sc: ShimConnector) -> None:
        assert self.cp is not None
        while True:
            ok = await sc.meter.poll()
            if ok:
                if "meter" in self.faults[sc.id]:
                    log.warning("connector %d: meter answers again", sc.id)
                    self._clear_fault(sc.id, "meter")
                if sc.id in self._recoveries:
                    await self._end_recovered(sc.id)
            elif not sc.meter.healthy and "meter" not in self.faults[sc.id]:
                log.error(
                    "connector %d: meter failed %d times: %s", sc.id, sc.meter.failures, sc.meter.last_error
                )
                self._set_fault(sc.id, "meter", sc.meter.last_error or "no reading")
            if sc.ev_input is not None:
                try:
                    if await sc.poll_ev():
                        log.info("connector %d: car %s", sc.id, "plugged in" if sc.ev_present else "gone")
                        self.cp.hardware_changed(sc.id)
                except EvseError as e:
                    log.warning("connector %d: car input: %s", sc.id, e)
            await asyncio.sleep(sc.meter.cfg.poll_s)

    async def _actuator_loop(self, sc: ShimConnector) -> None:
        last: bool | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sc.changed.wait(), sc.meter.cfg.poll_s)
            sc.changed.clear()
            try:
                await sc.apply()
            except RelayError as e:
                if "relay" not in self.faults[sc.id]:
                    log.error("connector %d: %s", sc.id, e)
                    self._set_fault(sc.id, "relay", str(e))
            except EvseError as e:
                if "evse" not in self.faults[sc.id]:
                    log.error("connector %d: %s", sc.id, e)
                    self._set_fault(sc.id, "evse", str(e))
            else:
                for source in ("relay", "evse"):
                    if source in self.faults[sc.id]:
                        log.warning("connector %d: %s works again", sc.id, source)
                        self._clear_fault(sc.id, source)
            if sc.applied_closed != last and sc.applied_closed is not None:
                last = sc.applied_closed
                log.info("connector %d: relay %s", sc.id, "closed" if last else "open")

    async def _watchdog(self) -> None:
        assert self.cp is not None
        cp = self.cp
        grace = self.cfg.offline.grace_s
        while True:
            now = time.monotonic()
            if cp.online:
                if self.offline_since is not None:
                    log.info("central system reachable again")
                self.offline_since = None
                for sc in self.connectors.values():
                    if "offline" in sc.holds:
                        sc.holds.discard("offline")
                        sc.wake()
                        log.info("connector %d: offline hold released", sc.id)
            else:
                if self.offline_since is None:
                    self.offline_since = now
                    log.warning("central system unreachable (%s)", cp.last_error or cp.state)
                if now - self.offline_since > grace:
                    for sc in self.connectors.values():
                        if cp.connector(sc.id).tx is not None and "offline" not in sc.holds:
                            sc.holds.add("offline")
                            sc.wake()
                            log.warning(
                                "connector %d: central system unreachable for %.0f s: relay opened",
                                sc.id,
                                grace,
                            )
            await asyncio.sleep(WATCH_TICK_S)

    # ------------------------------------------------------------------ faults
    def _set_fault(self, cid: int, source: str, message: str) -> None:
        self.faults[cid][source] = message
        self._sync_fault(cid)

    def _clear_fault(self, cid: int, source: str) -> None:
        self.faults[cid].pop(source, None)
        self._sync_fault(cid)

    def _sync_fault(self, cid: int) -> None:
        if self.cp is None:
            return
        conn = self.cp.connector(cid)
        active = [FAULT_CODES[s] for s in ("meter", "relay", "evse") if s in self.faults[cid]]
        if active and (not conn.faulted or conn.error_code != active[0]):
            self.cp.set_fault(cid, True, active[0])
        elif not active and conn.faulted:
            self.cp.set_fault(cid, False)

    # ------------------------------------------------------------------ stopping
    async def _safe_stop(self, graceful: bool) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        for sc in self.connectors.values():
            try:
                await asyncio.wait_for(sc.open_now("shutdown"), RELAY_OPEN_TIMEOUT_S)
            except (RelayError, EvseError, TimeoutError) as e:
                log.error(
                    "connector %d: could not open the relay on the way out: %s", sc.id, e or "timed out"
                )
        cp = self.cp
        if cp is not None:
            if graceful:
                await self._end_sessions(cp)
            with contextlib.suppress(Exception):
                await cp.stop()
        for sc in self.connectors.values():
            with contextlib.suppress(Exception):
                sc.relay.close()
            if sc.ev_input is not None:
                with contextlib.suppress(Exception):
                    sc.ev_input.close()
        with contextlib.suppress(Exception):
            await self.buses.close()
        if self.queue is not None:
            self.queue.close()

    async def _end_sessions(self, cp: ShimChargePoint) -> None:
        for sc in self.connectors.values():
            await sc.meter.poll()  # the register after the relay opened
            conn = cp.connector(sc.id)
            if conn.tx is not None and sc.meter.healthy:
                async with conn.lock:
                    if conn.tx is not None:
                        await cp._stop_tx(conn, self.stop_reason, "AbnormalCondition")
        if cp.online:
            with contextlib.suppress(TimeoutError):
                await cp.wait_for(
                    lambda: not any(o.persistent for o in cp.outbox) or not cp.online, SHUTDOWN_FLUSH_S
                )
