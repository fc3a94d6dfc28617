"""``chargepoint-sim``: run a fleet of simulated charge points, or load-test a central system."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chargepoint_sim.chargepoint import QUIRKS, ChargePoint
from chargepoint_sim.lightload import LightConfig, LightLoad, format_light_report
from chargepoint_sim.load import LoadConfig, format_report, run_load
from chargepoint_sim.load import Progress as LoadProgress
from chargepoint_sim.physics import EV_MODELS, ChargerSpec
from chargepoint_sim.scenario import (
    FleetSpec,
    Scenario,
    ScenarioError,
    Step,
    build_fleet,
    load_scenario,
    run_timeline,
)
from chargepoint_sim.shim.cli import shim as shim_command

app = typer.Typer(
    help="Simulated OCPP 1.6J / 2.0.1 charge points for satwatt (or any central system), and a load "
    "generator.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: wrapped to any width, never cut (rich's panels cut at 80)
)
console = Console()

MAX_ROWS = 40


def _check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise typer.BadParameter(
            "must be a ws:// or wss:// URL, e.g. ws://127.0.0.1:8180/ocpp", param_hint="--csms"
        )
    return url


def _state_style(state: str) -> str:
    return {
        "accepted": "green",
        "pending": "yellow",
        "rejected": "red",
        "refused": "bold red",
        "offline": "magenta",
    }.get(state, "dim")


def _status_style(status: str) -> str:
    return {
        "Charging": "bold green",
        "Available": "dim",
        "Preparing": "cyan",
        "SuspendedEVSE": "yellow",
        "SuspendedEV": "yellow",
        "Finishing": "blue",
        "Faulted": "red",
        "Unavailable": "red",
    }.get(status, "")


def render_table(cps: list[ChargePoint], title: str, events: list[str]) -> Group:
    table = Table(title=title, expand=False, header_style="bold")
    for col, justify in [
        ("charger", "left"),
        ("protocol", "left"),
        ("connection", "left"),
        ("conn", "right"),
        ("status", "left"),
        ("kW", "right"),
        ("kWh (session)", "right"),
        ("SoC %", "right"),
        ("limit kW", "right"),
        ("transaction", "left"),
        ("queued", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    rows = 0
    total_kw = 0.0
    charging = 0
    online = 0
    for cp in cps:
        snap = cp.snapshot()
        online += snap["online"]
        for c in snap["connectors"]:
            total_kw += c["power_kw"]
            charging += c["status"] == "Charging"
            if rows >= MAX_ROWS:
                continue
            rows += 1
            state = snap["state"]
            table.add_row(
                snap["id"],
                snap["protocol"],
                f"[{_state_style(state)}]{state}[/]",
                str(c["id"]),
                f"[{_status_style(c['status'])}]{c['status']}[/]",
                f"{c['power_kw']:.1f}",
                f"{c['energy_kwh']:.3f}"
                + (f" ({c['session_kwh']:.3f})" if c["session_kwh"] is not None else ""),
                "" if c["soc"] is None else f"{c['soc']:.0f}",
                "" if c["limit_w"] is None else f"{c['limit_w'] / 1000:.1f}",
                (c["transaction"] or "")[:13],
                str(snap["queued"] or ""),
            )
    footer = f"{online}/{len(cps)} online · {charging} charging · {total_kw:.1f} kW total" + (
        f" · showing {MAX_ROWS} of {sum(len(cp.connectors) for cp in cps)} connectors"
        if rows >= MAX_ROWS
        else ""
    )
    parts: list[Any] = [table, footer]
    if events:
        parts.append("\n".join(events[-6:]))
    return Group(*parts)


def _fleet_from_options(
    chargers: int,
    protocol: str,
    connectors: int,
    password: str | None,
    id_pattern: str,
    power_kw: float,
    dc: bool,
    meter_interval: float,
    faults: dict[str, Any],
) -> FleetSpec:
    if protocol not in ("1.6", "2.0.1", "mixed"):
        raise typer.BadParameter("must be 1.6, 2.0.1 or mixed", param_hint="--protocol")
    try:
        id_pattern.format(n=1)
    except (KeyError, IndexError, ValueError) as e:
        raise typer.BadParameter(
            f"must be a format string using {{n}}: {e}", param_hint="--id-pattern"
        ) from None
    if chargers > 1 and id_pattern.format(n=1) == id_pattern.format(n=2):
        raise typer.BadParameter("must contain {n} when --chargers > 1", param_hint="--id-pattern")
    try:
        charger = ChargerSpec.dc(power_kw) if dc else ChargerSpec.ac(power_kw)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--power-kw") from None
    return FleetSpec(
        id_pattern=id_pattern,
        count=chargers,
        protocol=protocol,
        connectors=connectors,
        charger=charger,
        password=password,
        meter_interval=meter_interval,
        faults=faults,
    )


@app.command()
def run(
    csms: Annotated[
        str | None,
        typer.Option(help="Central system OCPP-J URL without the charger id, e.g. ws://127.0.0.1:8180/ocpp."),
    ] = None,
    chargers: Annotated[
        int, typer.Option(min=1, help="Number of charge points (ignored with --scenario).")
    ] = 1,
    protocol: Annotated[str, typer.Option(help="OCPP version: 1.6, 2.0.1 or mixed (alternating).")] = "2.0.1",
    connectors: Annotated[int, typer.Option(min=1, max=32, help="Connectors (EVSEs) per charge point.")] = 1,
    password: Annotated[
        str | None, typer.Option(help="HTTP Basic password of every charger (the user is the charger id).")
    ] = None,
    id_pattern: Annotated[str, typer.Option(help="Charger id pattern; {n} counts from 1.")] = "SIM-{n:04d}",
    scenario: Annotated[
        Path | None,
        typer.Option(help="Scenario file (YAML or TOML) with fleets and a timeline.", exists=True),
    ] = None,
    power_kw: Annotated[
        float, typer.Option(help="Connector rating in kW (AC up to 22, DC up to 350).")
    ] = 22.0,
    dc: Annotated[bool, typer.Option("--dc", help="DC fast chargers instead of AC.")] = False,
    meter_interval: Annotated[
        float, typer.Option(help="Initial meter value interval in s (the central system may change it).")
    ] = 60.0,
    auto_charge: Annotated[
        bool,
        typer.Option("--auto-charge", help="Plug an EV into every connector and swipe --id-tag at start."),
    ] = False,
    id_tag: Annotated[str, typer.Option(help="Id tag used by --auto-charge.")] = "SIM-TAG",
    ev: Annotated[str, typer.Option(help=f"EV model for --auto-charge: {', '.join(EV_MODELS)}.")] = "sedan",
    clock_scale: Annotated[
        float,
        typer.Option(min=0.001, help="Simulated seconds per real second (physics, timers, timestamps)."),
    ] = 1.0,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds (0: run until Ctrl-C).")
    ] = 0,
    quirk: Annotated[
        list[str] | None, typer.Option(help=f"Lenient-charger quirk (repeatable): {', '.join(QUIRKS)}.")
    ] = None,
    reject_profiles: Annotated[
        bool, typer.Option("--reject-profiles", help="Reject every SetChargingProfile.")
    ] = False,
    duplicate_sends: Annotated[
        bool, typer.Option("--duplicate-sends", help="Send every CALL twice with the same unique id.")
    ] = False,
    clock_skew: Annotated[
        float, typer.Option(help="Offset the chargers' clocks by this many seconds.")
    ] = 0.0,
    live: Annotated[bool, typer.Option(help="Show the live table (--no-live prints events only).")] = True,
    log_level: Annotated[str, typer.Option(help="Python log level for the simulator's own log.")] = "WARNING",
) -> None:
    """Connect charge points to a central system and keep them running until Ctrl-C, with a live table."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for q in quirk or []:
        if q not in QUIRKS:
            raise typer.BadParameter(f"unknown quirk {q!r}; known: {', '.join(QUIRKS)}", param_hint="--quirk")
    if ev not in EV_MODELS:
        raise typer.BadParameter(f"unknown EV model; known: {', '.join(EV_MODELS)}", param_hint="--ev")
    if scenario is not None:
        try:
            scen = load_scenario(scenario)
        except ScenarioError as e:
            console.print(f"[red]scenario error:[/] {e}", soft_wrap=True)
            raise typer.Exit(2) from None
    else:
        faults: dict[str, Any] = {
            "reject_charging_profiles": reject_profiles,
            "duplicate_sends": duplicate_sends,
            "clock_skew_s": clock_skew,
            "quirks": set(quirk or []),
        }
        fleet = _fleet_from_options(
            chargers, protocol, connectors, password, id_pattern, power_kw, dc, meter_interval, faults
        )
        scen = Scenario(name="command line", clock_scale=clock_scale, fleets=[fleet])
    url = csms or scen.csms
    if url is None:
        raise typer.BadParameter(
            "give the central system URL (or set csms: in the scenario)", param_hint="--csms"
        )
    _check_url(url)
    if duration:
        scen.duration = duration
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_fleet(scen, url, auto_charge, id_tag, ev, live))


async def _run_fleet(scen: Scenario, url: str, auto_charge: bool, id_tag: str, ev: str, live: bool) -> None:
    cps = build_fleet(scen.fleets, url, clock_scale=scen.clock_scale)
    by_id = {cp.id: cp for cp in cps}
    events: list[str] = []

    def note(msg: str) -> None:
        events.append(msg)
        if not live:
            console.print(msg, soft_wrap=True)

    def on_step(step: Step, cid: str, err: Exception | None) -> None:
        note(f"t={step.at:>6.1f}s {cid}: {step.action}" + (f" [red]failed: {err}[/]" if err else ""))

    for cp in cps:
        await cp.start()

    async def auto(cp: ChargePoint) -> None:
        await cp.wait_online(timeout_s=3600)
        for cid in cp.connectors:
            await cp.plug_in(cid, ev, soc=0.3)
            ok = await cp.authorize(cid, id_tag)
            note(f"{cp.id}/{cid}: {id_tag} {'accepted' if ok else '[red]rejected[/]'}")

    tasks: list[asyncio.Task[Any]] = []
    if auto_charge:
        tasks += [asyncio.create_task(auto(cp)) for cp in cps]
    if scen.timeline:
        tasks.append(asyncio.create_task(run_timeline(scen, by_id, on_step)))
    title = f"chargepoint-sim · {scen.name} → {url}"
    loop = asyncio.get_running_loop()
    t_end = loop.time() + scen.duration if scen.duration else None
    refusals: dict[str, str] = {}

    def note_refusals() -> None:
        """A charger the central system refuses (401...) is said so, once per reason, in both modes."""
        for cp in cps:
            if cp.state == "refused" and cp.last_error and refusals.get(cp.id) != cp.last_error:
                refusals[cp.id] = cp.last_error
                note(f"{cp.id}: [red]{cp.last_error}[/]")

    try:
        if live:
            with Live(render_table(cps, title, events), console=console, refresh_per_second=2) as view:
                while t_end is None or loop.time() < t_end:
                    await asyncio.sleep(0.5)
                    note_refusals()
                    view.update(render_table(cps, title, events))
        else:
            while t_end is None or loop.time() < t_end:
                await asyncio.sleep(0.5 if t_end is None else max(0.0, min(0.5, t_end - loop.time())))
                note_refusals()
    except asyncio.CancelledError:
        pass
    finally:
        for t in tasks:
            t.cancel()
        console.print("stopping (ending transactions)…")
        await asyncio.gather(*(cp.stop(end_transactions=True) for cp in cps), return_exceptions=True)
        if not live:
            Console(width=max(console.width, 150)).print(render_table(cps, title, []))


@app.command()
def load(
    csms: Annotated[
        str, typer.Option(help="Central system OCPP-J URL without the charger id (the only target).")
    ],
    chargers: Annotated[
        int, typer.Option(min=1, max=100_000, help="Number of charge point connections.")
    ] = 100,
    ramp: Annotated[float, typer.Option(min=0, help="Seconds over which the connections are opened.")] = 10.0,
    duration: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds to hold the load after the ramp (closed loop / light: the measurement window, "
            "after every charger has booted and started its transaction).",
        ),
    ] = 30.0,
    meter_interval: Annotated[
        float, typer.Option(min=0.1, help="Meter value interval per transaction, s.")
    ] = 10.0,
    protocol: Annotated[
        str | None,
        typer.Option(help="1.6, 2.0.1 or mixed (alternating); default mixed, and 1.6 for the light client."),
    ] = None,
    password: Annotated[str | None, typer.Option(help="HTTP Basic password of every charger.")] = None,
    id_pattern: Annotated[str, typer.Option(help="Charger id pattern; {n} counts from 1.")] = "LOAD-{n:05d}",
    id_tag: Annotated[
        str, typer.Option(help="Id tag every charger authorises (must be accepted by the central system).")
    ] = "LOAD-TAG",
    call_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for each CALL's answer.")
    ] = 30.0,
    follow_csms_interval: Annotated[
        bool,
        typer.Option(
            "--follow-csms-interval",
            help="Accept the central system's meter interval instead of rejecting changes to "
            "--meter-interval.",
        ),
    ] = False,
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop",
            help="Closed loop (light client, 1.6): every charger boots, starts a transaction, then sends "
            "MeterValues back to back (the next as soon as the previous is answered) for --duration; "
            "reports MeterValues answered per second and their latency.",
        ),
    ] = False,
    light: Annotated[
        bool,
        typer.Option(
            "--light",
            help="Use the light client (1.6, one task per charger, small memory) for the interval load "
            "too: for thousands of chargers from one process.",
        ),
    ] = False,
    power: Annotated[
        int,
        typer.Option(
            min=0, max=1_000_000, help="Light client: simulated power in W (the register's growth)."
        ),
    ] = 11_000,
    setup_timeout: Annotated[
        float,
        typer.Option(
            min=1, help="Light client: seconds after the ramp to wait for every transaction to start."
        ),
    ] = 120.0,
    end_transactions: Annotated[
        bool, typer.Option(help="Light client: send StopTransaction for open transactions at the end.")
    ] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Ramp up many charge points with transactions and meter values; report throughput and latency."""
    _check_url(csms)
    report: dict[str, Any]
    if closed_loop or light:
        if protocol not in (None, "1.6"):
            raise typer.BadParameter("--closed-loop and --light speak 1.6 only")
        try:
            light_cfg = LightConfig(
                csms_url=csms,
                chargers=chargers,
                closed_loop=closed_loop,
                duration_s=duration,
                ramp_s=ramp,
                setup_timeout_s=setup_timeout,
                meter_interval_s=meter_interval,
                password=password,
                id_pattern=id_pattern,
                id_tag=id_tag,
                power_w=power,
                call_timeout_s=call_timeout,
                end_transactions=end_transactions,
            )
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        logging.basicConfig(level="ERROR")
        report = asyncio.run(_light(light_cfg, progress))
        console.print(format_light_report(report), highlight=False)
    else:
        try:
            cfg = LoadConfig(
                csms_url=csms,
                chargers=chargers,
                ramp_s=ramp,
                duration_s=duration,
                meter_interval_s=meter_interval,
                protocol=protocol or "mixed",
                password=password,
                id_pattern=id_pattern,
                id_tag=id_tag,
                call_timeout_s=call_timeout,
                follow_csms_interval=follow_csms_interval,
            )
            id_pattern.format(n=1)
        except (ValueError, KeyError, IndexError) as e:
            raise typer.BadParameter(str(e)) from None
        logging.basicConfig(level="ERROR")
        report = asyncio.run(_load(cfg, progress))
        console.print(format_report(report), highlight=False)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_path}")


async def _load(cfg: LoadConfig, show: bool) -> dict[str, Any]:
    if not show:
        return await run_load(cfg)
    bar = Progress(
        TextColumn("[bold]{task.fields[phase]:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("online · {task.fields[charging]} charging"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task("load", total=cfg.chargers, phase="ramp", charging=0)

    def on_progress(p: LoadProgress) -> None:
        if p.phase != "done":
            bar.update(task, completed=p.online, phase=p.phase, charging=p.charging)

    with bar:
        return await run_load(cfg, on_progress)


async def _light(cfg: LightConfig, show: bool) -> dict[str, Any]:
    fleet = LightLoad(cfg)
    if not show:
        return await fleet.run()
    bar = Progress(
        TextColumn("[bold]{task.fields[phase]:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("online · {task.fields[charging]} charging"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("load", total=cfg.chargers, phase="setup", charging=0)

    def on_progress(phase: str, f: LightLoad) -> None:
        bar.update(task, completed=f.online(), phase=phase, charging=f.charging())

    with bar:
        return await fleet.run(on_progress)


app.command(name="shim")(shim_command)  # the firmware shim on a charger's node board


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
