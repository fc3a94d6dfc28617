"""``chargepoint-sim shim``: run the firmware shim on the board, or ``--check`` what it would read."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from chargepoint_sim.shim.config import ConfigError, ShimConfig, load_config

console = Console(stderr=True)


def _setup_logging(level: str) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:  # systemd's journal adds its own time stamps
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own errors are reported as ours


def shim(
    config: Annotated[
        Path,
        typer.Option("--config", help="The shim's TOML configuration (see deploy/shim/shim.example.toml)."),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Read each meter once and show what was found; switches nothing, sends nothing."
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level: DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the firmware shim: a real meter and relay (or EVSE) behind an OCPP 1.6J / 2.0.1 charge point."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("one of DEBUG, INFO, WARNING, ERROR", param_hint="--log-level")
    try:
        cfg = load_config(config)
    except ConfigError as e:
        console.print(f"[red]configuration error[/] in {config}: {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    _setup_logging(log_level)
    if check:
        ok = asyncio.run(_check(cfg))
        raise typer.Exit(0 if ok else 1)
    raise typer.Exit(asyncio.run(_run(cfg)))


async def _run(cfg: ShimConfig) -> int:
    from chargepoint_sim.shim.runner import Shim, StartupError

    shim = Shim(cfg, firmware=f"satwatt-shim {_version()}")
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, shim.request_stop, "Reboot")
    loop.add_signal_handler(signal.SIGINT, shim.request_stop, "Local")
    console.print(
        f"[bold]satwatt shim[/] {cfg.charge_point.id}: OCPP {cfg.charge_point.protocol} to "
        f"{cfg.charge_point.csms_url}, {len(cfg.connectors)} connector(s), queue {cfg.offline.queue}"
    )
    try:
        return await shim.run()
    except StartupError as e:
        console.print(f"[red]cannot start:[/] {e}", soft_wrap=True)
        return 2


async def _check(cfg: ShimConfig) -> bool:
    from chargepoint_sim.shim.check import check_board

    results = await check_board(cfg)
    out = Console()
    for r in results:
        table = Table(
            title=f"{cfg.charge_point.id} connector {r.connector_id}", show_header=False, title_justify="left"
        )
        table.add_column(style="bold")
        table.add_column()
        for name, value in (
            ("meter", r.meter),
            ("energy", r.energy),
            ("power", r.power),
            ("voltage", r.voltage),
            ("current", r.current),
            ("relay", r.relay),
            ("car", r.car),
            ("EVSE limit", r.evse),
        ):
            table.add_row(name, value)
        out.print(table)
    bad = [r for r in results if not r.ok]
    for r in bad:
        console.print(f"[red]connector {r.connector_id}:[/] {r.error}", soft_wrap=True)
    if not bad:
        console.print("[green]every meter answered[/]; nothing was switched")
    return not bad


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("satwatt")
    except PackageNotFoundError:
        return "dev"
