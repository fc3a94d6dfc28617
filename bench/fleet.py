"""Fleet benchmark: many chargers at a meter interval against `csms serve` (issue 7, goals 2-4).

    .venv/bin/python bench/fleet.py                                   # 200 chargers, SQLite, 60 s
    .venv/bin/python bench/fleet.py --chargers 1000 --duration 60 --storm
    .venv/bin/python bench/fleet.py --chargers 10000 --ramp 120 --duration 120 --storm \\
        --setup-timeout 900                           # the issue's 10,000 (see bench/README.md)
    .venv/bin/python bench/fleet.py --recreate-database \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/satwatt_fleet   # PostgreSQL

It starts `csms serve` (a fresh SQLite data directory, or the PostgreSQL database given, `csms migrate`
first) with the embedded simnet, registers --chargers chargers through the REST API (with passwords
unless --no-passwords) and a payer owning their id tag, so every session is sold to the payer and
invoiced at the simnet. Nobody pays: the default tariff's allowance is raised (--allowance-wh) so the
sessions keep charging unpaid; `--allowance-wh 0` keeps the shipped tariff and the sessions are
suspended (a SetChargingProfile with limit 0) after about 50 Wh, which is fine for a latency figure.
The output says which.

Then the light load client (`chargepoint_sim.lightload`, OCPP 1.6, one process) opens every charger
over --ramp seconds; each boots, starts a transaction and sends MeterValues every --interval seconds.
Reported:

* setup: seconds until every charger was booted and charging (and the rate);
* steady state (--duration s): MeterValues latency p50/p95/p99, answered, disconnects;
* memory: the server's RSS (VmRSS of the `csms serve` process) with N chargers connected minus with 0
  (after start-up and registration), per charger; and the marginal figure from the moment half the
  fleet was online to all of it (without the one-off warm-up of the first connections);
* --storm: kill -9 of the server while every charger is connected, immediately started again on the
  same data; the time from the restart (the new process started) until all N are booted again, and the
  MeterValues latency (p50/p99) of chargers already reconnected meanwhile. The chargers reconnect as
  the light client does: back-off 0.5 s doubling to 8 s, times a random 0.5-1.5, so the seconds the
  server is down also spread the reconnections.

Results go to bench/results/fleet-<N>-<database>-<date>.json (or --json). Bounded in time: setup
--setup-timeout, the window, the storm --storm-timeout. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from satwatt_server import (  # noqa: E402  (beside this script)
    CHARGER_PASSWORD,
    SatwattServer,
    create_payer,
    export_revision,
    free_port,
    migrate,
    operator,
    patch_default_tariff,
    register_chargers,
    session_summary,
)
from settlement_fleet import cpu_s, profile  # noqa: E402

from chargepoint_sim.lightload import LightConfig, LightLoad, rss_kb  # noqa: E402
from chargepoint_sim.load import latency_summary  # noqa: E402

ID_TAG = "FLEET-TAG-1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def recreate_database(url: str) -> None:
    """DROP and CREATE the database named in ``url`` (only with --recreate-database)."""
    import asyncpg  # type: ignore[import-untyped]

    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
    name = parts.path.lstrip("/")
    if not name or not name.replace("_", "").isalnum():
        raise SystemExit(f"--recreate-database: a plain database name is needed, got {name!r}")
    if name in ("postgres", "test", "template0", "template1"):
        raise SystemExit(f"--recreate-database refuses to drop {name!r}")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def charger_ids(n: int) -> list[str]:
    return [f"FLEET-{i:05d}" for i in range(1, n + 1)]


async def wait_until(predicate: Any, timeout_s: float, every_s: float = 0.25) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not predicate():
        if loop.time() >= end:
            return False
        await asyncio.sleep(every_s)
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "fleet",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "chargers": args.chargers,
            "meter_interval_s": args.interval,
            "ramp_s": args.ramp,
            "duration_s": args.duration,
            "database": "postgresql" if args.database_url else "sqlite",
            "passwords": args.passwords,
            "protocol": "1.6",
            "storm": args.storm,
            "charging_fraction": args.charging_fraction,
            "max_connecting": args.max_connecting,
            "heartbeat_interval_s": args.heartbeat_interval,
            "server_env": dict(args.server_env),
        },
    }
    with tempfile.TemporaryDirectory(prefix="satwatt-fleet-") as tmp:
        tree = REPO
        if args.satwatt_rev:
            tree = Path(tmp) / "tree"
            commit = await export_revision(args.satwatt_rev, tree)
            result["config"]["satwatt_source"] = f"git {args.satwatt_rev} = {commit}"
        else:
            result["config"]["satwatt_source"] = "working tree"
        if args.database_url:
            if args.recreate_database:
                await recreate_database(args.database_url)
            await migrate(args.database_url, tree)
        extra = {} if args.passwords else {"CSMS_REQUIRE_CHARGER_PASSWORD": "false"}
        if args.unregistered:
            extra["CSMS_ALLOW_UNKNOWN_CHARGERS"] = "true"
        result["config"]["registered"] = not args.unregistered
        if args.pending_per_address is not None:
            extra["CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS"] = str(args.pending_per_address)
        result["config"]["max_pending_connections_per_address"] = args.pending_per_address
        extra.update(args.server_env)
        launcher = ["-m", "csms"]
        if args.tracemalloc:
            launcher = [str(BENCH / "traced_serve.py")]
            extra["CSMS_TRACEMALLOC_FRAMES"] = str(args.tracemalloc)
            extra["CSMS_TRACEMALLOC_DIR"] = str(Path(tmp) / "tm")
        server = SatwattServer(
            Path(tmp) / "data", free_port(), args.database_url, env_extra=extra, tree=tree, launcher=launcher
        )
        await server.start()
        try:
            await fleet(server, args, result)
        except BaseException:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            await server.stop()
    return result


async def fleet(server: SatwattServer, args: argparse.Namespace, result: dict[str, Any]) -> None:
    n = args.chargers
    async with operator(server.http) as client:
        started = time.perf_counter()
        if not args.unregistered:
            password = CHARGER_PASSWORD if args.passwords else None
            await register_chargers(client, charger_ids(n), password, args.register_concurrency)
        result["registration_s"] = round(time.perf_counter() - started, 1)
        log(f"registered {n} chargers in {result['registration_s']} s")
        payer = await create_payer(client, [ID_TAG])
        if args.allowance_wh:
            result["tariff"] = await patch_default_tariff(
                client, allowance_wh=args.allowance_wh, grace_s=3600
            )
            result["payment"] = (
                f"sessions sold to payer {payer['id']} and invoiced at the simnet; nobody pays: the default "
                f"tariff's allowance is raised to {args.allowance_wh} Wh so they keep charging unpaid"
            )
        else:
            result["payment"] = (
                f"sessions sold to payer {payer['id']} and invoiced at the simnet; nobody pays: with the "
                "shipped tariff they are suspended after its allowance (latency still measured)"
            )
        await asyncio.sleep(2)
        rss_idle = rss_kb(server.pid)
        if args.tracemalloc:
            await traced_snapshot(server, 1)

        cfg = LightConfig(
            csms_url=server.ocpp,
            chargers=n,
            closed_loop=False,
            meter_interval_s=args.interval,
            duration_s=args.duration,
            ramp_s=args.ramp,
            setup_timeout_s=args.setup_timeout,
            password=CHARGER_PASSWORD if args.passwords else None,
            id_pattern="FLEET-{n:05d}",
            id_tag=ID_TAG,
            call_timeout_s=60,
            end_transactions=False,
            charging_fraction=args.charging_fraction,
            heartbeat_interval_s=args.heartbeat_interval,
            max_connecting=args.max_connecting,
        )
        load = LightLoad(cfg)
        stats = load.stats
        t_setup = stats.now()
        ramp = asyncio.create_task(load.start())
        half: dict[str, int] = {}
        progress = asyncio.create_task(report_progress(load, server.pid, half))
        try:
            ready = await load.wait_ready(args.ramp + args.setup_timeout)
            await ramp
            setup_s = stats.now() - t_setup
            result["setup"] = {
                "all_charging": ready,
                "seconds": round(setup_s, 1),
                "chargers_per_s": round(n / setup_s, 1),
                "booted": load.booted_since(0.0),
                "charging": load.charging(),
                "connect_failures": stats.connect_failures,
                "refused": dict(load.refused),
            }
            log(f"setup: {load.booted_since(0.0)} booted, {load.charging()} charging after {setup_s:.1f} s")
            # steady state
            w0, disconnects0, cpu0 = stats.now(), stats.disconnects, cpu_s(server.pid)
            spy = None
            if args.profile:
                out = Path(tempfile.gettempdir()) / f"fleet-steady-{os.getpid()}.txt"
                spy = asyncio.create_task(profile(server.pid, int(min(args.profile, args.duration)), out))
            await asyncio.sleep(args.duration / 2)
            rss_held = rss_kb(server.pid)
            online_at_rss = load.online()
            if args.tracemalloc:
                await traced_snapshot(server, 2)
                result["tracemalloc"] = await asyncio.to_thread(
                    traced_diff, Path(server.env()["CSMS_TRACEMALLOC_DIR"]), online_at_rss
                )
            await asyncio.sleep(args.duration / 2)
            w1, cpu1 = stats.now(), cpu_s(server.pid)
            steady = stats.window(w0, w1)
            heartbeats = stats.window(w0, w1, "Heartbeat")
            result["steady"] = {
                "server_cpu_share_of_one_core": round((cpu1 - cpu0) / (w1 - w0), 2),
                "heartbeats_answered": len(heartbeats),
                "heartbeat_latency": latency_summary(heartbeats) if heartbeats else None,
                "window_s": round(w1 - w0, 1),
                "online_at_end": load.online(),
                "charging_at_end": load.charging(),
                "disconnects": stats.disconnects - disconnects0,
                "meter_values_answered": len(steady),
                "meter_values_per_s": round(len(steady) / (w1 - w0), 1),
                "latency": latency_summary(steady),
                "timeouts": stats.timeouts,
                "call_errors": dict(stats.call_errors),
            }
            result["memory"] = {
                "server_rss_kb_at_0": rss_idle,
                "server_rss_kb_connected": rss_held,
                "connected": online_at_rss,
                "server_kb_per_charger": round((rss_held - rss_idle) / max(1, online_at_rss), 1),
                "server_rss_kb_at_half": half.get("rss_kb"),
                "online_at_half": half.get("online"),
                "server_kb_per_charger_marginal": (
                    round((rss_held - half["rss_kb"]) / (online_at_rss - half["online"]), 1)
                    if half and online_at_rss > half["online"]
                    else None
                ),
                "load_client_rss_kb": rss_kb(),
            }
            if spy is not None:
                result["steady"]["profile"] = await spy
            per_charger = result["memory"]["server_kb_per_charger"]
            log(f"steady: {result['steady']['latency']}, memory {per_charger} KB/charger")
            if args.storm:
                result["storm"] = await storm(server, load, args)
            result["sessions"] = await session_summary(client)
        finally:
            progress.cancel()
            if not ramp.done():
                ramp.cancel()
            await load.stop()
        result["inbound_calls"] = dict(stats.inbound_calls)
        result["suspensions"] = stats.suspensions


async def traced_snapshot(server: SatwattServer, n: int, timeout_s: float = 120.0) -> None:
    """SIGUSR1 to bench/traced_serve.py, then wait for its snapshot-<n>.pickle."""
    out = Path(server.env()["CSMS_TRACEMALLOC_DIR"]) / f"snapshot-{n}.pickle"
    assert server.process is not None
    server.process.send_signal(signal.SIGUSR1)
    if not await wait_until(out.exists, timeout_s):
        raise RuntimeError(f"no tracemalloc snapshot {out} after {timeout_s} s")


def traced_diff(directory: Path, connected: int) -> dict[str, Any]:
    """Where the memory allocated between the two snapshots (idle, N connected) is, per charger."""
    import tracemalloc

    before = tracemalloc.Snapshot.load(str(directory / "snapshot-1.pickle"))
    after = tracemalloc.Snapshot.load(str(directory / "snapshot-2.pickle"))
    per = max(1, connected)

    def rows(key: str, limit: int) -> list[dict[str, Any]]:
        out = []
        for stat in after.compare_to(before, key)[:limit]:
            frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback]
            out.append(
                {
                    "where": frames[0] if key != "traceback" else frames[:8],
                    "bytes_per_charger": round(stat.size_diff / per),
                    "objects_per_charger": round(stat.count_diff / per, 2),
                }
            )
        return out

    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {
        "connected": connected,
        "traced_bytes_per_charger": round(total / per),
        "by_file": rows("filename", 20),
        "by_line": rows("lineno", 30),
        "by_traceback": rows("traceback", 15),
    }


async def storm(server: SatwattServer, load: LightLoad, args: argparse.Namespace) -> dict[str, Any]:
    """kill -9 the server with every charger connected, start it again, time the reconnection."""
    stats, n = load.stats, args.chargers
    online_before = load.online()
    disconnects0 = stats.disconnects
    t_kill = stats.now()
    await server.kill()
    log(f"storm: killed the server with {online_before} chargers online; starting it again")
    t_start = stats.now()
    await server.start()
    t_up = stats.now()
    # from /healthz on (before it, the start-up itself: imports, loading the open settlements)
    out = Path(tempfile.gettempdir()) / f"fleet-storm-{os.getpid()}.txt"
    spy = asyncio.create_task(profile(server.pid, int(args.profile), out)) if args.profile else None
    log(f"storm: server answering /healthz after {t_up - t_kill:.1f} s")
    # chargers start booting again as soon as the restarted server listens, which can be well before
    # /healthz answers the bench under the storm: count every boot since the kill, timed from the restart
    all_back = await wait_until(lambda: load.booted_since(t_kill) >= n, args.storm_timeout)
    t_all = max((c.booted_at for c in load.chargers), default=t_up)
    t_end = t_all if all_back else stats.now()
    during = stats.window(t_start, t_end)
    booted_by = sorted(c.booted_at - t_start for c in load.chargers if c.booted_at >= t_kill)
    cpu_storm = cpu_s(server.pid)  # the restarted process's CPU from its start to all booted (or timeout)
    boots_by_second = [0] * (int(booted_by[-1]) + 1 if booted_by else 0)
    for b in booted_by:
        boots_by_second[max(0, int(b))] += 1
    result: dict[str, Any] = {
        "online_before": online_before,
        "restart_s": round(t_up - t_kill, 1),
        "all_booted_again": all_back,
        "booted_again": len(booted_by),
        "seconds_to_all_booted_after_restart": round(t_all - t_start, 1) if all_back else None,
        "seconds_to_half_booted": round(booted_by[len(booted_by) // 2], 1) if booted_by else None,
        "disconnects": stats.disconnects - disconnects0,
        "meter_values_meanwhile": latency_summary(during),
        "heartbeats_meanwhile": latency_summary(stats.window(t_start, t_end, "Heartbeat")),
        "connect_failures_total": stats.connect_failures,
        "server_cpu_s_until_all_booted": round(cpu_storm, 1),
        "boots_per_second_after_restart": boots_by_second,
    }
    if spy is not None:
        result["profile"] = await spy
    return result


async def report_progress(load: LightLoad, server_pid: int, half: dict[str, int]) -> None:
    """Log every 5 s; note the server's RSS the first time half the fleet is online."""
    n = len(load.chargers)
    ticks = 0
    while True:
        await asyncio.sleep(0.25)
        ticks += 1
        if not half and load.online() >= n // 2:
            half.update(online=load.online(), rss_kb=rss_kb(server_pid))
        if ticks % 20 == 0:
            log(f"{load.online()} online, {load.charging()} charging, {len(load.stats.latency)} answered")


def print_summary(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print(
        f"fleet: {cfg['chargers']} chargers (1.6), MeterValues every {cfg['meter_interval_s']} s, "
        f"{cfg['database']}, satwatt from {cfg['satwatt_source']}"
    )
    print(f"payment: {result.get('payment')}")
    if cfg.get("charging_fraction", 1.0) < 1.0:
        print(
            f"charging fraction {cfg['charging_fraction']}: the others idle, Heartbeat every "
            f"{cfg.get('heartbeat_interval_s') or 'interval satwatt gives'} s"
        )
    setup = result.get("setup", {})
    if setup:
        print(
            f"setup: {setup['booted']} booted, {setup['charging']} charging in {setup['seconds']} s "
            f"({setup['chargers_per_s']} per s; registration {result['registration_s']} s)"
        )
    steady = result.get("steady")
    if steady:
        lat = steady["latency"]
        print(
            f"steady {steady['window_s']} s: {steady['meter_values_answered']} MeterValues "
            f"({steady['meter_values_per_s']}/s), p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
            f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; disconnects {steady['disconnects']}, "
            f"timeouts {steady['timeouts']}; server CPU {steady.get('server_cpu_share_of_one_core')} "
            "of one core"
        )
        if steady.get("heartbeat_latency"):
            hb = steady["heartbeat_latency"]
            print(f"heartbeats: {hb['count']}, p50 {hb['p50_ms']} ms, p99 {hb['p99_ms']} ms")
    memory = result.get("memory")
    if memory:
        print(
            f"memory: server RSS {memory['server_rss_kb_at_0']} KiB at 0, "
            f"{memory['server_rss_kb_connected']} KiB "
            f"with {memory['connected']} connected = {memory['server_kb_per_charger']} KiB per charger; "
            f"marginal from {memory['online_at_half']} to {memory['connected']} connected: "
            f"{memory['server_kb_per_charger_marginal']} KiB per charger (load client "
            f"{memory['load_client_rss_kb']} KiB)"
        )
    storm = result.get("storm")
    if storm:
        lat = storm["meter_values_meanwhile"]
        print(
            f"storm: restart {storm['restart_s']} s; "
            f"{storm['booted_again']}/{storm['online_before']} booted again, "
            f"all after {storm['seconds_to_all_booted_after_restart']} s (half after "
            f"{storm['seconds_to_half_booted']} s); meanwhile p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
            f"({lat['count']} MeterValues); server CPU {storm.get('server_cpu_s_until_all_booted')} s"
        )
    sessions = result.get("sessions")
    if sessions:
        print(f"sessions: {sessions['sessions']} ({sessions['sold']} sold, states {sessions['by_state']})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chargers", type=int, default=200, help="number of chargers (default 200)")
    parser.add_argument("--interval", type=float, default=10.0, help="meter interval, s (default 10)")
    parser.add_argument(
        "--ramp", type=float, help="seconds to open the connections (default chargers/100, >= 5)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="steady-state window, s (default 60)")
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=300.0,
        help="seconds after the ramp for every charger to be charging",
    )
    parser.add_argument(
        "--storm", action="store_true", help="then kill -9 and restart the server (reconnect storm)"
    )
    parser.add_argument(
        "--storm-timeout", type=float, default=300.0, help="how long to wait for all to boot again"
    )
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite (postgresql+asyncpg://...)")
    parser.add_argument(
        "--recreate-database",
        action="store_true",
        help="DROP and CREATE that database first (not postgres/test)",
    )
    parser.add_argument(
        "--no-passwords",
        dest="passwords",
        action="store_false",
        help="register chargers without passwords (CSMS_REQUIRE_CHARGER_PASSWORD=false): no scrypt per "
        "registration and per first connection",
    )
    parser.add_argument(
        "--unregistered",
        action="store_true",
        help="do not register the chargers (CSMS_ALLOW_UNKNOWN_CHARGERS=true; no passwords): saves the "
        "registration (minutes at 10,000); satwatt adds a charger's row at its first connection, which it "
        "also does (insert-if-missing) for a registered one",
    )
    parser.add_argument(
        "--allowance-wh",
        type=int,
        default=100_000,
        help="the default tariff's unpaid allowance (default 100000 Wh, grace 1 h: sessions keep charging "
        "unpaid); 0 keeps the shipped tariff (sessions suspended)",
    )
    parser.add_argument(
        "--pending-per-address",
        type=int,
        help="CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS for the server (default: satwatt's own, 64); every "
        "simulated charger connects from 127.0.0.1, so the bound throttles the whole fleet (429s); 0 = none",
    )
    parser.add_argument(
        "--charging-fraction",
        type=float,
        default=1.0,
        help="share of the chargers that start a transaction (spread evenly); the others boot and stay "
        "connected, idle, heartbeating (default 1: all charge; 0: none, e.g. for the memory figure)",
    )
    parser.add_argument(
        "--max-connecting",
        type=int,
        help="the load client opens at most this many connections at once (the rest wait their turn in the "
        "client): the fleet comes online as fast as satwatt admits it, without a storm of refused or "
        "timed-out handshakes from the one address (default: no bound)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        help="idle chargers' Heartbeat interval, s (default: the interval in satwatt's boot answer)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=lambda text: tuple(text.split("=", 1)),
        help="an extra environment variable for csms serve (repeatable), e.g. CSMS_OCPP_PING_INTERVAL_S=0",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        help="py-spy record this many seconds of the server in the steady window and in the storm from "
        "/healthz on (summary in the JSON; py-spy in the venv, not a project dependency)",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="run the server under tracemalloc (bench/traced_serve.py, FRAMES frames per allocation) and "
        "report where the memory between 0 and N connected went; slows the server: for the where, not "
        "the how much",
    )
    parser.add_argument("--register-concurrency", type=int, default=4, help="parallel registration requests")
    parser.add_argument("--satwatt-rev", metavar="REV", help="run satwatt as committed at this git revision")
    parser.add_argument(
        "--json", type=Path, help="write the JSON here (default bench/results/fleet-<N>-<db>-<date>.json)"
    )
    args = parser.parse_args()
    if args.chargers < 1 or args.duration <= 0 or args.interval <= 0:
        parser.error("--chargers must be >= 1, --duration and --interval > 0")
    if not 0.0 <= args.charging_fraction <= 1.0:
        parser.error("--charging-fraction must be between 0 and 1")
    if args.unregistered:
        args.passwords = False
    if args.ramp is None:
        args.ramp = max(5.0, args.chargers / 100)
    result = asyncio.run(run(args))
    print_summary(result)
    database = "postgresql" if args.database_url else "sqlite"
    out = (
        args.json or BENCH / "results" / f"fleet-{args.chargers}-{database}-{datetime.now(UTC):%Y-%m-%d}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
