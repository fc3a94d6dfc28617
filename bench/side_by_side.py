"""Side by side: satwatt against the `ocpp` library's example central system, same closed-loop load.

    .venv/bin/python bench/side_by_side.py                          # 50 chargers, 20 s each
    .venv/bin/python bench/side_by_side.py --chargers 100 --duration 30 --json out.json

In one run it starts each server in turn as a subprocess on a free port and drives it with the same
load (`chargepoint_sim.lightload`, closed loop, OCPP 1.6): every charger boots, starts a transaction
with its id tag, then sends MeterValues back to back (the next as soon as the previous is answered,
the energy register growing at 11 kW) for --duration seconds. The servers:

* satwatt: `csms serve` on a fresh SQLite data directory (or --database-url) with the embedded
  Lightning simnet; the chargers registered through the REST API with passwords (HTTP Basic); a payer
  registered with `POST /api/v1/payers` owns the id tags, so every session is sold to the payer and
  invoiced at the simnet. Nobody pays during the window, so the default tariff's allowance is raised
  (--allowance-wh, grace 1 h) to keep the sessions charging rather than suspended; `--allowance-wh 0`
  keeps the shipped tariff (the sessions are then suspended after about 50 Wh; their states are
  reported either way);
* bare: `bench/peers/ocpp16_bare.py`, the library's documented example shape, no storage;
* sqlite: `bench/peers/ocpp16_sqlite.py`, the same with one SQLite commit per MeterValues message.

With --rounds R the servers run in turn R times and the round with the median rate is reported for
each (this machine is shared; single runs are noisy). It prints MeterValues answered per second, the
servers' CPU time per message (steadier than rates on a shared machine) and
the latency (p50, p99) of each, the ratios satwatt/bare and satwatt/sqlite, and writes everything
as JSON to bench/results/side-by-side-<date>.json (or --json). Bounded: each server gets setup +
--duration +
a stop grace; everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH.parent))
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

from chargepoint_sim.lightload import LightConfig, LightLoad, rss_kb  # noqa: E402

ID_TAG = "BENCH-TAG-1"
SERVERS = ("satwatt", "bare", "sqlite")


def charger_ids(n: int) -> list[str]:
    return [f"SBS-{i:05d}" for i in range(1, n + 1)]


async def run_load(url: str, args: argparse.Namespace, password: str | None) -> dict[str, Any]:
    cfg = LightConfig(
        csms_url=url,
        chargers=args.chargers,
        closed_loop=True,
        duration_s=args.duration,
        ramp_s=args.ramp,
        setup_timeout_s=args.setup_timeout,
        password=password,
        id_pattern="SBS-{n:05d}",
        id_tag=ID_TAG,
        end_transactions=False,  # the server is stopped right after; stops would only add noise
    )
    return await LightLoad(cfg).run()


@contextlib.asynccontextmanager
async def peer(name: str, *extra: str) -> AsyncIterator[tuple[str, int]]:
    """One of bench/peers (``bare`` or ``sqlite``) running on a free port: its OCPP URL and pid."""
    port = free_port()
    script = BENCH / "peers" / ("ocpp16_bare.py" if name == "bare" else "ocpp16_sqlite.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--port",
        str(port),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        if not line.startswith("listening"):
            raise RuntimeError(f"{script.name} did not start: {line}")
        yield f"ws://127.0.0.1:{port}/ocpp", process.pid
    finally:
        process.terminate()
        await process.wait()


async def run_peer(name: str, args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--synchronous", args.sqlite_synchronous] if name == "sqlite" else []
    async with peer(name, *extra) as (url, pid):
        cpu_before = cpu_seconds(pid)
        report = await run_load(url, args, None)
        note_cpu(report, pid, cpu_before)
        report["server_rss_kb"] = rss_kb(pid)
        return report


async def run_satwatt(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="satwatt-sbs-") as tmp:
        tree = REPO
        if args.satwatt_rev:
            tree = Path(tmp) / "tree"
            args.satwatt_commit = await export_revision(args.satwatt_rev, tree)
        if args.database_url:
            await migrate(args.database_url, tree)
        server = SatwattServer(Path(tmp) / "data", free_port(), args.database_url, tree=tree)
        await server.start()
        try:
            async with operator(server.http) as client:
                await register_chargers(client, charger_ids(args.chargers))
                payer = await create_payer(client, [ID_TAG])
                tariff = None
                if args.allowance_wh is not None:
                    tariff = await patch_default_tariff(client, allowance_wh=args.allowance_wh, grace_s=3600)
                cpu_before = cpu_seconds(server.pid)
                report = await run_load(server.ocpp, args, CHARGER_PASSWORD)
                note_cpu(report, server.pid, cpu_before)
                report["server_rss_kb"] = rss_kb(server.pid)
                report["satwatt_sessions"] = await session_summary(client)
                report["satwatt_sessions"]["payer_id"] = payer["id"]
                report["satwatt_tariff"] = tariff
        except BaseException:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            await server.stop()
        return report


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def note_cpu(report: dict[str, Any], pid: int, before: float) -> None:
    """The server's CPU per answered message over the load (setup included): unlike a rate, it hardly
    moves with what else this shared machine is doing."""
    used = cpu_seconds(pid) - before
    report["server_cpu_s"] = round(used, 2)
    report["server_cpu_ms_per_msg"] = round(1000 * used / max(1, report["meter_values"]["answered"]), 3)


def row(name: str, report: dict[str, Any]) -> dict[str, Any]:
    m = report["meter_values"]
    return {
        "server": name,
        "msg_per_s": m["per_second"],
        "p50_ms": m["latency"]["p50_ms"],
        "p95_ms": m["latency"]["p95_ms"],
        "p99_ms": m["latency"]["p99_ms"],
        "answered": m["answered"],
        "charging_at_end": report["transactions"]["charging_at_end"],
        "errors": report["errors"],
        "disconnects": report["connections"]["disconnects"],
        "cpu_ms_per_msg": report.get("server_cpu_ms_per_msg"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.servers}
    for round_ in range(1, args.rounds + 1):
        for name in args.servers:
            print(
                f"round {round_}/{args.rounds}, {name}: {args.chargers} chargers, closed loop for "
                f"{args.duration} s ...",
                file=sys.stderr,
            )
            rounds[name].append(await (run_satwatt(args) if name == "satwatt" else run_peer(name, args)))
    # the round with the median rate stands for each server (the machine is shared and noisy)
    reports = {
        name: sorted(runs, key=lambda r: r["meter_values"]["per_second"])[(len(runs) - 1) // 2]
        for name, runs in rounds.items()
    }
    rows = [row(name, report) for name, report in reports.items()]
    for r in rows:
        r["msg_per_s_rounds"] = [run["meter_values"]["per_second"] for run in rounds[r["server"]]]
    ratios: dict[str, float] = {}
    if "satwatt" in reports:
        ours = reports["satwatt"]["meter_values"]["per_second"]
        for peer in ("bare", "sqlite"):
            if peer in reports and reports[peer]["meter_values"]["per_second"] > 0:
                ratios[f"satwatt/{peer}"] = round(ours / reports[peer]["meter_values"]["per_second"], 3)
    return {
        "benchmark": "side-by-side",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "git_head": _git_head(),
        "config": {
            "chargers": args.chargers,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "rounds": args.rounds,
            "protocol": "1.6",
            "load": "closed loop: MeterValues back to back per charger (chargepoint_sim.lightload)",
            "satwatt_database": "postgresql" if args.database_url else "sqlite",
            "sqlite_peer_synchronous": args.sqlite_synchronous,
            "satwatt_source": (
                f"git {args.satwatt_rev} = {args.satwatt_commit}" if args.satwatt_rev else "working tree"
            ),
        },
        "table": rows,
        "ratios": ratios,
        "reports": reports,
        "other_rounds": {
            name: [run for run in runs if run is not reports[name]]
            for name, runs in rounds.items()
            if len(runs) > 1
        },
    }


def _git_head() -> str:
    head = BENCH.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (BENCH.parent / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return "unknown"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'server':<10} {'msg/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'errors':>7} {'charging':>9}"
        f" {'CPU ms/msg':>11}"
    )
    for r in result["table"]:
        print(
            f"{r['server']:<10} {r['msg_per_s']:>9} {r['p50_ms']:>9} {r['p95_ms']:>9} {r['p99_ms']:>9} "
            f"{r['errors']:>7} {r['charging_at_end']:>9} {r['cpu_ms_per_msg']!s:>11}"
            + (f"   rounds: {r['msg_per_s_rounds']}" if len(r["msg_per_s_rounds"]) > 1 else "")
        )
    for name, ratio in result["ratios"].items():
        print(f"{name:<18} {ratio:.2f}x")
    sessions = result["reports"].get("satwatt", {}).get("satwatt_sessions")
    if sessions:
        print(
            f"satwatt sessions: {sessions['sessions']} ({sessions['sold']} sold to the payer, "
            f"{sessions['invoiced']} invoiced, states {sessions['by_state']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chargers", type=int, default=50, help="chargers per server (default 50)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="closed-loop seconds per server (default 20)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the servers in turn this many times; the median round is reported (default 1)",
    )
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to open the connections (default 2)")
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=60.0,
        help="seconds after the ramp for every transaction to start",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(SERVERS),
        help="which servers (default: all three)",
    )
    parser.add_argument(
        "--database-url",
        help="satwatt on this (empty, PostgreSQL) database instead of SQLite; migrated first",
    )
    parser.add_argument(
        "--allowance-wh",
        type=int,
        default=100_000,
        help="satwatt: the default tariff's unpaid allowance for the run (default 100000 Wh, grace 1 h: the "
        "sold sessions keep charging unpaid); 0 keeps the shipped tariff",
    )
    parser.add_argument(
        "--satwatt-rev",
        metavar="REV",
        help="run satwatt as committed at this git revision (e.g. HEAD; exported to a temporary directory) "
        "instead of the working tree",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("NORMAL", "FULL"),
        default="NORMAL",
        help="PRAGMA synchronous of the SQLite peer (default NORMAL, as satwatt; FULL fsyncs every commit)",
    )
    parser.add_argument(
        "--json", type=Path, help="write the JSON here (default bench/results/side-by-side-<date>.json)"
    )
    args = parser.parse_args()
    args.satwatt_commit = None
    if args.allowance_wh == 0:
        args.allowance_wh = None
    if args.chargers < 1 or args.duration <= 0 or args.rounds < 1:
        parser.error("--chargers and --rounds must be >= 1 and --duration > 0")
    result = asyncio.run(run(args))
    print_table(result)
    out = args.json or BENCH / "results" / f"side-by-side-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
