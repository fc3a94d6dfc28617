"""The ASGI application: the OCPP-J websocket, the REST API and the health endpoint in one app."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from starlette.types import Message, Receive, Scope, Send

from csms import __version__, collector, web
from csms.api import chargers, docs_pages, id_tags, ledger, payers, problems, sessions, tariffs
from csms.api import lnurl as lnurl_api
from csms.charging.plausibility import REASONS, Limits
from csms.charging.service import ChargingService
from csms.charging.session_events import SessionEventLog
from csms.cluster.link import ClusterError
from csms.cluster.shared_secret import agreed_secret
from csms.cluster.wiring import Cluster
from csms.db.engine import create_engine, create_session_factory, create_writer_engine, dispose
from csms.db.migrate import current_revision, head_revision, upgrade_to_head_async
from csms.db.writer import GroupCommitWriter
from csms.lightning_node import LightningNode, LightningStartError, open_lightning, settlement_secret
from csms.ocpp.registry import ConnectionRegistry
from csms.ocpp.server import OcppContext, ocpp_endpoint
from csms.security import ApiKey, PasswordVerifier, data_secret, load_or_create_api_key
from csms.settings import Settings
from csms.settlement.engine import SettlementEngine
from csms.settlement.refunds import RefundDesk

log = logging.getLogger("csms")
LAST_SEEN_FLUSH_S = 60


PASSWORD_CHECK_KEY_FILE = "password-check.key"


OCPP_PATH = "/ocpp/"


class SatwattApp(FastAPI):
    """The FastAPI app, with the OCPP websocket (``/ocpp/{charge point id}``) taken before FastAPI's
    routing and middleware: a charger connection needs none of them, and at a fleet's scale their cost
    per connection (a fifth of a reconnect storm's CPU) and per frame sent is worth saving."""

    def __init__(self, ocpp: OcppContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ocpp = ocpp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path = scope["path"].removeprefix(scope.get("root_path", ""))
            if path.startswith(OCPP_PATH):
                scope["app"] = self
                await ocpp_endpoint(self.ocpp, WebSocket(scope, receive, send), path[len(OCPP_PATH) :])
                return
        if scope["type"] == "lifespan":
            send = _startup_failure_in_one_line(send)
        await super().__call__(scope, receive, send)


def _startup_failure_in_one_line(send: Send) -> Send:
    """A start-up failure whose message says what to do (the port is taken, the schema is old...) is
    reported as that one line, not as the traceback Starlette sends to the server (which logs it)."""

    async def send_plainly(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            error = sys.exc_info()[1]  # Starlette sends this from the except block of the lifespan
            if isinstance(error, StartupError | LightningStartError):
                message = {"type": "lifespan.startup.failed", "message": f"satwatt cannot start: {error}"}
        await send(message)

    return send_plainly


class StartupError(Exception):
    """satwatt cannot start; the message says why and what to do."""


async def prepare_database(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if settings.should_auto_migrate:
        await upgrade_to_head_async(url)
        return
    engine = create_engine(url)
    try:
        revision = await current_revision(engine)
    finally:
        await engine.dispose()
    if revision != head_revision():
        raise StartupError(
            f"the database schema is at revision {revision or 'none'}, not {head_revision()}: "
            "run `csms migrate` (or set CSMS_AUTO_MIGRATE=true)"
        )


def create_app(settings: Settings, api_key: ApiKey | None = None) -> FastAPI:
    """Build the app. Without ``api_key`` the configured or stored key is used (generated if none)."""
    if api_key is None:
        configured = settings.api_key.get_secret_value() if settings.api_key else None
        api_key, _ = load_or_create_api_key(settings.data_dir, configured)
    engine = create_engine(settings.resolved_database_url)
    sessionmaker = create_session_factory(engine)
    writer_engine = create_writer_engine(settings.resolved_database_url)
    writer = GroupCommitWriter(writer_engine)
    service = ChargingService(
        sessionmaker,
        writer,
        accept_unknown_id_tags=settings.accept_unknown_id_tags,
        remote_start_timeout_s=settings.remote_start_timeout_s,
        plausibility=Limits(
            max_power_w=settings.max_connector_power_w,
            margin_wh=settings.meter_step_margin_wh,
            meter_max_wh=settings.meter_max_wh,
            clock_tolerance_s=settings.clock_tolerance_s,
        ),
    )
    verifier = PasswordVerifier(data_secret(settings.data_dir, PASSWORD_CHECK_KEY_FILE))
    cluster: Cluster | None = None
    registry: ConnectionRegistry
    events: SessionEventLog
    if settings.cluster_mode:
        assert settings.nats_url is not None
        cluster = Cluster(settings.nats_url, settings.cluster_name, settings.cluster_lease_s)
        registry = cluster.registry(settings.ocpp_call_timeout_s)
        events = cluster.event_log(sessionmaker)
    else:
        registry = ConnectionRegistry()
        events = SessionEventLog(sessionmaker)
    context = OcppContext(settings, service, registry, verifier)
    service.events = events

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await prepare_database(settings)
        except StartupError:
            await engine.dispose()
            await dispose(writer_engine)
            raise
        if cluster is None:
            await service.reset_connections()  # in a cluster, other processes hold connections
        else:
            try:
                await cluster.join()
            except ClusterError as exc:
                await engine.dispose()
                await dispose(writer_engine)
                raise StartupError(f"CSMS_NATS_URL: {exc}") from None
            app.state.banner.append(f"  Cluster            {cluster.describe()}")
        await writer.start()
        node: LightningNode = await open_lightning(settings)
        secret = settlement_secret(settings.data_dir)
        if cluster is not None:  # every process derives the same invoice preimages
            secret = await agreed_secret(sessionmaker, "settlement", secret)
        settlement = SettlementEngine(
            sessionmaker,
            writer,
            service,
            registry,
            node.backend,
            events,
            secret=secret,
            tick_s=settings.settlement_tick_ms / 1000,
        )
        refunds = RefundDesk(sessionmaker, writer, node.backend, events)
        app.state.lightning = node
        app.state.settlement = settlement
        app.state.refunds = refunds
        app.state.banner.extend(node.description)
        if cluster is None:
            await settlement.start()
        else:  # chargers' settlements are loaded as they are claimed; the leader follows the stream
            await settlement.start(owned_only=True, follow_payments=False)
            cluster.attach(settlement, service)
        await refunds.start()

        async def flush_last_seen() -> None:
            while True:
                await asyncio.sleep(LAST_SEEN_FLUSH_S)
                try:
                    await service.flush_last_seen(registry.last_seen())
                except Exception:
                    log.exception("saving when chargers were last seen failed")

        flusher = asyncio.create_task(flush_last_seen(), name="last-seen-flush")
        collector.settle()
        collections = asyncio.create_task(collector.run_complete_collections(), name="gc")
        try:
            yield
        finally:
            flusher.cancel()
            collections.cancel()
            collector.stop()
            await service.flush_last_seen(registry.last_seen())
            if cluster is not None:
                await cluster.leave_leadership()
            await refunds.stop()
            await settlement.stop()
            await registry.close_all()
            if cluster is not None:
                await cluster.leave()
            await writer.close()
            await node.close()
            await engine.dispose()
            await dispose(writer_engine)

    app = SatwattApp(
        context,
        title="satwatt",
        version=__version__,
        summary="OCPP central system that sells electricity for sats",
        lifespan=lifespan,
        docs_url=None,  # docs_pages serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_key = api_key
    app.state.engine = engine
    app.state.writer = writer
    app.state.service = service
    app.state.registry = registry
    app.state.verifier = verifier
    app.state.events = events
    app.state.cluster = cluster
    app.state.banner = []
    problems.install(app)
    docs_pages.install(app)
    app.include_router(chargers.router)
    app.include_router(sessions.router)
    app.include_router(ledger.router)
    app.include_router(id_tags.router)
    app.include_router(tariffs.router)
    app.include_router(payers.router)
    app.include_router(lnurl_api.router)
    web.install(app)  # the driver pages and the operator dashboard (csms/web)

    @app.get("/healthz", tags=["health"], summary="Liveness and readiness")
    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {"connected_chargers": len(registry)}
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        node: LightningNode | None = getattr(app.state, "lightning", None)
        settlement_engine: SettlementEngine | None = getattr(app.state, "settlement", None)
        if node is not None:
            health = node.backend.health
            checks["lightning"] = {
                "backend": settings.lightning_backend,
                "reachable": health.reachable,
                "invoice_stream": bool(settlement_engine and settlement_engine.stream_connected.is_set()),
                "consecutive_failures": health.consecutive_failures,
                "last_error": health.last_error,
            }
        if cluster is not None:
            checks["cluster"] = await cluster.health()
        ok = checks["database"] == "ok"
        degraded = not ok or (node is not None and not node.backend.health.reachable)
        return JSONResponse(
            {"status": "degraded" if degraded else "ok", **checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        node: LightningNode | None = getattr(app.state, "lightning", None)
        settlement_engine: SettlementEngine | None = getattr(app.state, "settlement", None)
        lines = [
            "# HELP satwatt_connected_chargers Chargers with a live OCPP connection.",
            "# TYPE satwatt_connected_chargers gauge",
            f"satwatt_connected_chargers {len(registry)}",
            "# HELP satwatt_meter_anomalies_total Implausible meter readings flagged, never billed.",
            "# TYPE satwatt_meter_anomalies_total counter",
            *(
                f'satwatt_meter_anomalies_total{{reason="{reason}"}} {service.anomalies[reason]}'
                for reason in REASONS
            ),
        ]
        if node is not None:
            health = node.backend.health
            lines += [
                "# HELP satwatt_lightning_up Whether the Lightning node answers (1) or not (0).",
                "# TYPE satwatt_lightning_up gauge",
                f"satwatt_lightning_up {int(health.reachable)}",
                "# HELP satwatt_lightning_consecutive_failures Failed node calls since the last success.",
                "# TYPE satwatt_lightning_consecutive_failures gauge",
                f"satwatt_lightning_consecutive_failures {health.consecutive_failures}",
                "# TYPE satwatt_lightning_reconnects_total counter",
                f"satwatt_lightning_reconnects_total {health.reconnects}",
            ]
        if settlement_engine is not None:
            lines += [
                "# HELP satwatt_invoice_stream_up Whether the node's invoice stream is being followed.",
                "# TYPE satwatt_invoice_stream_up gauge",
                f"satwatt_invoice_stream_up {int(settlement_engine.stream_connected.is_set())}",
                "# HELP satwatt_open_settlements Paid sessions not yet settled.",
                "# TYPE satwatt_open_settlements gauge",
                f"satwatt_open_settlements {settlement_engine.open_count}",
            ]
        stats = writer.stats
        lines += [
            "# HELP satwatt_db_batches_total Transactions the group-commit writer committed.",
            "# TYPE satwatt_db_batches_total counter",
            f"satwatt_db_batches_total {stats.batches}",
            "# HELP satwatt_db_facts_total Facts (units) committed; per batch, how much group commit groups.",
            "# TYPE satwatt_db_facts_total counter",
            f"satwatt_db_facts_total {stats.units}",
            "# HELP satwatt_db_failed_facts_total Facts that could not be written (answered InternalError).",
            "# TYPE satwatt_db_failed_facts_total counter",
            f"satwatt_db_failed_facts_total {stats.failed_units}",
            "# HELP satwatt_db_last_batch_seconds How long the last batch took to write and commit.",
            "# TYPE satwatt_db_last_batch_seconds gauge",
            f"satwatt_db_last_batch_seconds {stats.last_batch_ms / 1000:.6f}",
        ]
        body = "\n".join(lines) + "\n"
        if settlement_engine is not None:  # latency histograms and invoice counters
            body += settlement_engine.metrics.render()
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    return app
