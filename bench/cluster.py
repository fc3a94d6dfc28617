"""Cluster mode (issue 11) on this machine: throughput with 1, 2 and 4 processes, commands through a
non-owner, charger failover after kill -9, and payments across a leader change.

    .venv/bin/python bench/cluster.py throughput [--chargers 100] [--duration 20] [--profile]
    .venv/bin/python bench/cluster.py commands [--commands 300]
    .venv/bin/python bench/cluster.py failover [--fleet 300]
    .venv/bin/python bench/cluster.py payments [--payers 12]
    .venv/bin/python bench/cluster.py all

Every part runs `csms serve` as subprocesses on a fresh PostgreSQL database of its own (created as
``satwatt_bench_cluster_<run>_<part>`` on --postgres, dropped afterwards unless --keep-databases) and,
in cluster mode, NATS (--nats-url) under a cluster name of its own whose key-value buckets are deleted
afterwards. The Lightning node is a simnet started in this process on a free port
(CSMS_LIGHTNING_BACKEND=lnd pointing at it over gRPC, as bench/kill9.py and the cluster tests do), shared
by every process of the part. Chargers are the light load client (chargepoint_sim.lightload, OCPP 1.6),
registered through the REST API without passwords, with a payer owning their id tag so every session
is sold and invoiced.

* throughput: the same closed loop as bench/side_by_side.py (N chargers sending MeterValues back to
  back on sold sessions, the tariff's allowance raised so nobody needs to pay) against, in one run:
  the `ocpp` library's bare example (bench/peers/ocpp16_bare.py), satwatt as one process without
  cluster mode (the baseline), and `csms serve --workers W` for each --workers (default 1 2 4) on one
  port (SO_REUSEPORT). Reports MeterValues answered per second, p50/p99, the servers' CPU per message,
  the ratios to the baseline and to bare, and per process the group-commit writer's transactions and
  facts per second (satwatt_db_batches_total / satwatt_db_facts_total from each process's /metrics,
  read over one keep-alive connection after its /healthz says which process answers). --profile
  samples one worker of the 2-process cluster and the baseline with py-spy during the window.
* commands: two processes (A and B, separate ports, one cluster); --command-chargers idle chargers
  connected to A; --commands get_configuration commands sent one after another, alternately through
  A's REST API (the owner) and B's (one NATS request/reply to A); p50/p99 of each.
* failover: --fleet chargers spread over three processes (lightload more_urls: a charger whose
  connection is lost tries the next URL), MeterValues every --meter-interval s on sold sessions; one
  process that is not the invoice-stream leader is killed with SIGKILL; reports the time until every
  charger it held has booted again (BootNotification answered) on another process, and the owner each
  now has (GET /api/v1/chargers/{id}).
* payments: --payers chargers over three processes, sessions sold to a payer whose invoices the
  simnet's car1 pays --autopay-ms after each is issued (small increments: an invoice every second or
  two per session); after --warmup s the invoice-stream leader (GET /healthz: invoice_stream_leader ==
  process) is killed with SIGKILL. Reports the time to the new leader, from the kill to the first
  payment credited after it, the settle -> credit delays before and after, and checks that every
  invoice the node settled is credited exactly once (GET /api/v1/sessions/{id}/ledger?reconcile=true:
  no mismatches, no payment hash twice, the set of paid invoices equal to the node's settled ones).

The machine is shared (2 cores): keep runs short, compare figures within one run. JSON goes to
bench/results/cluster-<part>-<date>.json (or --json-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import nats  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from satwatt_server import (  # noqa: E402  (beside this script)
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
from side_by_side import cpu_seconds, peer  # noqa: E402

from chargepoint_sim.lightload import LightConfig, LightLoad  # noqa: E402
from chargepoint_sim.load import latency_summary  # noqa: E402
from lightning.simnet import NodeSpec, Simnet  # noqa: E402
from lightning.simnet.network import AutoPay  # noqa: E402

console = Console(stderr=True)
ID_TAG = "CLUSTER-BENCH-TAG"
PARTS = ("throughput", "commands", "failover", "payments")
# small increments (as bench/kill9.py): many invoices per session in a short run
PAYING_TARIFF = {
    "price_msat_per_kwh": 100_000,
    "increment_wh": 20,
    "min_invoice_interval_s": 1,
    "allowance_wh": 40,
    "grace_s": 30,
    "stop_after_s": 600,
    "invoice_expiry_s": 600,
    "session_fee_msat": 1_000,
}


# ---------------------------------------------------------------------------------------------- plumbing
@dataclass
class Bench:
    """What every part shares: the options, the run's id, the source tree, the databases made."""

    args: argparse.Namespace
    tree: Path
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%H%M%S") + secrets.token_hex(2))
    databases: list[str] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # part -> its database's SQLAlchemy URL
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="satwatt-cluster-bench-")))

    async def database(self, part: str) -> str:
        """A fresh, migrated PostgreSQL database for ``part``; its SQLAlchemy URL."""
        name = f"satwatt_bench_cluster_{self.run_id}_{part}{len(self.databases) + 1}"
        conn = await asyncpg.connect(f"{self.args.postgres}/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.databases.append(name)
        url = f"{self.args.postgres.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
        await migrate(url, self.tree)
        return url

    def cluster_name(self, part: str) -> str:
        name = f"bench{self.run_id}{part[:4]}{len(self.clusters) + 1}"
        self.clusters.append(name)
        return name

    async def cleanup(self) -> None:
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        for cluster in self.clusters:
            with contextlib.suppress(Exception):
                await delete_buckets(self.args.nats_url, cluster)
        if self.args.keep_databases:
            return
        conn = await asyncpg.connect(f"{self.args.postgres}/postgres")
        try:
            for name in self.databases:
                assert name.startswith("satwatt_bench_cluster_")  # never anyone else's
                with contextlib.suppress(Exception):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def delete_buckets(nats_url: str, cluster: str) -> None:
    """Remove a cluster's key-value buckets from NATS (as tests/cluster/processes.py does)."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        for bucket in ("processes", "owners", "leases"):
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{cluster}_{bucket}")
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def simnet(work: Path, cars: int = 1, autopay_ms: int | None = None) -> AsyncIterator[Simnet]:
    """The shared Lightning node: a simnet in this process on a free port."""
    net = Simnet(
        work / f"simnet-{secrets.token_hex(3)}",
        port=0,
        nodes=(NodeSpec("satwatt", 1_000_000), *(NodeSpec(f"car{i}") for i in range(1, cars + 1))),
        autopay=None if autopay_ms is None else AutoPay("car1", "satwatt", autopay_ms / 1000),
    )
    await net.start()
    try:
        yield net
    finally:
        await net.stop()


def environment(bench: Bench, net: Simnet, cluster: str | None, **settings: str) -> dict[str, str]:
    """What `csms serve` gets on top of SatwattServer's environment (that of tests/cluster/processes.py,
    without their short timers): the shared simnet as its LND node, and the cluster."""
    env = {
        "CSMS_LIGHTNING_BACKEND": "lnd",
        "CSMS_LND_GRPC": net.address,
        "CSMS_LND_TLS_CERT": str(net.tls_cert_path),
        "CSMS_LND_MACAROON": str(net.macaroon_path("satwatt", "admin")),
        "CSMS_REQUIRE_CHARGER_PASSWORD": "false",
        "CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS": "0",  # every simulated charger is 127.0.0.1
        **{f"CSMS_{k.upper()}": v for k, v in settings.items()},
    }
    if cluster is not None:
        env |= {
            "CSMS_NATS_URL": bench.args.nats_url,
            "CSMS_CLUSTER_NAME": cluster,
            "CSMS_CLUSTER_LEASE_S": str(bench.args.lease_s),
        }
    return env


@dataclass
class Server(SatwattServer):
    """A `csms serve` (with --workers W: a supervisor and W worker processes on one port), started when
    /healthz answers and, in cluster mode, lists W members served by W processes."""

    name: str = "satwatt"
    workers: int | None = None  # None: plain `csms serve`

    def __post_init__(self) -> None:
        if self.workers is not None:
            self.serve_args = [*self.serve_args, "--workers", str(self.workers)]

    def ready(self, health: dict[str, Any]) -> bool:
        want = self.workers or 1
        cluster = health.get("cluster")
        return cluster is None or (len(cluster["members"]) >= want and len(self.pids()) >= want)

    def pids(self) -> list[int]:
        """The processes serving: the workers under a supervisor, else the process itself."""
        if self.process is None or self.process.returncode is not None:
            return []
        if self.workers is None or self.workers == 1:
            return [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            return dict((await client.get(f"{self.http}/healthz")).json())

    def log_tail(self, lines: int = 30) -> str:
        return super().log_tail(lines)


_METRIC = re.compile(r"^(satwatt_db_batches_total|satwatt_db_facts_total) (\S+)$", re.M)


async def metrics_by_process(server: Server, want: int, attempts: int = 60) -> dict[str, dict[str, float]]:
    """Each process's /metrics: over one keep-alive connection, /healthz says which process answers and
    /metrics follows on the same connection (the kernel spreads connections, not requests)."""
    found: dict[str, dict[str, float]] = {}
    for _ in range(attempts):
        async with httpx.AsyncClient(
            base_url=server.http, timeout=10, limits=httpx.Limits(max_connections=1)
        ) as client:
            health = (await client.get("/healthz")).json()
            process = (health.get("cluster") or {}).get("process", "single")
            text = (await client.get("/metrics")).text
        found[process] = {name: float(value) for name, value in _METRIC.findall(text)}
        if len(found) >= want:
            break
    return found


async def pg_stats(database_url: str) -> dict[str, int]:
    """Commits and rows written in this database so far (pg_stat_database)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        row = await conn.fetchrow(
            "select xact_commit, tup_inserted, tup_updated, tup_deleted from pg_stat_database "
            "where datname = current_database()"
        )
    finally:
        await conn.close()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


def writer_rates(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], seconds: float
) -> dict[str, Any]:
    """Group-commit writer transactions and facts per second, per process and in all."""
    per: dict[str, Any] = {}
    for process, end in after.items():
        start = before.get(process, {})
        batches = end.get("satwatt_db_batches_total", 0) - start.get("satwatt_db_batches_total", 0)
        facts = end.get("satwatt_db_facts_total", 0) - start.get("satwatt_db_facts_total", 0)
        per[process] = {
            "transactions_per_s": round(batches / seconds, 1),
            "facts_per_s": round(facts / seconds, 1),
            "facts_per_transaction": round(facts / batches, 1) if batches else None,
        }
    return {
        "per_process": per,
        "transactions_per_s": round(sum(p["transactions_per_s"] for p in per.values()), 1),
        "facts_per_s": round(sum(p["facts_per_s"] for p in per.values()), 1),
    }


async def set_up_fleet(
    server_http: str, ids: list[str], tariff: dict[str, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register the chargers (no passwords), a payer owning the id tag, the default tariff changed."""
    async with operator(server_http) as client:
        await register_chargers(client, ids, password=None, concurrency=8)
        payer = await create_payer(client, [ID_TAG])
        changed = await patch_default_tariff(client, **tariff)
    return payer, changed


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def on_progress_for(bar: Progress, task: Any, total_s: float) -> Callable[[str, LightLoad], None]:
    def update(phase: str, load: LightLoad) -> None:
        s = load.stats
        info = f"{phase}: {load.online()} online, {load.charging()} charging, {len(s.latency)} answers"
        bar.update(task, info=info, completed=min(total_s, s.now()))

    return update


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
        "shared": "yes: other agents' work ran on the same 2 cores",
    }


def git_head() -> str:
    with contextlib.suppress(OSError):
        ref = (REPO / ".git" / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            return (REPO / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    return "unknown"


def write(bench: Bench, part: str, result: dict[str, Any]) -> Path:
    result = {
        "benchmark": f"cluster-{part}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "git_head": git_head(),
        "satwatt_source": bench.args.satwatt_commit or "working tree",
        "command": " ".join(["bench/cluster.py", *sys.argv[1:]]),
        **result,
    }
    out = bench.args.json_dir / f"cluster-{part}-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {out}")
    return out


# ------------------------------------------------------------------------------------------ throughput
async def closed_loop(
    url: str, args: argparse.Namespace, label: str, on_phase: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], LightLoad]:
    """The closed loop; ``on_phase("measure")`` as the window opens, ``on_phase("stopping")`` as it ends."""
    cfg = LightConfig(
        csms_url=url,
        chargers=args.chargers,
        closed_loop=True,
        duration_s=args.duration,
        ramp_s=args.ramp,
        setup_timeout_s=args.setup_timeout,
        id_pattern="CLT-{n:05d}",
        id_tag=ID_TAG,
        end_transactions=False,
    )
    load = LightLoad(cfg)
    seen: set[str] = set()
    with progress() as bar:
        task = bar.add_task(label, total=args.ramp + args.setup_timeout + args.duration, info="")
        show = on_progress_for(bar, task, args.ramp + args.setup_timeout + args.duration)

        def update(phase: str, fleet: LightLoad) -> None:
            if phase not in seen:
                seen.add(phase)
                if on_phase is not None:
                    on_phase(phase)
            show(phase, fleet)

        report = await load.run(update)
    return report, load


async def py_spy(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    spy = REPO / ".venv" / "bin" / "py-spy"
    return await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


PROFILE_BUCKETS = (  # (label, a substring of a py-spy frame "function (module/path.py:line)")
    ("NATS client (publish, request/reply, KV)", "(nats/"),
    ("csms.cluster (ownership, events, lease, heartbeat)", "(csms/cluster/"),
    ("database (asyncpg, SQLAlchemy, group-commit writer)", "(asyncpg/"),
    ("database (asyncpg, SQLAlchemy, group-commit writer)", "(sqlalchemy/"),
    ("database (asyncpg, SQLAlchemy, group-commit writer)", "(csms/db/"),
    ("websockets (OCPP frames)", "(websockets/"),
    ("HTTP (uvicorn, starlette, FastAPI)", "(uvicorn/"),
    ("HTTP (uvicorn, starlette, FastAPI)", "(starlette/"),
    ("HTTP (uvicorn, starlette, FastAPI)", "(fastapi/"),
    ("Lightning gRPC", "(grpc"),
    ("Lightning gRPC", "(lightning/"),
    ("settlement", "(csms/settlement/"),
    ("charging service", "(csms/charging/"),
    ("OCPP handling", "(csms/ocpp/"),
    ("OCPP handling", "(ocpp/"),
)


def summarize_profile(raw: Path) -> dict[str, Any]:
    """py-spy's collapsed stacks: samples by the first recognised frame from the leaf up, and the top
    leaf functions."""
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    innermost: Counter[str] = Counter()  # satwatt's innermost function of each sample
    total = 0
    with contextlib.suppress(OSError):
        for line in raw.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            leaves[frames[-1]] += count
            # below the event loop's Runner.run (the start-up frames above it are uvicorn's); a stack
            # ending there is the loop's native code (uvloop: socket I/O, polling, scheduling)
            runner = max((i for i, f in enumerate(frames) if f.startswith("Runner.run ")), default=-1)
            frames = frames[runner + 1 :]
            label = "event loop, native (uvloop: socket I/O, polling, scheduling)"
            for frame in reversed(frames):
                hit = next((name for name, needle in PROFILE_BUCKETS if needle in frame), None)
                if hit is not None:
                    label = hit
                    break
            else:
                if frames:
                    label = "other Python (asyncio, json, stdlib)"
            buckets[label] += count
            ours = [f for f in frames if "(csms/" in f]
            if ours:
                innermost[ours[-1].split(":")[0] + ")"] += count
            seen = set()
            for frame in frames:
                for name, needle in (
                    ("any NATS client frame", "(nats/"),
                    ("any csms.cluster frame", "(csms/cluster/"),
                    ("cluster event publishing (ClusterEventLog._publish_forever)", "_publish_forever"),
                    ("ownership / KV (csms/cluster/ownership.py)", "(csms/cluster/ownership.py"),
                ):
                    if needle in frame and name not in seen:
                        seen.add(name)
                        inclusive[name] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "by_area_percent": {k: share(v) for k, v in buckets.most_common()},
        "inclusive_percent": {k: share(v) for k, v in inclusive.items()},
        "top_leaves_percent": {k: share(v) for k, v in leaves.most_common(15)},
        "top_satwatt_functions_percent": {k: share(v) for k, v in innermost.most_common(15)},
    }


async def throughput_satwatt(bench: Bench, workers: int | None, profile: bool) -> dict[str, Any]:
    args = bench.args
    label = "single" if workers is None else f"cluster-{workers}"
    database_url = await bench.database(f"tp{label.replace('-', '')}")
    cluster = None if workers is None else bench.cluster_name(f"tp{workers}")
    async with simnet(bench.work) as net:
        env = environment(bench, net, cluster)
        server = Server(
            bench.work / label, free_port(), database_url, env, bench.tree, name=label, workers=workers
        )
        await server.start()
        try:
            ids = [f"CLT-{n:05d}" for n in range(1, args.chargers + 1)]
            await set_up_fleet(server.http, ids, {"allowance_wh": args.allowance_wh, "grace_s": 3600})
            want = len(server.pids())
            snapshots: dict[str, tuple[float, float, asyncio.Task[dict[str, dict[str, float]]]]] = {}
            spy_out = bench.work / f"profile-{label}.txt"
            spy: list[asyncio.Task[None]] = []

            async def sample() -> None:  # one worker (or the process) over the window
                proc = await py_spy(server.pids()[-1], max(5, args.duration - 2), spy_out)
                await proc.wait()

            pg: dict[str, asyncio.Task[dict[str, int]]] = {}

            def on_phase(phase: str) -> None:
                if phase in ("measure", "stopping"):  # the window's edges: CPU now, /metrics right after
                    task = asyncio.create_task(metrics_by_process(server, want))
                    snapshots[phase] = (time.monotonic(), server.cpu_seconds(), task)
                    pg[phase] = asyncio.create_task(pg_stats(database_url))
                if phase == "measure" and profile:
                    spy.append(asyncio.create_task(sample()))

            report, _ = await closed_loop(server.ocpp, args, f"satwatt {label}", on_phase)
            t0, cpu0, first = snapshots["measure"]
            t1, cpu1, last = snapshots["stopping"]
            before, after = await first, await last
            seconds = t1 - t0
            cpu = cpu1 - cpu0
            if spy:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(30):
                        await spy[0]
            async with operator(server.http) as client:
                sessions = await session_summary(client)
            # over the measurement window (the processes' CPU and /metrics read at its edges)
            report["server_cpu_s"] = round(cpu, 2)
            report["server_cpu_ms_per_msg"] = round(
                1000 * cpu / max(1, report["meter_values"]["answered"]), 3
            )
            report["processes"] = want
            report["db_writer"] = writer_rates(before, after, seconds)
            pg0, pg1 = await pg["measure"], await pg["stopping"]
            report["postgresql"] = {  # pg_stat_database of the run's database (flushed about every 1 s)
                f"{name}_per_s": round((pg1[name] - pg0[name]) / seconds, 1) for name in pg0
            }
            answered = max(1, report["meter_values"]["answered"])
            report["postgresql"]["rows_written_per_meter_values"] = round(
                sum(pg1[n] - pg0[n] for n in ("tup_inserted", "tup_updated", "tup_deleted")) / answered, 2
            )
            report["db_writer"]["seconds"] = round(seconds, 1)
            report["satwatt_sessions"] = sessions
            if profile:
                report["profile"] = summarize_profile(spy_out)
                report["profile"]["pid_sampled"] = "one worker" if workers else "the process"
        except BaseException:
            console.print(server.log_tail())
            raise
        finally:
            await server.stop()
    return report


async def throughput_bare(bench: Bench) -> dict[str, Any]:
    async with peer("bare") as (url, pid):
        edges: dict[str, float] = {}

        def on_phase(phase: str) -> None:
            edges[phase] = cpu_seconds(pid)

        report, _ = await closed_loop(url, bench.args, "bare", on_phase)
        cpu = edges["stopping"] - edges["measure"]
        report["server_cpu_s"] = round(cpu, 2)
        report["server_cpu_ms_per_msg"] = round(1000 * cpu / max(1, report["meter_values"]["answered"]), 3)
        report["processes"] = 1
        return report


def throughput_row(name: str, report: dict[str, Any]) -> dict[str, Any]:
    m = report["meter_values"]
    db = report.get("db_writer") or {}
    return {
        "server": name,
        "processes": report.get("processes"),
        "msg_per_s": m["per_second"],
        "p50_ms": m["latency"]["p50_ms"],
        "p99_ms": m["latency"]["p99_ms"],
        "answered": m["answered"],
        "errors": report["errors"],
        "charging_at_end": report["transactions"]["charging_at_end"],
        "cpu_ms_per_msg": report.get("server_cpu_ms_per_msg"),
        "db_transactions_per_s": db.get("transactions_per_s"),
        "db_facts_per_s": db.get("facts_per_s"),
        "pg_commits_per_s": (report.get("postgresql") or {}).get("xact_commit_per_s"),
        "pg_rows_per_s": round(
            sum(v for k, v in (report.get("postgresql") or {}).items() if k.startswith("tup_")), 1
        )
        if report.get("postgresql")
        else None,
    }


async def part_throughput(bench: Bench) -> dict[str, Any]:
    args = bench.args
    runs: dict[str, list[dict[str, Any]]] = {}
    order: list[tuple[str, int | None]] = [("bare", None), ("single", None)]
    order += [(f"cluster-{w}", w) for w in args.workers]
    for round_ in range(1, args.rounds + 1):
        for name, workers in order:
            console.print(
                f"round {round_}/{args.rounds}: {name}, {args.chargers} chargers, {args.duration} s"
            )
            profile = args.profile and round_ == 1 and (name == "single" or workers == 2)
            if name == "bare":
                report = await throughput_bare(bench)
            else:
                report = await throughput_satwatt(bench, workers, profile)
            runs.setdefault(name, []).append(report)
    reports = {
        name: sorted(rs, key=lambda r: r["meter_values"]["per_second"])[(len(rs) - 1) // 2]
        for name, rs in runs.items()
    }
    table = [
        throughput_row(name, r) | {"msg_per_s_rounds": [x["meter_values"]["per_second"] for x in runs[name]]}
        for name, r in reports.items()
    ]
    base = reports["single"]["meter_values"]["per_second"]
    bare = reports["bare"]["meter_values"]["per_second"]
    for row in table:
        row["vs_single"] = round(row["msg_per_s"] / base, 2) if base else None
        row["vs_bare"] = round(row["msg_per_s"] / bare, 2) if bare else None
    profiles = {name: r["profile"] for name, r in reports.items() if "profile" in r}
    for r in reports.values():
        r.pop("profile", None)
    result = {
        "config": {
            "chargers": args.chargers,
            "duration_s": args.duration,
            "ramp_s": args.ramp,
            "rounds": args.rounds,
            "load": "closed loop: MeterValues back to back per charger on sold sessions (lightload)",
            "database": "PostgreSQL, a fresh database per server",
            "allowance_wh": args.allowance_wh,
            "cluster_lease_s": args.lease_s,
        },
        "table": table,
        "profiles": profiles,
        "reports": reports,
    }
    print(
        f"{'server':<11} {'procs':>5} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x single':>8} {'x bare':>7}"
        f" {'CPU ms/msg':>10} {'db tx/s':>8} {'facts/s':>8} {'pg tx/s':>8} {'rows/s':>8}"
    )
    for r in table:
        print(
            f"{r['server']:<11} {r['processes']!s:>5} {r['msg_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r['vs_single']!s:>8} {r['vs_bare']!s:>7} {r['cpu_ms_per_msg']!s:>10} "
            f"{r['db_transactions_per_s']!s:>8} {r['db_facts_per_s']!s:>8} {r['pg_commits_per_s']!s:>8} "
            f"{r['pg_rows_per_s']!s:>8}"
        )
    for name, p in profiles.items():
        print(f"profile {name}: {p['by_area_percent']} inclusive {p['inclusive_percent']}")
    return result


# --------------------------------------------------------------------------------------------- commands
@contextlib.asynccontextmanager
async def cluster_of(
    bench: Bench, part: str, size: int, net: Simnet, tariff: dict[str, int], ids: list[str], **settings: str
) -> AsyncIterator[list[Server]]:
    """``size`` single `csms serve` processes on their own ports, one cluster, one fresh database; the
    fleet registered through the first."""
    database_url = await bench.database(part)
    bench.urls[part] = database_url
    env = environment(bench, net, bench.cluster_name(part), **settings)
    servers = [
        Server(bench.work / f"{part}-p{i}", free_port(), database_url, env, bench.tree, name=f"{part}-p{i}")
        for i in range(1, size + 1)
    ]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        await set_up_fleet(servers[0].http, ids, tariff)
        yield servers
    except BaseException:
        for s in servers:
            console.print(f"--- {s.name}\n{s.log_tail()}")
        raise
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)


async def part_commands(bench: Bench) -> dict[str, Any]:
    args = bench.args
    ids = [f"CMD-{n:05d}" for n in range(1, args.command_chargers + 1)]
    async with simnet(bench.work) as net, cluster_of(bench, "commands", 2, net, {}, ids) as (a, b):
        cfg = LightConfig(
            csms_url=a.ocpp,
            chargers=len(ids),
            closed_loop=False,
            duration_s=3600,
            ramp_s=1,
            setup_timeout_s=60,
            id_pattern="CMD-{n:05d}",
            id_tag=ID_TAG,
            charging_fraction=0.0,
            heartbeat_interval_s=300,
        )
        load = LightLoad(cfg)
        run = asyncio.create_task(load.run())
        try:
            if not await load.wait_ready(90):
                raise RuntimeError("the chargers did not all boot")
            owner = (await a.health())["cluster"]["process"]
            latencies: dict[str, list[float]] = {"owner": [], "non_owner": []}
            statuses: Counter[str] = Counter()
            body = {"command": "get_configuration", "keys": ["HeartbeatInterval"]}
            async with operator(a.http) as via_a, operator(b.http) as via_b:
                for client in (via_a, via_b):  # warm both paths (connections, NATS subscriptions)
                    for cid in ids[:3]:
                        (await client.post(f"/api/v1/chargers/{cid}/commands", json=body)).raise_for_status()
                with progress() as bar:
                    task = bar.add_task("commands", total=2 * args.commands, info="")
                    for i in range(args.commands):
                        cid = ids[i % len(ids)]
                        pair = [("owner", via_a), ("non_owner", via_b)]
                        for path, client in pair if i % 2 == 0 else pair[::-1]:
                            t0 = time.perf_counter()
                            reply = await client.post(f"/api/v1/chargers/{cid}/commands", json=body)
                            latencies[path].append(time.perf_counter() - t0)
                            statuses[f"{path} {reply.status_code}"] += 1
                        bar.update(task, advance=2, info=f"{i + 1}/{args.commands}")
                shown = (await via_b.get(f"/api/v1/chargers/{ids[0]}")).json()
        finally:
            load.finish()
            await run
    summary = {path: latency_summary(values) for path, values in latencies.items()}
    added = {
        key: round(summary["non_owner"][key] - summary["owner"][key], 2)
        for key in ("p50_ms", "p95_ms", "p99_ms")
    }
    result = {
        "config": {
            "chargers": len(ids),
            "commands_each_way": args.commands,
            "command": body,
            "processes": 2,
            "chargers_connected_to": "A",
            "how": "sequential, alternating A (owner) and B (non-owner: NATS request to A) per command",
        },
        "owner_process": owner,
        "charger_as_b_shows_it": {k: shown.get(k) for k in ("owner", "connection_state", "protocol")},
        "statuses": dict(statuses),
        "latency": summary,
        "non_owner_minus_owner_ms": added,
    }
    for path, s in summary.items():
        print(f"{path:<10} n={s['count']} p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  p99 {s['p99_ms']} ms")
    print(f"added by the hop: {added}; statuses {dict(statuses)}")
    return result


# --------------------------------------------------------------------------------------------- failover
async def leader_of(servers: list[Server]) -> Server | None:
    for server in servers:
        if server.process is None or server.process.returncode is not None:
            continue
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            cluster = (await server.health())["cluster"]
            if (
                cluster["invoice_stream_leader"] is not None
                and cluster["invoice_stream_leader"] == cluster["process"]
            ):
                return server
    return None


async def wait_leader(servers: list[Server], timeout_s: float = 60) -> Server:
    async with asyncio.timeout(timeout_s):
        while (leader := await leader_of(servers)) is None:  # noqa: ASYNC110  (polls other processes)
            await asyncio.sleep(0.05)
    return leader


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_s": round(statistics.median(ordered), 3),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max_s": round(ordered[-1], 3),
    }


async def part_failover(bench: Bench) -> dict[str, Any]:
    args = bench.args
    ids = [f"FO-{n:05d}" for n in range(1, args.fleet + 1)]
    tariff = {"allowance_wh": args.allowance_wh, "grace_s": 3600}
    async with simnet(bench.work) as net, cluster_of(bench, "failover", 3, net, tariff, ids) as servers:
        cfg = LightConfig(
            csms_url=servers[0].ocpp,
            more_urls=tuple(s.ocpp for s in servers[1:]),
            chargers=len(ids),
            closed_loop=False,
            meter_interval_s=args.meter_interval,
            duration_s=3600,
            ramp_s=args.fleet_ramp,
            setup_timeout_s=180,
            id_pattern="FO-{n:05d}",
            id_tag=ID_TAG,
            end_transactions=False,
        )
        load = LightLoad(cfg)
        run = asyncio.create_task(load.run())
        try:
            with progress() as bar:
                task = bar.add_task("failover", total=None, info="")
                show = on_progress_for(bar, task, 0)
                async with asyncio.timeout(args.fleet_ramp + 180):
                    while not load._all_ready.is_set():
                        show("setup", load)
                        await asyncio.sleep(0.5)
                setup_s = load.stats.now()
                steady_from = load.stats.now()
                await asyncio.sleep(args.steady)
                leader = await wait_leader(servers)
                victim = next(s for s in servers if s is not leader)
                held = [c for c in load.chargers if c.url == victim.ocpp]
                others = [c for c in load.chargers if c.url != victim.ocpp]
                # the chargers go to the next URL: the process after the victim takes them all
                taker = servers[(servers.index(victim) + 1) % len(servers)]
                spy_out = bench.work / "profile-failover-taker.txt"
                spy = None
                if args.profile:
                    assert taker.process is not None
                    spy = await py_spy(taker.process.pid, 10, spy_out)
                t_kill = load.stats.now()
                await victim.kill()
                back_at: dict[str, float] = {}
                deadline = time.monotonic() + args.failover_timeout
                while len(back_at) < len(held) and time.monotonic() < deadline:
                    now = load.stats.now()
                    for c in held:
                        if (
                            c.cid not in back_at
                            and c.online
                            and c.booted_at >= t_kill
                            and c.url != victim.ocpp
                        ):
                            back_at[c.cid] = c.booted_at - t_kill
                    show(f"after kill: {len(back_at)}/{len(held)} back", load)
                    bar.update(
                        task,
                        info=f"{len(back_at)}/{len(held)} back on another process, "
                        f"{now - t_kill:.1f} s after the kill",
                    )
                    await asyncio.sleep(0.05)
                t_all = load.stats.now()
                await asyncio.sleep(args.meter_interval + 1)  # a sample each after their return
                t_end = load.stats.now()
            survivors = [s for s in servers if s is not victim]
            ids_by_url = {s.ocpp: (await s.health())["cluster"]["process"] for s in survivors}
            owners: Counter[str] = Counter()
            async with operator(survivors[0].http) as client:
                for c in held:
                    shown = (await client.get(f"/api/v1/chargers/{c.cid}")).json()
                    right = (
                        shown.get("owner") == ids_by_url.get(c.url)
                        and shown.get("connection_state") == "connected"
                    )
                    owners["owner = the process it reconnected to, connected" if right else "other"] += 1
                sessions = await session_summary(client)
            after_meter = load.stats.window(t_kill, t_end)
            before_meter = load.stats.window(steady_from, t_kill)
        finally:
            load.finish()
            await run
    back = list(back_at.values())
    result = {
        "config": {
            "chargers": len(ids),
            "processes": 3,
            "meter_interval_s": args.meter_interval,
            "cluster_lease_s": args.lease_s,
            "killed": "a process that is not the invoice-stream leader",
            "reconnect": "lightload more_urls: after the loss, the next URL, back-off 0.5 s x (0.5-1.5)",
        },
        "setup_s": round(setup_s, 1),
        "held_by_killed_process": len(held),
        "held_by_the_others": len(others),
        "back_on_another_process": len(back),
        "all_back_s": round(max(back), 3) if len(back) == len(held) and back else None,
        "back_after_kill": quantiles(back),
        "measured_until_s": round(t_all - t_kill, 2),
        "owners_afterwards": dict(owners),
        "meter_values_before_kill": latency_summary(before_meter),
        "meter_values_after_kill": latency_summary(after_meter),
        "sessions": sessions,
        "disconnects": load.stats.disconnects,
        "errors": load.stats.timeouts + sum(load.stats.call_errors.values()),
    }
    if spy is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await spy.wait()
        result["profile_of_the_taker_10s_from_the_kill"] = summarize_profile(spy_out)
        print(f"profile of the process taking them over: {result['profile_of_the_taker_10s_from_the_kill']}")
    print(
        f"{len(held)} chargers on the killed process: {len(back)} back on another; all back "
        f"{result['all_back_s']} s after the kill (p50 {result['back_after_kill']['p50_s']} s); owners "
        f"{dict(owners)}; MeterValues p99 before {result['meter_values_before_kill']['p99_ms']} ms, after "
        f"{result['meter_values_after_kill']['p99_ms']} ms; sessions {sessions['by_state']}"
    )
    return result


# --------------------------------------------------------------------------------------------- payments
@dataclass
class PaymentWatch:
    """Settles seen at the node (in this process) and credits seen through the REST API, with times."""

    t0: float
    settled_at: dict[str, float] = field(default_factory=dict)  # payment hash hex -> s since t0
    credited_at: dict[str, float] = field(default_factory=dict)
    session_of: dict[str, str] = field(default_factory=dict)  # payment hash hex -> session id

    def now(self) -> float:
        return time.monotonic() - self.t0


async def watch_node(net: Simnet, watch: PaymentWatch, stop: asyncio.Event) -> None:
    from lightning.simnet.network import SETTLED

    assert net.network is not None
    while not stop.is_set():
        for r_hash, inv in list(net.network.invoices["satwatt"].items()):
            key = r_hash.hex()
            if inv.state == SETTLED and key not in watch.settled_at:
                watch.settled_at[key] = watch.now()
        await asyncio.sleep(0.02)


async def watch_credits(
    servers: list[Server], sessions: list[str], watch: PaymentWatch, stop: asyncio.Event
) -> None:
    clients = [operator(s.http) for s in servers]
    try:
        while not stop.is_set():
            alive = [
                c for s, c in zip(servers, clients, strict=True) if s.process and s.process.returncode is None
            ]
            for i, session_id in enumerate(sessions):
                client = alive[i % len(alive)]
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    reply = await client.get(f"/api/v1/sessions/{session_id}/invoices")
                    if reply.status_code != 200:
                        continue
                    for invoice in reply.json():
                        watch.session_of[invoice["payment_hash"]] = session_id
                        if invoice["status"] == "paid" and invoice["payment_hash"] not in watch.credited_at:
                            watch.credited_at[invoice["payment_hash"]] = watch.now()
            await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.aclose()


async def invoice_rows(database_url: str, hashes: list[str]) -> list[dict[str, Any]]:
    """What the database says of these invoices (a diagnosis of a settled invoice never credited)."""
    if not hashes:
        return []
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "select i.key, i.status, i.kind, i.seq, i.bolt11 is not null as has_bolt11, i.created_at, "
            "s.charger_id, s.state from ln_invoices i join sessions s on s.number = i.session_number "
            "where i.payment_hash = any($1::text[])",
            hashes,
        )
    finally:
        await conn.close()
    found = [
        {k: (str(v) if not isinstance(v, (int, bool, type(None))) else v) for k, v in r.items()} for r in rows
    ]
    return found or [{"note": "none of them has a row in ln_invoices"}]


async def part_payments(bench: Bench) -> dict[str, Any]:
    args = bench.args
    ids = [f"PAY-{n:05d}" for n in range(1, args.payers + 1)]
    async with (
        simnet(bench.work, cars=1, autopay_ms=args.autopay_ms) as net,
        cluster_of(bench, "payments", 3, net, PAYING_TARIFF, ids) as servers,
    ):
        cfg = LightConfig(
            csms_url=servers[0].ocpp,
            more_urls=tuple(s.ocpp for s in servers[1:]),
            chargers=len(ids),
            closed_loop=False,
            meter_interval_s=1.0,
            power_w=args.power_w,
            duration_s=3600,
            ramp_s=2,
            setup_timeout_s=120,
            id_pattern="PAY-{n:05d}",
            id_tag=ID_TAG,
            end_transactions=True,  # the sessions end (else satwatt keeps invoicing at the last power)
        )
        load = LightLoad(cfg)
        run = asyncio.create_task(load.run())
        watch = PaymentWatch(time.monotonic())
        stop = asyncio.Event()
        watchers: list[asyncio.Task[None]] = []
        try:
            if not await load.wait_ready(150):
                raise RuntimeError("the chargers did not all start their transactions")
            sessions: list[str] = []
            async with operator(servers[0].http) as client:
                for cid in ids:
                    page = (
                        await client.get("/api/v1/sessions", params={"charger_id": cid, "limit": 1})
                    ).json()
                    sessions.append(page[0]["id"])
            watchers = [
                asyncio.create_task(watch_node(net, watch, stop)),
                asyncio.create_task(watch_credits(servers, sessions, watch, stop)),
            ]
            with progress() as bar:
                task = bar.add_task("payments", total=args.warmup + args.after_kill, info="")

                async def tick(phase: str, until: float) -> None:
                    while watch.now() < until:
                        bar.update(
                            task,
                            completed=min(watch.now() - start, args.warmup + args.after_kill),
                            info=f"{phase}: {len(watch.settled_at)} settled, "
                            f"{len(watch.credited_at)} credited",
                        )
                        await asyncio.sleep(0.25)

                start = watch.now()
                await tick("before the kill", start + args.warmup)
                leader = await wait_leader(servers)
                old_leader_id = (await leader.health())["cluster"]["process"]
                owned_by_leader = [c.cid for c in load.chargers if c.url == leader.ocpp]
                t_kill = watch.now()
                await leader.kill()
                survivors = [s for s in servers if s is not leader]
                new_leader = await wait_leader(survivors)
                t_new_leader = watch.now()
                await tick("after the kill", t_kill + args.after_kill)
                load.finish()
                await run  # the chargers are gone: no more energy, no more invoices
                # let the last invoices be paid and credited: quiet for 3 s, bounded
                deadline = watch.now() + 60
                last_change, seen = watch.now(), (0, 0)
                while watch.now() < deadline:
                    pending = set(watch.settled_at) - set(watch.credited_at)
                    bar.update(task, info=f"settling: {len(pending)} settled, not yet credited")
                    if (len(watch.settled_at), len(watch.credited_at)) != seen:
                        last_change, seen = watch.now(), (len(watch.settled_at), len(watch.credited_at))
                    if not pending and watch.now() - last_change > 3:
                        break
                    await asyncio.sleep(0.25)
            stop.set()
            await asyncio.gather(*watchers, return_exceptions=True)
            # exactly once: every ledger, reconciled with the node, through a surviving process
            ledgers: dict[str, Any] = {}
            async with operator(new_leader.http) as client:
                for session_id in sessions:
                    reply = await client.get(
                        f"/api/v1/sessions/{session_id}/ledger", params={"reconcile": "true"}
                    )
                    ledgers[session_id] = reply.json()
            new_leader_id = (await new_leader.health())["cluster"]["process"]
        finally:
            stop.set()
            load.finish()
            await run
        from lightning.simnet.network import SETTLED

        assert net.network is not None
        node_settled = {r.hex() for r, inv in net.network.invoices["satwatt"].items() if inv.state == SETTLED}
    paid_keys: list[str] = []
    mismatches: dict[str, Any] = {}
    amount_errors: list[str] = []
    for session_id, body in ledgers.items():
        paid = [i for i in body["invoices"] if i["status"] == "paid"]
        paid_keys += [i["payment_hash"] for i in paid]
        if body["mismatches"]:
            mismatches[session_id] = body["mismatches"]
        if any(i["node_state"] != "SETTLED" for i in paid):
            mismatches.setdefault(session_id, []).append("a paid invoice not SETTLED at the node")
        if body["session"].get("paid_msat") != sum(i["amount_msat"] for i in paid):
            amount_errors.append(session_id)
    duplicates = [k for k, n in Counter(paid_keys).items() if n > 1]
    credits_after = sorted(t - t_kill for t in watch.credited_at.values() if t > t_kill)
    delays_before = [
        watch.credited_at[k] - t for k, t in watch.settled_at.items() if t < t_kill and k in watch.credited_at
    ]
    settled_after = {k: t for k, t in watch.settled_at.items() if t >= t_kill}
    delays_after = [watch.credited_at[k] - t for k, t in settled_after.items() if k in watch.credited_at]
    first_after_settled_after = min(
        (watch.credited_at[k] - t_kill for k in settled_after if k in watch.credited_at), default=None
    )
    in_flight = [
        k for k, t in watch.settled_at.items() if t < t_kill and watch.credited_at.get(k, 1e9) > t_kill
    ]
    # sessions whose charger stayed on a surviving process: only the invoice stream (the new leader)
    # credits their payments; the old leader's chargers moved, and their new owner looks their open
    # invoices up at the node when it adopts them
    moved_sessions = {sessions[ids.index(cid)] for cid in owned_by_leader}
    first_stayed = min(
        (
            watch.credited_at[k] - t_kill
            for k in settled_after
            if k in watch.credited_at and watch.session_of.get(k) not in moved_sessions
        ),
        default=None,
    )
    orphans = sorted(node_settled - set(paid_keys))
    result = {
        "config": {
            "chargers": len(ids),
            "processes": 3,
            "cluster_lease_s": args.lease_s,
            "autopay_ms": args.autopay_ms,
            "power_w": args.power_w,
            "meter_interval_s": 1.0,
            "tariff": PAYING_TARIFF,
            "warmup_s": args.warmup,
            "after_kill_s": args.after_kill,
            "credit_seen": "GET /api/v1/sessions/{id}/invoices polled every ~50 ms per session, "
            "through live processes",
            "settle_seen": "the simnet's invoice table, in this process, every 20 ms",
        },
        "old_leader": old_leader_id,
        "new_leader": new_leader_id,
        "chargers_on_the_old_leader": len(owned_by_leader),
        "new_leader_after_s": round(t_new_leader - t_kill, 3),
        "first_credit_after_kill_s": round(credits_after[0], 3) if credits_after else None,
        "first_credit_of_an_invoice_settled_after_kill_s": (
            round(first_after_settled_after, 3) if first_after_settled_after is not None else None
        ),
        "first_credit_by_the_new_leader_s": round(first_stayed, 3) if first_stayed is not None else None,
        "first_credit_by_the_new_leader_means": "the first credit seen of an invoice settled after the kill, "
        "of a session whose charger stayed on a surviving process (credited through the invoice stream)",
        "settled_before_kill_credited_after": len(in_flight),
        "settle_to_credit_before_kill": quantiles(delays_before),
        "settle_to_credit_settled_after_kill": quantiles(delays_after),
        "settled_at_node": len(node_settled),
        "paid_in_ledgers": len(paid_keys),
        "exactly_once": {
            "duplicates": duplicates,
            "settled_not_credited": orphans,
            "settled_not_credited_in_the_database": await invoice_rows(bench.urls["payments"], orphans),
            "credited_not_settled": sorted(set(paid_keys) - node_settled),
            "ledger_mismatches": mismatches,
            "sessions_paid_msat_not_sum_of_paid": amount_errors,
            "ok": not duplicates and node_settled == set(paid_keys) and not mismatches and not amount_errors,
        },
        "sessions": len(sessions),
        "load": {
            "disconnects": load.stats.disconnects,
            "suspensions": load.stats.suspensions,
            "errors": load.stats.timeouts + sum(load.stats.call_errors.values()),
        },
    }
    print(
        f"leader killed; new leader after {result['new_leader_after_s']} s; first credit after the kill "
        f"{result['first_credit_after_kill_s']} s (of an invoice settled after it: "
        f"{result['first_credit_of_an_invoice_settled_after_kill_s']} s; through the new leader "
        f"{result['first_credit_by_the_new_leader_s']} s); settle->credit before "
        f"{result['settle_to_credit_before_kill']}, after {result['settle_to_credit_settled_after_kill']}; "
        f"{len(node_settled)} settled, {len(paid_keys)} credited; "
        f"exactly once: {result['exactly_once']['ok']}"
    )
    return result


# ------------------------------------------------------------------------------------------------- main
async def main_async(args: argparse.Namespace) -> int:
    tree = REPO
    holder = None
    if args.satwatt_rev:
        holder = tempfile.TemporaryDirectory(prefix="satwatt-cluster-tree-")
        tree = Path(holder.name)
        args.satwatt_commit = await export_revision(args.satwatt_rev, tree)
    bench = Bench(args, tree)
    parts = PARTS if "all" in args.parts else tuple(dict.fromkeys(args.parts))
    runners = {
        "throughput": part_throughput,
        "commands": part_commands,
        "failover": part_failover,
        "payments": part_payments,
    }
    status = 0
    try:
        for part in parts:
            console.rule(f"cluster bench: {part}")
            result = await runners[part](bench)
            write(bench, part, result)
            if part == "payments" and not result["exactly_once"]["ok"]:
                status = 1
    finally:
        await bench.cleanup()
        if args.keep_work:
            console.print(f"work directory kept: {bench.work}")
        if holder is not None:
            holder.cleanup()
    return status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="+", choices=(*PARTS, "all"), help="which measurements to run")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (no database): fresh databases satwatt_bench_cluster_* are created on it",
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="NATS with JetStream")
    parser.add_argument("--lease-s", type=int, default=6, help="CSMS_CLUSTER_LEASE_S (default 6, satwatt's)")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop the databases made")
    parser.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the temporary directory (servers' logs, simnet, py-spy's raw profiles)",
    )
    parser.add_argument("--satwatt-rev", metavar="REV", help="run satwatt as committed at this git revision")
    parser.add_argument("--json-dir", type=Path, default=BENCH / "results", help="where the JSON goes")
    g = parser.add_argument_group("throughput")
    g.add_argument("--chargers", type=int, default=100, help="closed-loop chargers (default 100)")
    g.add_argument("--duration", type=float, default=20.0, help="closed-loop seconds per server (default 20)")
    g.add_argument("--ramp", type=float, default=2.0, help="seconds to open the connections (default 2)")
    g.add_argument("--setup-timeout", type=float, default=60.0, help="seconds for every transaction to start")
    g.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 4], help="--workers values (default 1 2 4)"
    )
    g.add_argument("--rounds", type=int, default=1, help="rounds of every server; the median is reported")
    g.add_argument(
        "--allowance-wh",
        type=int,
        default=100_000,
        help="the default tariff's unpaid allowance (sessions keep charging unpaid; default 100000 Wh)",
    )
    g.add_argument(
        "--profile",
        action="store_true",
        help="throughput: py-spy one worker of --workers 2 and the baseline over the window; failover: the "
        "process taking the killed one's chargers over, 10 s from the kill",
    )
    g = parser.add_argument_group("commands")
    g.add_argument("--commands", type=int, default=300, help="commands through each process (default 300)")
    g.add_argument("--command-chargers", type=int, default=10, help="idle chargers on process A (default 10)")
    g = parser.add_argument_group("failover")
    g.add_argument("--fleet", type=int, default=300, help="chargers over three processes (default 300)")
    g.add_argument("--fleet-ramp", type=float, default=10.0, help="seconds to connect the fleet (default 10)")
    g.add_argument("--meter-interval", type=float, default=5.0, help="MeterValues interval, s (default 5)")
    g.add_argument("--steady", type=float, default=5.0, help="seconds of steady load before the kill")
    g.add_argument("--failover-timeout", type=float, default=120.0, help="give up waiting after this")
    g = parser.add_argument_group("payments")
    g.add_argument("--payers", type=int, default=12, help="paying sessions over three processes (default 12)")
    g.add_argument("--autopay-ms", type=int, default=200, help="car1 pays each invoice this long after it")
    g.add_argument("--power-w", type=int, default=36_000, help="charging power (default 36 kW: 10 Wh/s)")
    g.add_argument("--warmup", type=float, default=20.0, help="seconds of payments before the kill")
    g.add_argument("--after-kill", type=float, default=30.0, help="seconds of payments after the kill")
    args = parser.parse_args()
    args.satwatt_commit = None
    if args.chargers < 1 or args.duration <= 0 or args.rounds < 1 or any(w < 1 for w in args.workers):
        parser.error("--chargers, --rounds and --workers must be >= 1, --duration > 0")
    raise SystemExit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
