"""Settlement at fleet scale (issue 7, goal 5), figures read from satwatt's own /metrics.

    .venv/bin/python bench/settlement_fleet.py                     # 1,000 chargers, both phases, 30 s each
    .venv/bin/python bench/settlement_fleet.py --chargers 200 --duration 20 --phases flow
    .venv/bin/python bench/settlement_fleet.py --profile 15         # + a py-spy profile of each window

Each phase starts `csms serve` (SQLite in a fresh directory, the embedded simnet whose car1 pays every
invoice CSMS_SIMNET_AUTOPAY_MS after its creation), registers --chargers chargers (no passwords) and a
payer owning their id tag, so every session is sold to the payer, sets the default tariff, and opens the
light load client (OCPP 1.6, one process): every charger boots, starts a transaction and sends
MeterValues every --meter-interval seconds at --power-w.

* ``flow``: payments keep up (auto-pay after --autopay-ms, default 50 ms); a small increment
  (--increment-wh, default 5 Wh) and no minimum invoice interval, so each session needs an invoice every
  increment_wh * 3600 / power seconds (0.5 s at 36 kW), decided by a meter sample, a payment or a
  settlement tick (CSMS_SETTLEMENT_TICK_MS, --tick-ms) projecting the energy drawn since the last sample.
  The allowance is large, so nobody is cut: the invoice rate is what the server sustains.
* ``lag``: payments lag (auto-pay after --lag-autopay-ms, default 2,000 ms) behind an allowance of
  --lag-allowance-wh (default 5 Wh) and no grace: each session is cut (SetChargingProfile limit 0) while
  its invoice is in flight and resumed (ClearChargingProfile) when it is paid, again and again, with
  every charger's session open.

Over each measurement window (--duration s, after every charger is charging) satwatt's /metrics is read
at both ends: invoices issued and settled per second from its counters, p50/p99 of
satwatt_invoice_request_seconds (per fact) and satwatt_resume_seconds from the bucket counts (linear
within a bucket, as Prometheus' histogram_quantile), satwatt's CPU (utime+stime of the `csms serve`
process, which holds the simnet too) per invoice settled, and the load client's MeterValues latency.
--profile S records S seconds of the window with py-spy (`pip install py-spy` into the venv; not a
project dependency) and prints where the time went (own time and cumulative time per function).

Results go to bench/results/settlement-fleet-<N>-<date>.json (or --json). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from satwatt_server import (  # noqa: E402  (beside this script)
    SatwattServer,
    create_payer,
    free_port,
    operator,
    patch_default_tariff,
    register_chargers,
    session_summary,
)

from chargepoint_sim.lightload import LightConfig, LightLoad  # noqa: E402
from chargepoint_sim.load import latency_summary  # noqa: E402

ID_TAG = "SETTLE-TAG-1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def scrape(client: httpx.AsyncClient) -> Samples:
    reply = await client.get("/metrics")
    reply.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def counter(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def buckets(samples: Samples, name: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of a histogram, summed over labels not matched."""
    out: Counter[float] = Counter()
    for (n, labels), value in samples.items():
        if n != f"{name}_bucket":
            continue
        label = dict(labels)
        if any(label.get(k) != v for k, v in match.items()):
            continue
        out[float(label["le"])] += value
    return dict(out)


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """histogram_quantile: linear interpolation inside the bucket holding the q-th observation."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all that is known
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return None


def histogram_window(before: Samples, after: Samples, name: str, **match: str) -> dict[str, Any]:
    b0, b1 = buckets(before, name, **match), buckets(after, name, **match)
    delta = {bound: b1[bound] - b0.get(bound, 0.0) for bound in b1}
    count = delta.get(math.inf, 0.0)

    def ms(q: float) -> float | None:
        value = quantile(q, delta)
        return None if value is None else round(value * 1000, 2)

    over = {
        f"over_{int(limit * 1000)}ms": round(1 - delta.get(limit, 0.0) / count, 4) if count else None
        for limit in (0.02, 0.05)
    }
    return {"count": int(count), "p50_ms": ms(0.5), "p99_ms": ms(0.99), **over}


async def profile(pid: int, seconds: int, out: Path) -> dict[str, Any]:
    """py-spy record (raw collapsed stacks) of the server for ``seconds``; the top functions."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    proc = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
        "--format", "raw", "--output", str(out), "--nonblocking", "--threads",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace")[-500:]}
    return await asyncio.to_thread(summarize_profile, out)


def summarize_profile(out: Path) -> dict[str, Any]:
    """Own (leaf) and cumulative shares of the non-idle samples, per function (py-spy's raw format: one
    stack per line, frames separated by ';', the first one the thread, then a count)."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            cumulative[frame] += count
    return {
        "samples_not_idle": total,
        "file": str(out),
        "by_thread": threads.most_common(8),
        "top_own": [(f, round(c / total, 3)) for f, c in own.most_common(25)],
        "top_cumulative": [(f, round(c / total, 3)) for f, c in cumulative.most_common(40)],
    }


async def phase(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    lag = name == "lag"
    autopay = args.lag_autopay_ms if lag else args.autopay_ms
    tariff = {
        "increment_wh": args.increment_wh,
        "min_invoice_interval_s": 0,
        "allowance_wh": args.lag_allowance_wh if lag else 100_000,
        "grace_s": 0 if lag else 3600,
        "stop_after_s": 3600,
        "session_fee_msat": 0,
    }
    env = {
        "CSMS_SIMNET_AUTOPAY_MS": str(autopay),
        "CSMS_SETTLEMENT_TICK_MS": str(args.tick_ms),
        "CSMS_REQUIRE_CHARGER_PASSWORD": "false",
        "CSMS_MAX_PENDING_CONNECTIONS_PER_ADDRESS": "0",
    }
    server = SatwattServer(tmp / f"data-{name}", free_port(), env_extra=env)
    result: dict[str, Any] = {"autopay_ms": autopay, "tariff": tariff, "server_env": env}
    await server.start()
    try:
        async with operator(server.http) as client:
            ids = [f"SETTLE-{i:05d}" for i in range(1, args.chargers + 1)]
            t = time.perf_counter()
            await register_chargers(client, ids, None, 8)
            log(f"{name}: registered {args.chargers} chargers in {time.perf_counter() - t:.1f} s")
            await create_payer(client, [ID_TAG])
            result["tariff"] = await patch_default_tariff(client, **tariff)
            cfg = LightConfig(
                csms_url=server.ocpp,
                chargers=args.chargers,
                closed_loop=False,
                meter_interval_s=args.meter_interval,
                duration_s=args.duration,
                ramp_s=args.ramp,
                setup_timeout_s=args.setup_timeout,
                id_pattern="SETTLE-{n:05d}",
                id_tag=ID_TAG,
                power_w=args.power_w,
                call_timeout_s=60,
                end_transactions=False,
            )
            load = LightLoad(cfg)
            stats = load.stats
            ramp = asyncio.create_task(load.start())
            try:
                ready = await load.wait_ready(args.ramp + args.setup_timeout)
                await ramp
                log(f"{name}: {load.charging()} of {args.chargers} charging (all: {ready}); settling in")
                await asyncio.sleep(args.settle_in)
                before, cpu0, w0 = await scrape(client), cpu_s(server.pid), stats.now()
                suspensions0 = stats.suspensions
                spy = None
                if args.profile:
                    out = Path(tempfile.gettempdir()) / f"settlement-fleet-{name}-{os.getpid()}.txt"
                    spy = asyncio.create_task(profile(server.pid, args.profile, out))
                await asyncio.sleep(args.duration)
                after, cpu1, w1 = await scrape(client), cpu_s(server.pid), stats.now()
                window = w1 - w0
                issued = counter(after, "satwatt_invoices_issued_total") - counter(
                    before, "satwatt_invoices_issued_total"
                )
                settled = counter(after, "satwatt_invoices_settled_total") - counter(
                    before, "satwatt_invoices_settled_total"
                )
                cpu = cpu1 - cpu0
                meter = stats.window(w0, w1)
                result["window"] = {
                    "seconds": round(window, 1),
                    "charging_at_end": load.charging(),
                    "open_settlements": int(counter(after, "satwatt_open_settlements")),
                    "invoices_issued": int(issued),
                    "invoices_settled": int(settled),
                    "issued_per_s": round(issued / window, 1),
                    "settled_per_s": round(settled / window, 1),
                    "server_cpu_s": round(cpu, 2),
                    "server_cpu_share_of_one_core": round(cpu / window, 2),
                    "server_cpu_ms_per_invoice_settled": round(1000 * cpu / settled, 2) if settled else None,
                    "invoice_request": histogram_window(before, after, "satwatt_invoice_request_seconds"),
                    "invoice_request_by_fact": {
                        fact: histogram_window(before, after, "satwatt_invoice_request_seconds", fact=fact)
                        for fact in ("started", "meter", "tick", "payment")
                    },
                    "resume": histogram_window(before, after, "satwatt_resume_seconds"),
                    "suspensions_seen_by_chargers": stats.suspensions - suspensions0,
                    "meter_values_per_s": round(len(meter) / window, 1),
                    "meter_values_latency": latency_summary(meter),
                    "disconnects": stats.disconnects,
                    "timeouts": stats.timeouts,
                }
                if spy is not None:
                    result["profile"] = await spy
                log(f"{name}: {json.dumps(result['window'])}")
                result["sessions"] = await session_summary(client)
            finally:
                if not ramp.done():
                    ramp.cancel()
                await load.stop()
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        await server.stop()
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "settlement-fleet",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            k: getattr(args, k)
            for k in (
                "chargers",
                "meter_interval",
                "power_w",
                "increment_wh",
                "tick_ms",
                "autopay_ms",
                "lag_autopay_ms",
                "lag_allowance_wh",
                "duration",
                "ramp",
                "settle_in",
            )
        },
        "goals": {"invoices_per_s": 500, "resume_p99_ms": 50, "invoice_request_p99_ms": 20},
    }
    with tempfile.TemporaryDirectory(prefix="satwatt-settlement-fleet-") as tmp:
        for name in args.phases.split(","):
            result[name] = await phase(name, args, Path(tmp))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chargers", type=int, default=1000, help="chargers, one open session each")
    parser.add_argument("--meter-interval", type=float, default=2.0, help="seconds between MeterValues")
    parser.add_argument("--power-w", type=int, default=36_000, help="each charger's power (W)")
    parser.add_argument("--increment-wh", type=int, default=5, help="the tariff's increment (Wh per invoice)")
    parser.add_argument("--tick-ms", type=int, default=200, help="CSMS_SETTLEMENT_TICK_MS")
    parser.add_argument("--autopay-ms", type=int, default=50, help="flow phase: auto-pay delay (ms)")
    parser.add_argument("--lag-autopay-ms", type=int, default=2000, help="lag phase: auto-pay delay (ms)")
    parser.add_argument("--lag-allowance-wh", type=int, default=5, help="lag phase: the tariff's allowance")
    parser.add_argument("--phases", default="flow,lag", help="comma-separated: flow, lag")
    parser.add_argument("--duration", type=float, default=30.0, help="measurement window per phase (s)")
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds over which chargers connect")
    parser.add_argument("--setup-timeout", type=float, default=180.0, help="after the ramp (s)")
    parser.add_argument("--settle-in", type=float, default=5.0, help="seconds between setup and window")
    parser.add_argument("--profile", type=int, default=0, help="py-spy seconds within each window (0: off)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    if not set(args.phases.split(",")) <= {"flow", "lag"}:
        parser.error("--phases: flow and/or lag")
    result = asyncio.run(run(args))
    out = (
        args.json or BENCH / "results" / f"settlement-fleet-{args.chargers}-{datetime.now(UTC):%Y-%m-%d}.json"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v.get("window") if isinstance(v, dict) else v for k, v in result.items()}, indent=2))
    log(f"written to {out}")


if __name__ == "__main__":
    main()
