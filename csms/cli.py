"""The ``csms`` command: serve, migrate, api-key, openapi, demo."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from rich.console import Console

from csms import __version__, lnurl
from csms.server_config import uvicorn_config
from csms.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from csms.security import ApiKey

cli = typer.Typer(
    help="satwatt: an OCPP 1.6J / 2.0.1 central system that sells electricity for sats.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: wrapped to any width, never cut (rich's panels cut at 80)
)
console = Console(stderr=True, soft_wrap=True)
OPENAPI_PATH = Path("openapi/openapi.json")
# gRPC's C core prints INFO lines (e.g. GOAWAY when the simnet stops) unless told otherwise
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[bold red]satwatt cannot start:[/] {exc}")
        raise typer.Exit(2) from None


def _configure_logging(level: str) -> None:
    """Plain, timestamped log lines on stderr: cheap on the hot path and friendly to log collectors."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


def redact_url(url: str) -> str:
    """A database URL without its password, fit for a log line."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


class _Server(uvicorn.Server):
    """uvicorn's server, printing where to point chargers once the port is really open."""

    banner: list[str]
    quiet = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not self.servers or self.quiet:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        settings: Settings = self.config.app.state.settings  # type: ignore[attr-defined]
        scheme = "wss" if settings.tls_cert else "ws"
        http = "https" if settings.tls_cert else "http"
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        base = settings.public_url.rstrip("/") if settings.public_url else f"{http}://{shown}:{port}"
        ws_base = (
            base.replace("https://", "wss://").replace("http://", "ws://")
            if settings.public_url
            else (f"{scheme}://{shown}:{port}")
        )
        console.print(f"\n[bold green]satwatt {__version__}[/] is running")
        console.print(f"  Point chargers at  [bold]{ws_base}/ocpp/<charge-point-id>[/]  (OCPP 2.0.1 or 1.6J)")
        console.print(f"  REST API           {base}/api/v1   (interactive docs: {base}/docs)")
        console.print(f"  Health             {base}/healthz")
        console.print(f"  Dashboard          {base}/dashboard   (log in with the operator API key)")
        console.print(
            f"  Driver pages       {base}/c/<charge-point-id>/<connector>   (the stickers: csms stickers; "
            "phone wallets pay by LNURL)"
        )
        refusal = lnurl.wallet_refusal(base)
        if refusal is not None:
            console.print(
                f"  [yellow]LNURL:[/] {refusal}; for phones, set CSMS_PUBLIC_URL to the https address of "
                "a TLS proxy in front of satwatt (or set CSMS_TLS_CERT)"
            )
        for line in [*self.banner, *self.config.app.state.banner]:  # type: ignore[attr-defined]
            console.print(line)
        console.print("  Stop with Ctrl-C\n")


@cli.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default CSMS_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default CSMS_PORT or 8180).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Processes serving the port on this machine, each a member of the cluster (needs cluster "
            "mode: CSMS_NATS_URL, PostgreSQL and a shared Lightning node).",
        ),
    ] = 1,
    reuse_port: Annotated[
        bool, typer.Option(hidden=True, help="Bind with SO_REUSEPORT (each --workers process does).")
    ] = False,
    worker_index: Annotated[int, typer.Option(hidden=True, help="Which of --workers this is.")] = 0,
) -> None:
    """Run the central system: the OCPP websocket, the REST API and /healthz in one server."""
    from csms.app import create_app

    settings = _settings(host=host, port=port)
    _configure_logging(settings.log_level)
    if workers > 1:
        raise typer.Exit(_supervise(settings, workers))
    api_key, new_key = _api_key(settings)
    app = create_app(settings, api_key)
    banner = [
        f"  Database           {redact_url(settings.resolved_database_url)}",
        f"  Data directory     {settings.data_dir.resolve()}",
        "  Unknown chargers   "
        + (
            "accepted"
            if settings.allow_unknown_chargers
            else "refused (register them: POST /api/v1/chargers)"
        ),
        "  Charger passwords  "
        + (
            "required (CSMS_REQUIRE_CHARGER_PASSWORD): registered chargers without one are refused"
            if settings.require_charger_password
            else "[bold yellow]optional[/] (CSMS_REQUIRE_CHARGER_PASSWORD=false): registered chargers "
            "without one connect with no credentials"
        ),
        "  Client certs       "
        + (
            f"checked against {settings.tls_client_ca} (OCPP security profile 3; CN = charger id"
            + ("; required)" if settings.require_charger_certificate else "; or a password)")
            if settings.tls_client_ca
            else "not used (set CSMS_TLS_CLIENT_CA for OCPP security profile 3)"
        ),
    ]
    if new_key is not None:
        banner.append(f"  [bold yellow]Operator API key (shown once, keep it):[/] {new_key}")
        banner.append("     use it as: Authorization: Bearer <key>; a new one: csms api-key --rotate")
    elif settings.api_key is None:
        banner.append(
            "  Operator API key   stored in the data directory (csms api-key --rotate for a new one)"
        )
    config = uvicorn_config(app, settings)
    server = _Server(config)
    server.banner = banner
    server.quiet = worker_index > 0  # one banner for all the workers
    server.run(sockets=[_reuse_port_socket(settings)] if reuse_port else None)
    if not server.started:
        raise typer.Exit(1)


def _supervise(settings: Settings, workers: int) -> int:
    """``serve --workers N``: check the set-up, create the API key and migrate once, run the workers."""
    from csms.cluster.workers import Supervisor
    from csms.db.migrate import upgrade_to_head

    if not settings.cluster_mode:
        console.print(
            "[bold red]satwatt cannot start:[/] --workers needs cluster mode: set CSMS_NATS_URL (with "
            "PostgreSQL in CSMS_DATABASE_URL and CSMS_LIGHTNING_BACKEND=lnd); see the README's "
            "'Several processes' section"
        )
        return 2
    if settings.port == 0:
        console.print("[bold red]satwatt cannot start:[/] --workers needs a fixed port (CSMS_PORT or --port)")
        return 2
    _, new_key = _api_key(settings)
    if new_key is not None:
        console.print(f"[bold yellow]Operator API key (shown once, keep it):[/] {new_key}")
    if settings.should_auto_migrate:
        upgrade_to_head(settings.resolved_database_url)
    return Supervisor(settings, workers).run()


def _api_key(settings: Settings) -> tuple[ApiKey, str | None]:
    """The operator API key (configured, stored, or generated now: then also the new plain key)."""
    from csms.security import load_or_create_api_key

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        configured = settings.api_key.get_secret_value() if settings.api_key else None
        return load_or_create_api_key(settings.data_dir, configured)
    except (OSError, ValueError) as exc:
        console.print(f"[bold red]satwatt cannot start:[/] CSMS_DATA_DIR ({settings.data_dir}): {exc}")
        raise typer.Exit(2) from None


def _reuse_port_socket(settings: Settings) -> socket.socket:
    """The listening socket of one of several processes sharing a port (the kernel spreads connections)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        console.print(
            f"[bold red]satwatt cannot start:[/] cannot listen on {settings.host}:{settings.port}: {exc}"
        )
        raise typer.Exit(1) from None
    return sock


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (CSMS_DATABASE_URL) to the newest revision."""
    from csms.db.migrate import head_revision, upgrade_to_head

    settings = _settings()
    _configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        upgrade_to_head(settings.resolved_database_url)
    except Exception as exc:
        console.print(f"[bold red]migration failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    console.print(f"database {_redacted(settings)} is at revision {head_revision()}")


def _redacted(settings: Settings) -> str:
    return redact_url(settings.resolved_database_url)


@cli.command("api-key")
def api_key(
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate", help="Make a new key; the old one stops working at once, also in a running satwatt."
        ),
    ] = False,
) -> None:
    """Show where the operator API key lives, or make a new one with --rotate."""
    from csms.security import API_KEY_HASH_FILE, rotate_api_key

    settings = _settings()
    if settings.api_key is not None:
        console.print("The API key comes from CSMS_API_KEY; change it there.")
        return
    if not rotate:
        console.print(
            f"Only a digest of the key is kept ({settings.data_dir / API_KEY_HASH_FILE}); "
            "run `csms api-key --rotate` for a new key (a running satwatt takes it at once)."
        )
        return
    _, key = rotate_api_key(settings.data_dir)
    console.print(
        "New operator API key (shown once; a running satwatt with this data directory takes it at once, "
        "and the old key no longer works):"
    )
    print(key)


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document.")] = OPENAPI_PATH,
    check: Annotated[bool, typer.Option("--check", help="Fail if the file differs from the app.")] = False,
) -> None:
    """Write the REST API's OpenAPI document (or check it for drift with --check)."""
    document = openapi_document()
    if check:
        current = output.read_text() if output.is_file() else ""
        if current != document:
            console.print(f"[red]{output} is out of date:[/] run `csms openapi`")
            raise typer.Exit(1)
        console.print(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(document)
    console.print(f"wrote {output}")


@cli.command()
def demo(
    duration: Annotated[float, typer.Option(help="How long the demo runs, in seconds.")] = 60.0,
    chargers: Annotated[int, typer.Option(help="Simulated chargers (1.6J and 2.0.1 alternately).")] = 4,
    port: Annotated[int, typer.Option(help="Port of the demo's satwatt (0 = any free port).")] = 8180,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the demo keeps its data (default: a fresh temporary directory, removed after)."
        ),
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--no-live", help="Live table (default) or plain lines (the default without a TTY)."
        ),
    ] = None,
) -> None:
    """Show satwatt at work in a minute: simulated chargers, cars paying sats for kWh, a non-payer cut."""
    from csms.demo import DemoOptions, run_demo

    code = run_demo(
        DemoOptions(duration_s=duration, chargers=chargers, port=port, data_dir=data_dir, live=live),
        Console(soft_wrap=True),
    )
    if code:
        raise typer.Exit(code)


@cli.command()
def stickers(
    charger: Annotated[
        str | None, typer.Option("--charger", help="Only this charger (default: every registered one).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the stickers.")] = Path("stickers"),
) -> None:
    """Write a QR sticker (SVG and PNG) for each connector, pointing at its driver page, for printing."""
    import asyncio

    from csms.web.stickers import StickerError, base_url, plan, write

    settings = _settings()
    try:
        found = asyncio.run(plan(settings, charger))
    except StickerError as exc:
        console.print(f"[bold red]no stickers:[/] {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # no database yet, or not reachable
        console.print(
            f"[bold red]no stickers:[/] cannot read the database {_redacted(settings)} "
            f"({type(exc).__name__}); start satwatt once (csms serve) or run csms migrate"
        )
        raise typer.Exit(1) from None
    if not found:
        console.print("No registered charger: register one first (POST /api/v1/chargers).")
        raise typer.Exit(1)
    for path in write(found, out):
        console.print(f"wrote {path}")
    if not settings.public_url:
        console.print(
            f"[yellow]The stickers point at {base_url(settings)}:[/] set CSMS_PUBLIC_URL to the address "
            "phones reach satwatt at, and run this again."
        )
    elif (refusal := lnurl.wallet_refusal(base_url(settings))) is not None:
        console.print(
            f"[yellow]The stickers' LNURL will not work:[/] {refusal}; set CSMS_PUBLIC_URL to an https "
            "address, and run this again."
        )


def openapi_document() -> str:
    from csms.app import create_app
    from csms.security import ApiKey

    app = create_app(Settings(data_dir=Path("/nonexistent")), ApiKey.from_plain("unused"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":
    main()
