"""The load generator: many simulated charge points against one central system, with a report.

It ramps up ``chargers`` connections evenly over ``ramp_s`` seconds; each charger boots, plugs an EV
in, authorises an id tag and charges, sending meter values every ``meter_interval_s`` seconds; after
the ramp it holds for ``duration_s`` seconds, then stops everything and reports: connections held,
messages per second, call latency percentiles, errors, disconnects.  It is bounded in time (a hard
deadline of ramp + duration + a grace period), keeps going when the central system is slow or drops
connections (the chargers reconnect with back-off and replay), and only ever connects to the URL given.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chargepoint_sim.chargepoint import ChargePoint, ChargePointOptions, create_charge_point
from chargepoint_sim.physics import ChargerSpec
from chargepoint_sim.rpc import Stats

STOP_GRACE_S = 15.0


@dataclass
class LoadConfig:
    csms_url: str
    chargers: int = 10
    ramp_s: float = 10.0
    duration_s: float = 30.0
    meter_interval_s: float = 10.0
    protocol: str = "mixed"  # 1.6 | 2.0.1 | mixed
    password: str | None = None
    id_pattern: str = "LOAD-{n:05d}"
    id_tag: str = "LOAD-TAG"
    call_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    follow_csms_interval: bool = False  # accept the CSMS's meter interval instead of the one asked for
    power_kw: float = 11.0

    def __post_init__(self) -> None:
        if self.chargers < 1:
            raise ValueError("chargers must be >= 1")
        if self.ramp_s < 0 or self.duration_s <= 0:
            raise ValueError("ramp must be >= 0 and duration > 0")
        if self.protocol not in ("1.6", "2.0.1", "mixed"):
            raise ValueError("protocol must be 1.6, 2.0.1 or mixed")
        if not self.csms_url.startswith(("ws://", "wss://")):
            raise ValueError("the central system URL must start with ws:// or wss://")


@dataclass
class Progress:
    phase: str = "ramp"  # ramp / hold / stopping / done
    started: int = 0
    online: int = 0
    charging: int = 0
    total: int = 0
    elapsed_s: float = 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values: list[float]) -> dict[str, float | int]:
    s = sorted(values)
    ms = 1000.0
    return {
        "count": len(s),
        "p50_ms": round(percentile(s, 50) * ms, 2),
        "p95_ms": round(percentile(s, 95) * ms, 2),
        "p99_ms": round(percentile(s, 99) * ms, 2),
        "max_ms": round((s[-1] if s else 0.0) * ms, 2),
        "mean_ms": round((sum(s) / len(s) if s else 0.0) * ms, 2),
    }


@dataclass
class _Snapshot:
    t: float
    frames: int
    calls: int

    @classmethod
    def of(cls, stats: Stats) -> _Snapshot:
        return cls(time.monotonic(), stats.frames_in + stats.frames_out, stats.calls)


@dataclass
class LoadRun:
    config: LoadConfig
    stats: Stats = field(default_factory=Stats)
    cps: list[ChargePoint] = field(default_factory=list)
    peak_online: int = 0
    transactions_started: int = 0
    auth_rejected: int = 0
    boot_failures: int = 0

    def online_count(self) -> int:
        return sum(1 for cp in self.cps if cp.online)

    def charging_count(self) -> int:
        return sum(1 for cp in self.cps for c in cp.connectors.values() if c.tx is not None)


def _make_cps(cfg: LoadConfig, stats: Stats) -> list[ChargePoint]:
    cps = []
    for i in range(cfg.chargers):
        n = i + 1
        protocol = cfg.protocol if cfg.protocol != "mixed" else ("2.0.1" if i % 2 == 0 else "1.6")
        opts = ChargePointOptions(
            id=cfg.id_pattern.format(n=n),
            csms_url=cfg.csms_url,
            protocol=protocol,
            password=cfg.password,
            charger=ChargerSpec.ac(min(22.0, cfg.power_kw)),
            meter_interval_s=cfg.meter_interval_s,
            call_timeout_s=cfg.call_timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            reconnect_min_s=1.0,
            reconnect_max_s=30.0,
            log_size=50,
        )
        cp = create_charge_point(opts, stats=stats)
        if not cfg.follow_csms_interval:
            cp.lock_meter_interval = True
        cps.append(cp)
    return cps


async def _drive(run: LoadRun, cp: ChargePoint, deadline: float) -> None:
    """Boot, plug in, authorise; re-authorise after reconnects/reboots if the transaction is gone."""
    loop = asyncio.get_running_loop()
    await cp.start()
    plugged = False
    while loop.time() < deadline:
        try:
            await cp.wait_online(max(0.1, deadline - loop.time()))
        except TimeoutError:
            run.boot_failures += 1
            return
        if not plugged:
            await cp.plug_in(1, "sedan", soc=0.2)
            plugged = True
        if cp.transaction(1) is None:
            try:
                ok = await cp.authorize(1, run.config.id_tag)
            except Exception:
                ok = False
            if ok:
                run.transactions_started += 1
            else:
                run.auth_rejected += 1
                return  # keeps heartbeating; no transaction to drive
        # wait until the transaction ends or the link drops, then loop
        try:
            await cp.wait_for(
                lambda: cp.transaction(1) is None or not cp.online, max(0.1, deadline - loop.time())
            )
        except TimeoutError:
            return


async def run_load(cfg: LoadConfig, on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Run the load test and return the JSON-able report."""
    stats = Stats()
    run = LoadRun(cfg, stats)
    run.cps = _make_cps(cfg, stats)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    started_at = datetime.now(UTC)
    ramp_end = t0 + cfg.ramp_s
    end = ramp_end + cfg.duration_s
    progress = Progress(total=cfg.chargers)
    drivers: list[asyncio.Task[None]] = []
    steady_start: _Snapshot | None = None
    steady_end: _Snapshot | None = None
    held_at_end = 0

    def report_progress(phase: str) -> None:
        progress.phase = phase
        progress.started = len(drivers)
        progress.online = run.online_count()
        progress.charging = run.charging_count()
        progress.elapsed_s = loop.time() - t0
        run.peak_online = max(run.peak_online, progress.online)
        if on_progress:
            on_progress(progress)

    async def ramp() -> None:
        for i, cp in enumerate(run.cps):
            at = t0 + (cfg.ramp_s * i / cfg.chargers if cfg.chargers > 1 else 0.0)
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            drivers.append(asyncio.create_task(_drive(run, cp, end)))

    try:
        async with asyncio.timeout(cfg.ramp_s + cfg.duration_s + STOP_GRACE_S):
            ramp_task = asyncio.create_task(ramp())
            while loop.time() < ramp_end or not ramp_task.done():
                report_progress("ramp")
                await asyncio.sleep(0.25)
            steady_start = _Snapshot.of(stats)
            while loop.time() < end:
                report_progress("hold")
                await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
            steady_end = _Snapshot.of(stats)
            held_at_end = run.online_count()
            report_progress("stopping")
    except TimeoutError:
        pass
    finally:
        if steady_end is None:
            steady_end = _Snapshot.of(stats)
            held_at_end = run.online_count()
        for d in drivers:
            d.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S):
                await asyncio.gather(*(cp.stop() for cp in run.cps), return_exceptions=True)
        await asyncio.gather(*drivers, return_exceptions=True)
    elapsed = loop.time() - t0
    report_progress("done")

    lat = stats.all_latencies()
    total_frames = stats.frames_in + stats.frames_out
    steady_rate = 0.0
    if steady_start is not None and steady_end.t > steady_start.t:
        steady_rate = (steady_end.frames - steady_start.frames) / (steady_end.t - steady_start.t)
    errors = sum(stats.call_errors.values()) + stats.timeouts + stats.connect_failures
    return {
        "target": cfg.csms_url,
        "started_at": started_at.isoformat(),
        "config": {
            "chargers": cfg.chargers,
            "protocol": cfg.protocol,
            "ramp_s": cfg.ramp_s,
            "duration_s": cfg.duration_s,
            "meter_interval_s": cfg.meter_interval_s,
        },
        "elapsed_s": round(elapsed, 2),
        "connections": {
            "target": cfg.chargers,
            "peak": run.peak_online,
            "held_at_end": held_at_end,
            "connects": stats.connects,
            "connect_failures": stats.connect_failures,
            "disconnects": stats.disconnects,
            "boot_timeouts": run.boot_failures,
        },
        "transactions": {"started": run.transactions_started, "authorization_rejected": run.auth_rejected},
        "messages": {
            "sent": stats.frames_out,
            "received": stats.frames_in,
            "total": total_frames,
            "per_second": round(total_frames / elapsed, 2) if elapsed > 0 else 0.0,
            "steady_per_second": round(steady_rate, 2),
            "inbound_calls": stats.inbound_calls,
        },
        "calls": {
            "count": stats.calls,
            "timeouts": stats.timeouts,
            "call_errors": dict(stats.call_errors),
            "latency": latency_summary(lat),
            "by_action": {a: latency_summary(v) for a, v in sorted(stats.latencies.items())},
        },
        "errors": errors,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text."""
    c, m, calls = report["connections"], report["messages"], report["calls"]
    lat = calls["latency"]
    lines = [
        f"target                {report['target']}",
        f"chargers              {report['config']['chargers']} ({report['config']['protocol']}), "
        f"ramp {report['config']['ramp_s']} s, hold {report['config']['duration_s']} s, "
        f"meter interval {report['config']['meter_interval_s']} s",
        f"elapsed               {report['elapsed_s']} s",
        f"connections held      {c['held_at_end']} / {c['target']} at end (peak {c['peak']})",
        f"connects / failures   {c['connects']} / {c['connect_failures']}",
        f"disconnects           {c['disconnects']}",
        f"transactions started  {report['transactions']['started']} "
        f"(authorization rejected: {report['transactions']['authorization_rejected']})",
        f"messages              {m['total']} ({m['sent']} sent, {m['received']} received)",
        f"messages per second   {m['per_second']} overall, {m['steady_per_second']} steady",
        f"calls                 {calls['count']} (timeouts {calls['timeouts']}, call errors "
        f"{sum(calls['call_errors'].values())} {calls['call_errors'] or ''})".rstrip(),
        f"call latency ms       {_pcts(lat)}",
        f"errors                {report['errors']}",
    ]
    for action, s in report["calls"]["by_action"].items():
        lines.append(f"  {action:<20} n={s['count']:<7} {_pcts(s)}")
    return "\n".join(lines)


def _pcts(s: dict[str, Any]) -> str:
    return f"p50 {s['p50_ms']}  p95 {s['p95_ms']}  p99 {s['p99_ms']}  max {s['max_ms']}"
