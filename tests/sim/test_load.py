"""The load generator against the test central system, and the CLI end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from chargepoint_sim.cli import app
from chargepoint_sim.load import LoadConfig, percentile, run_load
from tests.sim.csms_double import CsmsDouble


def test_percentile() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50 and percentile(xs, 99) == 99 and percentile(xs, 100) == 100
    assert percentile([], 50) == 0.0 and percentile([3.0], 95) == 3.0


async def test_load_report(csms: CsmsDouble) -> None:
    cfg = LoadConfig(csms_url=csms.url, chargers=6, ramp_s=0.5, duration_s=1.5, meter_interval_s=0.25)
    report = await run_load(cfg)
    c = report["connections"]
    assert c["target"] == 6 and c["held_at_end"] == 6 and c["peak"] == 6
    assert c["connect_failures"] == 0 and c["disconnects"] == 0
    assert report["transactions"]["started"] == 6
    assert report["calls"]["timeouts"] == 0 and report["errors"] == 0
    lat = report["calls"]["latency"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert report["messages"]["steady_per_second"] > 6 * 2  # ~4 samples/s per charger, 2 frames each
    assert {"MeterValues", "TransactionEvent", "BootNotification"} <= set(report["calls"]["by_action"])
    assert report["elapsed_s"] < 2.0 + 5
    # only the given URL was contacted: every charger the double saw is one of ours
    assert set(csms.connections) == {f"LOAD-{n:05d}" for n in range(1, 7)}


async def test_load_survives_dropped_connections(csms: CsmsDouble) -> None:
    cfg = LoadConfig(csms_url=csms.url, chargers=4, ramp_s=0.2, duration_s=2.5, meter_interval_s=0.25)
    task = asyncio.create_task(run_load(cfg))
    await csms.wait_for(lambda: len(csms.cps) == 4, 5)
    await csms.wait_count("TransactionEvent", 4)
    for cp in list(csms.cps.values()):
        await cp._connection.close()  # the central system drops everyone
    report = await task
    assert report["connections"]["disconnects"] >= 4
    assert report["connections"]["held_at_end"] == 4  # all came back
    assert report["transactions"]["started"] >= 4


def test_cli_load_json(csms_thread_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        [
            "load",
            "--csms",
            csms_thread_url,
            "--chargers",
            "3",
            "--ramp",
            "0.3",
            "--duration",
            "1",
            "--meter-interval",
            "0.5",
            "--json",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "connections held      3 / 3" in result.output
    report = json.loads(out.read_text())
    assert report["connections"]["held_at_end"] == 3 and report["transactions"]["started"] == 3


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["load", "--csms", "http://example.com"])
    assert r.exit_code != 0 and "ws://" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleets: []\n")
    r = CliRunner().invoke(app, ["run", "--csms", "ws://127.0.0.1:1/ocpp", "--scenario", str(bad)])
    assert r.exit_code == 2 and "fleets: is required" in r.output
    r = CliRunner().invoke(app, ["run", "--csms", "ws://127.0.0.1:1/ocpp", "--protocol", "3"])
    assert r.exit_code != 0


def test_cli_run_for_a_while(csms_thread_url: str) -> None:
    r = CliRunner().invoke(
        app,
        [
            "run",
            "--csms",
            csms_thread_url,
            "--chargers",
            "2",
            "--protocol",
            "mixed",
            "--auto-charge",
            "--duration",
            "1.5",
            "--no-live",
            "--clock-scale",
            "60",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "SIM-0001/1: SIM-TAG accepted" in r.output and "SIM-0002/1: SIM-TAG accepted" in r.output
    assert r.output.count("Finishing") == 2  # transactions were ended on the way out, EVs still plugged
