"""A light OCPP 1.6J load client: many chargers from one process, cheap enough not to limit a benchmark.

The full simulator (:mod:`chargepoint_sim.chargepoint`) models an EV, a charging curve and every
central-system call in its own task; that costs CPU and memory per charger.  This client does only
what a benchmark needs, with one task per charger:

* connect (raw ``websockets`` client, no permessage-deflate, no client pings, small queues),
  HTTP Basic auth when a password is given;
* BootNotification, then StartTransaction with the given id tag;
* then MeterValues with an energy register that grows at ``power_w`` (integer Wh, never decreasing),
  either **closed loop** (the next sample as soon as the previous one is answered) or every
  ``meter_interval_s`` seconds (phases spread evenly);
* central-system calls are answered inline by the same task (SetChargingProfile with limit 0 suspends
  the simulated power until ClearChargingProfile; RemoteStopTransaction ends the transaction);
* after a lost connection it reconnects with jittered exponential back-off, boots again and continues
  the same transaction (as chargers do), so a server restart can be measured (a reconnect storm);
* with ``more_urls`` (several central-system processes), charger i first connects to URL i mod n of
  ``[csms_url, *more_urls]`` and, after a lost connection or a failed connect, moves on to the next
  one: a killed process's chargers come back on another (cluster failover).

Frames are formatted from precomputed templates; timestamps are RFC 3339 with milliseconds and
strictly increasing per charger, so back-to-back readings never share a timestamp.

Every call's latency is kept with the time it was sent (seconds since the run began), so a caller can
take percentiles over any window: the measurement window of a closed-loop run, or the seconds after a
restart.  Only the URLs given are contacted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import math
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from chargepoint_sim.load import latency_summary

STOP_GRACE_S = 15.0


@dataclass
class LightConfig:
    """What the light load client does; see the module docstring."""

    csms_url: str
    chargers: int = 50
    closed_loop: bool = True
    duration_s: float = 20.0  # the measurement window, after every charger has started (or setup ran out)
    ramp_s: float = 5.0  # connections are opened evenly over this many seconds
    setup_timeout_s: float = 120.0  # after the ramp: how long to wait for every charger to be charging
    meter_interval_s: float = 10.0  # interval mode only
    password: str | None = None
    id_pattern: str = "LOAD-{n:05d}"
    id_tag: str = "LOAD-TAG"
    power_w: int = 11_000
    call_timeout_s: float = 30.0
    connect_timeout_s: float = 30.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 8.0
    end_transactions: bool = True  # StopTransaction for every open transaction at the end
    first_index: int = 1  # the first {n} of id_pattern
    # from the start: the youngest generation collected every 20,000 allocations instead of 700, and what
    # survived frozen every 10 s (full collections then walk only what is newer); with thousands of
    # connections and a setup of minutes, full collections took most of the client's time otherwise.
    # run() unfreezes at the end
    freeze_gc: bool = True
    # the share of chargers that start a transaction (spread evenly over the fleet); the others boot and
    # stay connected, idle, sending a Heartbeat every heartbeat_interval_s (None: the interval the
    # central system gave in its BootNotification answer)
    charging_fraction: float = 1.0
    # at most this many connection attempts (TCP + websocket handshake) in flight from the client at once;
    # the others wait their turn in the client (None: no bound). All simulated chargers share one address,
    # so unbounded attempts meet satwatt's per-address bound (429s, retried) or, with that bound lifted,
    # its handshake timeout; bounded, the fleet comes online as fast as the server admits it
    max_connecting: int | None = None
    heartbeat_interval_s: float | None = None
    # further central-system URLs (processes of one cluster): the fleet is spread over all of them, and a
    # charger that loses its connection (or cannot connect) tries the next URL; () keeps one URL only
    more_urls: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.csms_url, *self.more_urls)

    def __post_init__(self) -> None:
        if self.chargers < 1:
            raise ValueError("chargers must be >= 1")
        if self.ramp_s < 0 or self.duration_s <= 0 or self.setup_timeout_s <= 0:
            raise ValueError("ramp must be >= 0, duration and setup timeout > 0")
        if self.meter_interval_s <= 0:
            raise ValueError("meter interval must be > 0")
        if self.power_w < 0:
            raise ValueError("power must be >= 0 W")
        if self.max_connecting is not None and self.max_connecting < 1:
            raise ValueError("max_connecting must be >= 1 (or None)")
        if not 0.0 <= self.charging_fraction <= 1.0:
            raise ValueError("charging fraction must be between 0 and 1")
        if self.heartbeat_interval_s is not None and self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat interval must be > 0")
        if any(not url.startswith(("ws://", "wss://")) for url in self.urls):
            raise ValueError("the central system URL must start with ws:// or wss://")
        try:
            self.id_pattern.format(n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad id pattern {self.id_pattern!r}: {exc}") from None


class _Lost(Exception):
    """The connection is gone; reconnect."""


@dataclass
class LightStats:
    """Counters and latencies of a whole run (shared by every charger task)."""

    t0: float = field(default_factory=time.perf_counter)
    sent_at: array[float] = field(default_factory=lambda: array("d"))  # seconds since t0
    latency: array[float] = field(default_factory=lambda: array("d"))  # seconds
    action: array[int] = field(default_factory=lambda: array("b"))  # index into ACTIONS
    frames_in: int = 0
    frames_out: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    boots: int = 0
    transactions_started: int = 0
    transactions_stopped: int = 0
    remote_stops: int = 0
    suspensions: int = 0
    inbound_calls: Counter[str] = field(default_factory=Counter)
    call_errors: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # action -> non-Accepted answers

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def window(self, start: float, end: float, action: str | None = "MeterValues") -> list[float]:
        """Latencies (s) of the calls sent in [start, end) seconds after t0, of one action (or all)."""
        code = ACTIONS.index(action) if action is not None else -1
        return [
            lat
            for t, lat, a in zip(self.sent_at, self.latency, self.action, strict=True)
            if start <= t < end and (code < 0 or a == code)
        ]


ACTIONS = ("BootNotification", "StartTransaction", "MeterValues", "StopTransaction", "Heartbeat")
_BOOT, _START, _METER, _STOP, _HEARTBEAT = 0, 1, 2, 3, 4


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size (VmRSS, KiB) of a process from /proc; 0 where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _retry_after(value: str | None) -> float:
    """Seconds of a Retry-After header in seconds (0 when absent or a date); honoured after a 429/503."""
    try:
        return max(0.0, min(float(value or 0), 300.0))
    except ValueError:
        return 0.0


def _timestamp(epoch_ms: int) -> str:
    seconds, ms = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


# Frames as templates: (message id, transaction id, timestamp, register Wh)
_METER_FRAME = (
    '[2,"%s","MeterValues",{"connectorId":1,"transactionId":%d,"meterValue":[{"timestamp":"%s",'
    '"sampledValue":[{"value":"%d","measurand":"Energy.Active.Import.Register","unit":"Wh"},'
    '{"value":"%d","measurand":"Power.Active.Import","unit":"W"}]}]}]'
)
_BOOT_FRAME = '[2,"%s","BootNotification",{"chargePointVendor":"satwatt","chargePointModel":"lightload"}]'
_HEARTBEAT_FRAME = '[2,"%s","Heartbeat",{}]'
_START_FRAME = '[2,"%s","StartTransaction",{"connectorId":1,"idTag":%s,"meterStart":%d,"timestamp":"%s"}]'
_STOP_FRAME = (
    '[2,"%s","StopTransaction",{"transactionId":%d,"idTag":%s,"meterStop":%d,"timestamp":"%s","reason":"%s"}]'
)


def _answer(action: str, payload: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The answer to a central-system CALL: (payload, None) or (None, CALLERROR code)."""
    if action in ("SetChargingProfile", "ClearChargingProfile", "ChangeAvailability", "Reset"):
        return {"status": "Accepted"}, None
    if action in ("DataTransfer", "ChangeConfiguration", "RemoteStopTransaction"):
        return {"status": "Accepted"}, None
    if action == "GetConfiguration":
        keys = payload.get("key") if isinstance(payload, dict) else None
        return {"configurationKey": [], "unknownKey": list(keys or [])}, None
    if action in ("RemoteStartTransaction", "TriggerMessage", "GetCompositeSchedule"):
        return {"status": "Rejected"}, None
    if action == "UnlockConnector":
        return {"status": "NotSupported"}, None
    if action == "GetLocalListVersion":
        return {"listVersion": -1}, None
    return None, "NotImplemented"


def _limit_of(payload: Any) -> float | None:
    """The first period's limit of a SetChargingProfile, or None when it cannot be read."""
    try:
        periods = payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
        return float(periods[0]["limit"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


class LightCharger:
    """One simulated 1.6 charger: its connection, its transaction and its energy register."""

    __slots__ = (
        "_ms",
        "_msg",
        "_tag",
        "booted_at",
        "charges",
        "cid",
        "heartbeat_s",
        "in_call",
        "load",
        "online",
        "power_w",
        "register_at",
        "register_wh",
        "stop_requested",
        "suspended",
        "transaction_id",
        "url_index",
        "ws",
    )

    def __init__(self, load: LightLoad, cid: str, charges: bool = True, url_index: int = 0) -> None:
        self.load = load
        self.cid = cid
        self.charges = charges  # starts a transaction; otherwise stays idle, heartbeating
        self.heartbeat_s = load.cfg.heartbeat_interval_s
        self.ws: ClientConnection | None = None
        self._msg = 0
        self._ms = 0
        self._tag = json.dumps(load.cfg.id_tag)
        self.transaction_id: int | None = None
        self.register_wh = 0
        self.register_at = 0.0
        self.power_w = load.cfg.power_w
        self.suspended = False
        self.stop_requested = False
        self.in_call = False
        self.booted_at = -1.0  # seconds since t0 of the last accepted boot
        self.online = False
        self.url_index = url_index % len(load.cfg.urls)  # the fleet spread over the URLs by index

    @property
    def url(self) -> str:
        """The central-system URL this charger connects (or is connected) to."""
        return self.load.cfg.urls[self.url_index]

    def _next_url(self) -> None:
        """Move on to the next URL (only when there are several)."""
        self.url_index = (self.url_index + 1) % len(self.load.cfg.urls)

    # -- frames ---------------------------------------------------------------------------------------
    def _next_id(self) -> str:
        self._msg += 1
        return str(self._msg)

    def _stamp(self) -> str:
        ms = time.time_ns() // 1_000_000
        self._ms = ms if ms > self._ms else self._ms + 1
        return _timestamp(self._ms)

    def _advance_register(self) -> int:
        now = time.monotonic()
        if not self.suspended and self.register_at:
            # integer Wh, carried exactly: W * s / 3600 rounded down, remainder kept by not moving the clock
            gained = int(self.power_w * (now - self.register_at) // 3600)
            if gained > 0:
                self.register_wh += gained
                self.register_at += gained * 3600 / self.power_w
                return self.register_wh
            return self.register_wh
        self.register_at = now
        return self.register_wh

    # -- the wire ------------------------------------------------------------------------------------
    async def _send(self, frame: str) -> None:
        assert self.ws is not None
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise _Lost from exc
        self.load.stats.frames_out += 1

    async def _recv(self, deadline: float | None) -> Any:
        """The next frame, or None at ``deadline`` (loop time)."""
        assert self.ws is not None
        try:
            if deadline is None:
                raw = await self.ws.recv()
            else:
                async with asyncio.timeout_at(deadline):
                    raw = await self.ws.recv()
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise _Lost from exc
        self.load.stats.frames_in += 1
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def _serve(self, message: list[Any]) -> None:
        """Answer a central-system CALL."""
        stats = self.load.stats
        action = message[2] if len(message) > 3 and isinstance(message[2], str) else "?"
        payload = message[3] if len(message) > 3 else None
        stats.inbound_calls[action] += 1
        if action == "SetChargingProfile":
            limit = _limit_of(payload)
            if limit is not None:
                self._advance_register()
                self.suspended = limit <= 0
                stats.suspensions += self.suspended
        elif action == "ClearChargingProfile":
            self._advance_register()
            self.suspended = False
        elif action == "RemoteStopTransaction":
            stats.remote_stops += 1
        answer, error = _answer(action, payload)
        if error is not None:
            frame = json.dumps([4, message[1], error, f"{action} is not simulated", {}])
        else:
            frame = json.dumps([3, message[1], answer])
        await self._send(frame)
        if action == "RemoteStopTransaction":
            self.stop_requested = True  # carried out by the charger's loop, not inside another call

    async def call(self, code: int, frame: str, msg_id: str) -> Any:
        """Send a CALL and wait for its answer (answering central-system calls meanwhile).

        Returns the CALLRESULT payload, or None after a CALLERROR or a timeout (both counted).
        """
        stats = self.load.stats
        loop = asyncio.get_running_loop()
        self.in_call = True
        try:
            sent = time.perf_counter()
            await self._send(frame)
            deadline = loop.time() + self.load.cfg.call_timeout_s
            while True:
                message = await self._recv(deadline)
                if message is None:
                    if loop.time() >= deadline:
                        stats.timeouts += 1
                        return None
                    continue
                if not isinstance(message, list) or len(message) < 3:
                    continue
                kind = message[0]
                if kind == 2:
                    await self._serve(message)
                    continue
                if message[1] != msg_id:
                    continue
                stats.sent_at.append(sent - stats.t0)
                stats.latency.append(time.perf_counter() - sent)
                stats.action.append(code)
                if kind == 3:
                    return message[2]
                stats.call_errors[str(message[2])] += 1
                return None
        finally:
            self.in_call = False

    # -- the charger's life ------------------------------------------------------------------------------
    async def boot(self) -> bool:
        msg_id = self._next_id()
        reply = await self.call(_BOOT, _BOOT_FRAME % msg_id, msg_id)
        if isinstance(reply, dict) and reply.get("status") == "Accepted":
            interval = reply.get("interval")
            if self.load.cfg.heartbeat_interval_s is None and isinstance(interval, int) and interval > 0:
                self.heartbeat_s = float(interval)
            self.load.stats.boots += 1
            self.booted_at = self.load.stats.now()
            return True
        self.load.stats.rejected["BootNotification"] += 1
        return False

    async def start_transaction(self) -> bool:
        msg_id = self._next_id()
        self._advance_register()
        frame = _START_FRAME % (msg_id, self._tag, self.register_wh, self._stamp())
        reply = await self.call(_START, frame, msg_id)
        if not isinstance(reply, dict):
            return False
        status = (reply.get("idTagInfo") or {}).get("status")
        tx = reply.get("transactionId")
        if status != "Accepted" or not isinstance(tx, int):
            self.load.stats.rejected["StartTransaction"] += 1
            return False
        self.transaction_id = tx
        self.load.stats.transactions_started += 1
        return True

    async def heartbeat(self) -> bool:
        msg_id = self._next_id()
        return await self.call(_HEARTBEAT, _HEARTBEAT_FRAME % msg_id, msg_id) is not None

    async def meter(self) -> bool:
        assert self.transaction_id is not None
        msg_id = self._next_id()
        register = self._advance_register()
        power = 0 if self.suspended else self.power_w
        frame = _METER_FRAME % (msg_id, self.transaction_id, self._stamp(), register, power)
        return await self.call(_METER, frame, msg_id) is not None

    async def stop_transaction(self, reason: str = "Local") -> None:
        if self.transaction_id is None:
            return
        tx, self.transaction_id = self.transaction_id, None
        msg_id = self._next_id()
        frame = _STOP_FRAME % (msg_id, tx, self._tag, self._advance_register(), self._stamp(), reason)
        if await self.call(_STOP, frame, msg_id) is not None:
            self.load.stats.transactions_stopped += 1

    async def _connect(self) -> None:
        cfg = self.load.cfg
        headers = {}
        if cfg.password is not None:
            token = base64.b64encode(f"{self.cid}:{cfg.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        gate = self.load.connecting
        if gate is not None:
            async with gate:
                self.ws = await self._open(headers)
        else:
            self.ws = await self._open(headers)

    async def _open(self, headers: dict[str, str]) -> ClientConnection:
        cfg = self.load.cfg
        return await connect(
            f"{self.url.rstrip('/')}/{self.cid}",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=headers,
            compression=None,
            proxy=None,  # only the URL given (and no environment lookups per connection)
            open_timeout=cfg.connect_timeout_s,
            ping_interval=None,
            close_timeout=2,
            max_size=2**16,
            max_queue=4,
            write_limit=2**12,
        )

    async def run(self) -> None:
        """Connect, boot, charge; reconnect and continue after a lost connection; until cancelled.

        When cancelled (the run is over) it ends its open transaction if configured, then closes.
        """
        try:
            await self._life()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        if self.online and self.transaction_id is not None and self.load.cfg.end_transactions:
            with contextlib.suppress(_Lost, TimeoutError):
                async with asyncio.timeout(STOP_GRACE_S):
                    await self.stop_transaction("Local")
        self.online = False
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _life(self) -> None:
        load, cfg, stats = self.load, self.load.cfg, self.load.stats
        backoff = cfg.reconnect_min_s
        while not load.stopping:
            try:
                await self._connect()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                stats.connect_failures += 1
                delay = backoff * (0.5 + random.random())
                if isinstance(exc, InvalidStatus):
                    status = exc.response.status_code
                    load.refused[status] += 1
                    if status in (429, 503):  # busy: not before the server's Retry-After
                        delay = max(delay, _retry_after(exc.response.headers.get("Retry-After")))
                self._next_url()
                await asyncio.sleep(delay)
                backoff = min(cfg.reconnect_max_s, backoff * 2)
                continue
            stats.connects += 1
            try:
                await self._connected()
                return  # only when the run stops
            except _Lost:
                stats.disconnects += 1
                self.online = False
                assert self.ws is not None
                with contextlib.suppress(Exception):
                    await self.ws.close()
                self._next_url()
            backoff = cfg.reconnect_min_s if self.booted_at >= 0 else backoff
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(cfg.reconnect_max_s, backoff * 2)

    async def _connected(self) -> None:
        load, cfg = self.load, self.load.cfg
        loop = asyncio.get_running_loop()
        while True:  # Pending or Rejected: ask again (the connection stays open)
            if await self.boot():
                break
            await asyncio.sleep(cfg.reconnect_min_s)
        self.online = True
        if self.transaction_id is None and not load.started_once(self):
            try:
                if self.charges:
                    await self.start_transaction()
            finally:
                load.ready(self)
        if self.transaction_id is not None and cfg.closed_loop:
            await load.go.wait()
            while self.transaction_id is not None and not load.stopping and not self.stop_requested:
                await self.meter()
        elif self.transaction_id is not None:
            # interval mode: samples on absolute times, phases spread by the charger's index
            period = cfg.meter_interval_s
            phase = load.phase(self)
            next_at = phase + period * max(0, math.ceil((loop.time() - phase) / period))
            while self.transaction_id is not None and not load.stopping and not self.stop_requested:
                message = await self._recv(next_at)
                if message is None:
                    if loop.time() >= next_at:
                        await self.meter()
                        next_at += period
                        while next_at <= loop.time():  # fell behind: skip, do not burst
                            next_at += period
                    continue
                if isinstance(message, list) and len(message) > 2 and message[0] == 2:
                    await self._serve(message)
        await self._idle()

    async def _idle(self) -> None:
        """Stay connected, answering calls and heartbeating (once an interval is known), until stopped."""
        if self.stop_requested:
            self.stop_requested = False
            await self.stop_transaction("Remote")
        loop = asyncio.get_running_loop()
        period = self.heartbeat_s
        next_at = None
        if period:  # phases spread by the charger's index, like the meter samples
            phase = self.load.phase(self, period)
            next_at = phase + period * max(0, math.ceil((loop.time() - phase) / period))
        while not self.load.stopping:
            message = await self._recv(next_at)
            if message is None:
                if next_at is not None and period and loop.time() >= next_at:
                    await self.heartbeat()
                    next_at += period
                    while next_at <= loop.time():
                        next_at += period
                continue
            if isinstance(message, list) and len(message) > 2 and message[0] == 2:
                await self._serve(message)


class LightLoad:
    """A fleet of light chargers; :meth:`run` returns the report.

    ``go`` starts the closed loop; ``stopping`` ends every charger's loop.  Live state (``chargers``,
    ``stats``) may be read while it runs (the fleet benchmark does).
    """

    def __init__(self, cfg: LightConfig) -> None:
        self.cfg = cfg
        self.stats = LightStats()
        f = cfg.charging_fraction
        self.chargers = [  # charging ones spread evenly: charger i charges when floor((i+1)f) > floor(if)
            LightCharger(self, cfg.id_pattern.format(n=cfg.first_index + i), int((i + 1) * f) > int(i * f), i)
            for i in range(cfg.chargers)
        ]
        self._index = {c.cid: i for i, c in enumerate(self.chargers)}
        self.go = asyncio.Event()
        self.stopping = False
        self.refused: Counter[int] = Counter()
        self._started: set[str] = set()
        self._ready = 0
        self._all_ready = asyncio.Event()
        self._t_loop0 = 0.0
        self.tasks: list[asyncio.Task[None]] = []
        self.window: tuple[float, float] = (0.0, 0.0)
        self.rss_kb_before = 0
        self.rss_kb_held = 0
        self._finish = asyncio.Event()
        self._freezer: asyncio.Task[None] | None = None
        self.connecting = asyncio.Semaphore(cfg.max_connecting) if cfg.max_connecting else None

    def by_url(self) -> dict[str, list[LightCharger]]:
        """The chargers by the URL each is connected (or connecting) to."""
        fleet: dict[str, list[LightCharger]] = {url: [] for url in self.cfg.urls}
        for charger in self.chargers:
            fleet[charger.url].append(charger)
        return fleet

    def finish(self) -> None:
        """End the measurement window now (``run`` then stops and reports)."""
        self._finish.set()

    def started_once(self, charger: LightCharger) -> bool:
        """Whether this charger already tried its transaction (a reconnect does not start another)."""
        if charger.cid in self._started:
            return True
        self._started.add(charger.cid)
        return False

    def ready(self, charger: LightCharger) -> None:
        self._ready += 1
        if self._ready >= len(self.chargers):
            self._all_ready.set()

    def phase(self, charger: LightCharger, period: float | None = None) -> float:
        period = self.cfg.meter_interval_s if period is None else period
        return self._t_loop0 + period * self._index[charger.cid] / len(self.chargers)

    def online(self) -> int:
        return sum(1 for c in self.chargers if c.online)

    def charging(self) -> int:
        return sum(1 for c in self.chargers if c.transaction_id is not None)

    def booted_since(self, t: float) -> int:
        """Chargers whose last accepted boot was at or after ``t`` (seconds since t0)."""
        return sum(1 for c in self.chargers if c.booted_at >= t)

    async def _freeze(self) -> None:
        """Move what survived into the permanent generation every 10 s: full collections then walk only the
        newer objects (frozen garbage is still freed by reference counting; only its cycles wait for the
        unfreeze, and most cycles die young, before they are frozen)."""
        threshold = gc.get_threshold()
        gc.set_threshold(20_000, threshold[1], threshold[2])
        try:
            while not self.stopping:
                await asyncio.sleep(10.0)
                gc.freeze()
        finally:
            gc.set_threshold(*threshold)

    async def start(self) -> None:
        """Open the connections over the ramp (returns when every charger task exists)."""
        loop = asyncio.get_running_loop()
        if self.cfg.freeze_gc and self._freezer is None:
            self._freezer = asyncio.create_task(self._freeze())
        self._t_loop0 = loop.time()
        n = len(self.chargers)
        for i, charger in enumerate(self.chargers):
            delay = self._t_loop0 + self.cfg.ramp_s * i / n - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tasks.append(asyncio.create_task(charger.run(), name=charger.cid))

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every charger has tried its transaction; False after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._all_ready.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        """End every charger (each stops its open transaction if configured, bounded) and close."""
        self.stopping = True
        self.go.set()
        if self._freezer is not None:
            self._freezer.cancel()
        # a charger waiting for an answer gets it (and counts it) before it stops; the others stop now
        busy = [t for c, t in zip(self.chargers, self.tasks, strict=False) if c.in_call]
        for task in self.tasks:
            if task not in busy:
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=self.cfg.call_timeout_s)
        for task in busy:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S + 5):
                await asyncio.gather(*self.tasks, return_exceptions=True)

    async def run(self, on_progress: Callable[[str, LightLoad], None] | None = None) -> dict[str, Any]:
        """Set up every charger, measure for ``duration_s``, stop; return the report."""
        cfg = self.cfg
        started_at = datetime.now(UTC)
        setup_started = self.stats.now()
        self.rss_kb_before = rss_kb()
        ramp = asyncio.create_task(self.start())
        try:
            async with asyncio.timeout(cfg.ramp_s + cfg.setup_timeout_s):
                while not self._all_ready.is_set():
                    if on_progress:
                        on_progress("setup", self)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._all_ready.wait()
        except TimeoutError:
            pass
        await ramp
        setup_s = self.stats.now() - setup_started
        # the fleet's long-lived objects need no more cyclic-GC passes: keeps gen-2 pauses out of the window
        if cfg.freeze_gc:
            gc.collect()
            gc.freeze()
        start = self.stats.now()
        self.go.set()
        end = start + cfg.duration_s
        while self.stats.now() < end and not self._finish.is_set():
            if on_progress:
                on_progress("measure", self)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, max(0.0, end - self.stats.now()))):
                    await self._finish.wait()
        end = min(end, self.stats.now())
        held = self.online()
        charging = self.charging()
        self.rss_kb_held = rss_kb()
        self.window = (start, end)
        if on_progress:
            on_progress("stopping", self)
        await self.stop()
        if cfg.freeze_gc:
            gc.unfreeze()
        return self.report(started_at, setup_s, held, charging)

    def report(self, started_at: datetime, setup_s: float, held: int, charging: int) -> dict[str, Any]:
        cfg, s = self.cfg, self.stats
        start, end = self.window
        meter = s.window(start, end)
        answered = len(meter)
        seconds = end - start
        return {
            "generator": "lightload",
            "mode": "closed-loop" if cfg.closed_loop else "interval",
            "target": cfg.csms_url,
            "started_at": started_at.isoformat(),
            "config": {
                "chargers": cfg.chargers,
                "protocol": "1.6",
                "ramp_s": cfg.ramp_s,
                "duration_s": cfg.duration_s,
                "meter_interval_s": None if cfg.closed_loop else cfg.meter_interval_s,
                "power_w": cfg.power_w,
            },
            "setup_s": round(setup_s, 2),
            "connections": {
                "target": cfg.chargers,
                "held_at_end": held,
                "connects": s.connects,
                "connect_failures": s.connect_failures,
                "refused": {str(k): v for k, v in sorted(self.refused.items())},
                "disconnects": s.disconnects,
                "boots": s.boots,
            },
            "transactions": {
                "started": s.transactions_started,
                "charging_at_end": charging,
                "stopped": s.transactions_stopped,
                "remote_stops": s.remote_stops,
                "rejected": dict(s.rejected),
            },
            "meter_values": {
                "answered": answered,
                "window_s": round(seconds, 3),
                "per_second": round(answered / seconds, 1) if seconds > 0 else 0.0,
                "latency": latency_summary(meter),
            },
            "frames": {"sent": s.frames_out, "received": s.frames_in},
            "inbound_calls": dict(s.inbound_calls),
            "suspensions": s.suspensions,
            "calls": {
                "count": len(s.latency),
                "timeouts": s.timeouts,
                "call_errors": dict(s.call_errors),
                "by_action": {
                    a: latency_summary(s.window(0.0, math.inf, a))
                    for a in ACTIONS
                    if ACTIONS.index(a) in set(s.action)
                },
            },
            "errors": s.timeouts + sum(s.call_errors.values()),
            "client": {
                "rss_kb_before": self.rss_kb_before,
                "rss_kb_at_end": self.rss_kb_held,
                "rss_kb_per_charger": round((self.rss_kb_held - self.rss_kb_before) / cfg.chargers, 1),
            },
        }


def format_light_report(report: dict[str, Any]) -> str:
    """The report as plain text."""
    c, t, m = report["connections"], report["transactions"], report["meter_values"]
    lat = m["latency"]
    mode = report["mode"]
    cfg = report["config"]
    what = "back to back" if mode == "closed-loop" else f"every {cfg['meter_interval_s']} s"
    lines = [
        f"target                {report['target']}",
        f"mode                  {mode}: {cfg['chargers']} chargers (1.6), MeterValues {what}, "
        f"window {m['window_s']} s after {report['setup_s']} s of setup",
        f"connections held      {c['held_at_end']} / {c['target']} at end "
        f"(connects {c['connects']}, failures {c['connect_failures']}, disconnects {c['disconnects']})",
        f"transactions          {t['started']} started, {t['charging_at_end']} charging at end, "
        f"{t['remote_stops']} remote stops, rejected {t['rejected'] or 0}",
        f"MeterValues answered  {m['answered']} = {m['per_second']} /s",
        f"latency ms            p50 {lat['p50_ms']}  p95 {lat['p95_ms']}  p99 {lat['p99_ms']}  "
        f"max {lat['max_ms']}",
        f"central-system calls  {report['inbound_calls'] or 0} (suspensions {report['suspensions']})",
        f"errors                {report['errors']} (timeouts {report['calls']['timeouts']}, call errors "
        f"{report['calls']['call_errors'] or 0})",
        f"load client RSS       {report['client']['rss_kb_at_end']} KiB "
        f"({report['client']['rss_kb_per_charger']} KiB per charger)",
    ]
    return "\n".join(lines)
