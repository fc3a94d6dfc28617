"""``csms demo``: the whole idea in one process and under a minute.

It starts satwatt (SQLite in a fresh temporary directory, the embedded Lightning simnet with a node per
car), registers a few chargers (both OCPP versions, with passwords) selling at a demo tariff with small
increments, connects simulated charge points, and lets cars plug in, pay and leave: walk-up sessions
paid with a session token and RFID sessions paid by a registered payer, each car's payer agent paying
from its own simnet node. One car stops paying: it is throttled (charging profile with limit 0) and
then stopped. A live table shows every session; after ``duration_s`` a summary is printed.

Without a terminal (CI), the live table becomes periodic plain lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import uvicorn
from pydantic import SecretStr
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chargepoint_sim import ChargePoint, ChargePointOptions, ChargerSpec, create_charge_point
from chargepoint_sim.payer import PayerAgent, PayerMode, PayerStats, SessionNotFound
from csms.server_config import uvicorn_config
from lightning import LightningError
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig

log = logging.getLogger("csms.demo")

# 100 sat/kWh sold in 50 Wh increments (5 sat), a 1 sat session fee, and short limits so that the
# non-payer is cut within seconds and stopped a few seconds later.
DEMO_TARIFF: dict[str, Any] = {
    "name": "demo",
    "price_msat_per_kwh": 100_000,
    "session_fee_msat": 1_000,
    "increment_wh": 50,
    "min_invoice_interval_s": 2,
    "allowance_wh": 30,
    "grace_s": 3,
    "stop_after_s": 5,
    "invoice_expiry_s": 120,
}
NON_PAYER_STOPS_AFTER_WH = 50
#: DEMO-1's second connector is kept for a person with a browser (the driver page): a car stays plugged in
#: there, and the demo's stand-in for their wallet pays what the page shows (the first invoice after this
#: delay, so that its QR code can be seen).
VISITOR_CONNECTOR = 2
VISITOR_PAYS_AFTER_S = 3.0
EV_BY_LANE = ("suv", "sedan")


class DemoError(Exception):
    """Something essential failed (the message says what); the demo exits non-zero."""


@dataclass
class DemoOptions:
    duration_s: float = 60.0
    chargers: int = 4
    port: int = 8180
    host: str = "127.0.0.1"
    data_dir: Path | None = None
    live: bool | None = None  # None: a live table when stdout is a terminal
    plain_every_s: float = 5.0
    seed: int = 21


@dataclass
class Visit:
    """One car's session at one charger."""

    lane: int
    charger_id: str
    protocol: str
    car: str
    how: str  # walk-up / RFID
    agent: PayerAgent
    session_id: str | None = None


@dataclass
class Summary:
    duration_s: float
    sessions: int = 0
    energy_wh: int = 0
    billed_msat: int = 0
    paid_msat: int = 0
    invoices_paid: int = 0
    invoices_refused: int = 0
    fees_msat: int = 0
    suspensions: int = 0
    stops: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "none"
        return [
            f"Demo summary ({self.duration_s:.0f} s)",
            f"  sessions          {self.sessions} ({outcomes})",
            f"  energy            {self.energy_wh / 1000:.3f} kWh",
            f"  sats billed       {self.billed_msat // 1000}",
            f"  sats paid         {self.paid_msat // 1000} ({self.invoices_paid} invoices, "
            f"routing fees {self.fees_msat / 1000:g} sat)",
            f"  refused invoices  {self.invoices_refused}",
            f"  suspensions       {self.suspensions}",
            f"  stops             {self.stops}",
        ]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the demo handles Ctrl-C and shuts down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DemoError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is satwatt already running? "
            "Choose another port with --port (0 = any free port)."
        ) from None
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.rng = random.Random(options.seed)
        self.key = "sw_demo_" + secrets.token_urlsafe(18)
        self.stop = asyncio.Event()
        self.visits: list[Visit] = []
        self.notes: list[str] = []
        self.sessions: list[dict[str, Any]] = []
        self.cps: list[ChargePoint] = []
        self.payers: dict[int, tuple[str, str]] = {}  # lane -> (payer token, id tag)
        self.started = time.monotonic()
        self.port = 0
        self.app: Any = None
        self.non_payer_lane = min(2, options.chargers)  # a 2.0.1 charger when there are two or more

    # ---------------------------------------------------------------------------------- helpers

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, text: str) -> None:
        line = f"[{self.elapsed():5.1f}s] {text}"
        self.notes.append(line)
        if not self.live:
            self.console.print(line, markup=False, highlight=False)

    @property
    def live(self) -> bool:
        return self.options.live if self.options.live is not None else self.console.is_terminal

    def api(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.key}"}
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=15)

    # ---------------------------------------------------------------------------------- running

    async def run(self) -> Summary:
        from csms.app import create_app
        from csms.security import ApiKey
        from csms.settings import Settings

        options = self.options
        temporary = options.data_dir is None
        data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="satwatt-demo-"))
        sock = _bind(options.host, options.port)
        self.port = sock.getsockname()[1]
        settings = Settings(
            data_dir=data_dir,
            database_url=f"sqlite+aiosqlite:///{(data_dir / 'demo.db').resolve()}",
            api_key=SecretStr(self.key),
            host=options.host,
            port=self.port,
            simnet_port=0,
            simnet_cars=options.chargers + 1,  # a car per lane, and the visitor's wallet
            settlement_tick_ms=200,
            meter_sample_interval_s=1,
            heartbeat_interval_s=60,
            log_level="WARNING",
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = create_app(settings, ApiKey.from_plain(self.key))
        config = uvicorn_config(self.app, settings)
        server = _Server(config)
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.stop.set)
            loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        try:
            async with asyncio.timeout(60):
                while not server.started:
                    if server_task.done():
                        raise DemoError("satwatt stopped during start-up (see the log above)")
                    await asyncio.sleep(0.05)
            return await self._run_demo()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
            for cp in self.cps:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cp.stop(), 5)
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server_task, 20)
            sock.close()
            if temporary:
                shutil.rmtree(data_dir, ignore_errors=True)

    async def _run_demo(self) -> Summary:
        await self._set_up()
        self._banner()
        self.started = time.monotonic()
        lanes = [asyncio.create_task(self._lane(i)) for i in range(1, self.options.chargers + 1)]
        visitor = asyncio.create_task(self._visitor())
        view = asyncio.create_task(self._view())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.options.duration_s)
        self.stop.set()
        # cars leave: their transactions end and their final invoices get paid
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*lanes, return_exceptions=True), 25)
        for task in [*lanes, visitor]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await visitor
        failures = [t.exception() for t in lanes if t.done() and not t.cancelled() and t.exception()]
        for exc in failures:
            log.error("a demo lane failed: %r", exc)
        await self._poll()
        view.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await view
        return self.summary()

    async def _set_up(self) -> None:
        async with self.api() as api:
            tariff = (await api.post("/api/v1/tariffs", json=DEMO_TARIFF)).raise_for_status().json()
            for lane in range(1, self.options.chargers + 1):
                charger_id = f"DEMO-{lane}"
                password = secrets.token_urlsafe(16)
                protocol = "1.6" if lane % 2 == 1 else "2.0.1"
                (
                    await api.post("/api/v1/chargers", json={"id": charger_id, "password": password})
                ).raise_for_status()
                (
                    await api.patch(f"/api/v1/chargers/{charger_id}", json={"tariff_id": tariff["id"]})
                ).raise_for_status()
                tag = f"CARD-{lane:02d}"
                payer = await api.post(
                    "/api/v1/payers", json={"name": f"driver of car{lane}", "id_tags": [tag]}
                )
                self.payers[lane] = (payer.raise_for_status().json()["token"], tag)
                spec = ChargerSpec.dc(50) if lane % 2 == 1 else ChargerSpec.dc(100)
                cp = create_charge_point(
                    ChargePointOptions(
                        id=charger_id,
                        connectors=VISITOR_CONNECTOR if lane == 1 else 1,
                        csms_url=f"ws://127.0.0.1:{self.port}/ocpp",
                        protocol=protocol,
                        password=password,
                        charger=spec,
                        reconnect_min_s=0.2,
                        reconnect_max_s=2.0,
                        call_timeout_s=10.0,
                        message_retry_s=0.5,
                    )
                )
                self.cps.append(cp)
                await cp.start()
        try:
            await asyncio.gather(*(cp.wait_online(20) for cp in self.cps))
        except TimeoutError:
            offline = [cp.id for cp in self.cps if not cp.online]
            raise DemoError(f"simulated chargers did not come online: {', '.join(offline)}") from None

    def _banner(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        simnet = self.app.state.lightning.simnet
        lines = [
            f"[bold green]satwatt demo[/] for {self.options.duration_s:g} s: "
            f"{self.options.chargers} simulated chargers (OCPP 1.6J and 2.0.1), "
            "cars paying over a simulated Lightning network",
            f"  REST API and docs   {base}/docs   (operator key: {self.key})",
            f"  Dashboard           {base}/dashboard   (log in with the operator key)",
            f"  Driver page         {base}/c/DEMO-1/{VISITOR_CONNECTOR}   (start a charge from a browser; "
            "the demo's wallet pays what the page shows)",
            f"  Point a charger at  ws://127.0.0.1:{self.port}/ocpp/<charge-point-id>  "
            "(register it first: POST /api/v1/chargers)",
            f"  Lightning simnet    {simnet.address if simnet else 'n/a'}",
            "  Tariff              100 sat/kWh in 50 Wh increments, 1 sat session fee; "
            f"car{self.non_payer_lane} stops paying after {NON_PAYER_STOPS_AFTER_WH} Wh",
            "  Stop early with Ctrl-C",
        ]
        for line in lines:
            self.console.print(line, highlight=False)
        self.console.print()

    # ---------------------------------------------------------------------------------- the cars

    async def _lane(self, lane: int) -> None:
        cp = self.cps[lane - 1]
        visit_no = 0
        while not self.stop.is_set():
            visit_no += 1
            non_payer = lane == self.non_payer_lane and visit_no == 1
            rfid = (lane + visit_no) % 2 == 0
            try:
                await self._visit(lane, cp, visit_no, rfid, non_payer)
            except (SessionNotFound, httpx.HTTPError, TimeoutError) as exc:
                self.note(f"{cp.id}: car{lane}'s visit went wrong: {type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    await cp.unplug(1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.rng.uniform(2, 4))

    async def _visit(self, lane: int, cp: ChargePoint, visit_no: int, rfid: bool, non_payer: bool) -> None:
        car = f"car{lane}"
        simnet = self.app.state.lightning.simnet
        backend = LndBackend(LndConfig.from_simnet(simnet, car), name=car)
        mode = PayerMode(stop_after_wh=NON_PAYER_STOPS_AFTER_WH) if non_payer else PayerMode()
        try:
            await cp.plug_in(1, ev=EV_BY_LANE[(lane - 1) % len(EV_BY_LANE)], soc=self.rng.uniform(0.2, 0.6))
            if rfid:
                token, tag = self.payers[lane]
                seen = {v.session_id for v in self.visits if v.session_id}
                agent = PayerAgent(
                    f"http://127.0.0.1:{self.port}",
                    backend,
                    payer_token=token,
                    id_tag=tag,
                    mode=mode,
                    name=car,
                    ignore_sessions=seen,
                )
                visit = Visit(lane, cp.id, cp.version, car, "RFID", agent)
                if not await cp.authorize(1, tag):
                    raise SessionNotFound(f"{tag} was not accepted")
                visit.session_id = await agent.find_session(15)
            else:
                async with self.api(None) as anonymous:
                    anonymous.headers.pop("Authorization", None)
                    created = await anonymous.post(
                        "/api/v1/sessions", json={"charger_id": cp.id, "connector_id": 1}
                    )
                body = created.raise_for_status().json()
                agent = PayerAgent(
                    f"http://127.0.0.1:{self.port}",
                    backend,
                    session_token=body["token"],
                    session_id=body["id"],
                    mode=mode,
                    name=car,
                )
                visit = Visit(lane, cp.id, cp.version, car, "walk-up", agent, body["id"])
            self.visits.append(visit)
            agent.on_event = lambda kind, data, v=visit: self._on_event(v, kind, data)
            how = "badges in (RFID, payer token)" if rfid else "starts a walk-up session (session token)"
            self.note(
                f"{cp.id} ({cp.version}): {car} plugs in and {how}"
                + (", and will stop paying" if non_payer else "")
            )
            task = asyncio.create_task(agent.run())
            charge_s = self.rng.uniform(14, 24)
            deadline = time.monotonic() + charge_s
            # charge until the car wants to leave, the demo ends, or satwatt stops the session
            while time.monotonic() < deadline and not self.stop.is_set() and not agent.stats.stopped:
                if task.done():
                    break
                with contextlib.suppress(TimeoutError):
                    await agent.wait_for(
                        lambda: agent.stats.stopped or self.stop.is_set(), min(1.0, charge_s)
                    )
            if agent.stats.stopped:
                with contextlib.suppress(TimeoutError):
                    await cp.wait_for(lambda: cp.transaction(1) is None, 15)
                await asyncio.sleep(1.0)
            await cp.unplug(1)
            # wait for the final invoice to be paid and the session to close (a non-payer just drives off)
            wait_s = 2.0 if non_payer else 15.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                self.note(f"{cp.id}: {car}'s payer agent failed: {task.exception()!r}")
        finally:
            await backend.close()

    async def _visitor(self) -> None:
        """DEMO-1's second connector, for a person with a browser: a car stays plugged in, and each walk-up
        session started there from the driver page is followed by a PayerAgent on the visitor's simnet node
        (the demo's stand-in for their phone's wallet), from a few seconds after it appears."""
        cp = self.cps[0]
        node = f"car{self.options.chargers + 1}"
        backend = LndBackend(LndConfig.from_simnet(self.app.state.lightning.simnet, node), name=node)
        wallets: dict[str, asyncio.Task[None]] = {}
        replugged: set[str] = set()
        try:
            await cp.plug_in(VISITOR_CONNECTOR, ev="suv", soc=self.rng.uniform(0.2, 0.4))
            async with self.api() as api:
                while not self.stop.is_set():
                    listed = await api.get("/api/v1/sessions", params={"charger_id": cp.id, "limit": 10})
                    for session in listed.json() if listed.status_code == 200 else []:
                        if session["connector_id"] != VISITOR_CONNECTOR or not session["sold"]:
                            continue
                        if session["state"] != "ended" and session["id"] not in wallets:
                            wallets[session["id"]] = asyncio.create_task(
                                self._visitor_pays(backend, session["id"])
                            )
                        if session["state"] == "ended" and session["id"] not in replugged:
                            replugged.add(session["id"])  # the visitor left: the next car arrives
                            await cp.unplug(VISITOR_CONNECTOR)
                            await cp.plug_in(VISITOR_CONNECTOR, ev="suv", soc=self.rng.uniform(0.2, 0.4))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 1.0)
        finally:
            for task in wallets.values():
                task.cancel()
            await asyncio.gather(*wallets.values(), return_exceptions=True)
            await backend.close()

    async def _visitor_pays(self, backend: LndBackend, session_id: str) -> None:
        """The visitor's wallet on one session: it waits a moment (the visitor sees the QR code of the
        first invoice), then pays that invoice and the session's next ones as they come."""
        await asyncio.sleep(VISITOR_PAYS_AFTER_S)
        who = f"{self.cps[0].id}/{VISITOR_CONNECTOR}"

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "paid":
                self.note(f"{who}: the visitor's wallet paid {data.get('amount_msat', 0) / 1000:g} sat")

        agent = PayerAgent(
            f"http://127.0.0.1:{self.port}",
            backend,
            session_token=self.key,  # the operator key sees every session; the visitor's is in the browser
            session_id=session_id,
            name="visitor",
            on_event=on_event,
        )
        try:
            await agent.run()
        except (httpx.HTTPError, LightningError) as exc:
            self.note(f"{who}: the visitor's wallet stopped: {exc}")

    def _on_event(self, visit: Visit, kind: str, data: dict[str, Any]) -> None:
        who = f"{visit.charger_id} ({visit.protocol}) {visit.car}"
        if kind == "suspended":
            self.note(
                f"{who}: SUSPENDED for non-payment ({data.get('reason')}; power cut by {data.get('how')})"
            )
        elif kind == "resumed":
            self.note(f"{who}: resumed")
        elif kind == "stopping":
            self.note(f"{who}: STOPPED by satwatt ({data.get('reason')})")
        elif kind == "closed":
            sat = {k: data.get(k, 0) / 1000 for k in ("cost_msat", "paid_msat", "refundable_msat")}
            self.note(
                f"{who}: session closed, {data.get('outcome')}: cost {sat['cost_msat']:g} sat, "
                f"paid {sat['paid_msat']:g} sat, refundable {sat['refundable_msat']:g} sat"
            )
        elif kind == "invoice" and data.get("kind") == "final":
            self.note(f"{who}: final invoice {data.get('amount_msat', 0) / 1000:g} sat")

    # ---------------------------------------------------------------------------------- the view

    async def _poll(self) -> None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            async with self.api() as api:
                response = await api.get("/api/v1/sessions", params={"limit": 1000})
                if response.status_code == 200:
                    self.sessions = response.json()

    def _visit_of(self, session_id: str) -> Visit | None:
        return next((v for v in self.visits if v.session_id == session_id), None)

    # shorter names for the session states, so that the table fits in 80 columns
    STATE_LABELS: ClassVar[dict[str, str]] = {
        "awaiting_payment": "to pay",
        "awaiting_payment_final": "final bill",
    }

    def table(self) -> Table:
        """The sessions, in at most 80 columns (a terminal's default width, and a pipe's)."""
        table = Table(
            title=f"satwatt demo: {self.elapsed():.0f} / {self.options.duration_s:g} s",
            header_style="bold",
            title_justify="left",
            box=box.SIMPLE_HEAD,  # no vertical rules: a space between columns
            show_edge=False,
            padding=0,
            caption="* stops paying: throttled, then stopped"
            if any(v.agent.mode.stop_after_wh for v in self.visits)
            else None,
            caption_justify="left",
        )
        columns = [
            ("charger", "left"),
            ("OCPP", "left"),
            ("car", "left"),
            ("paid by", "left"),
            ("state", "left"),
            ("kW", "right"),
            ("kWh", "right"),
            ("sat\nbilled/paid", "right"),
            ("credit\nWh", "right"),
            ("invoices\npaid/ref", "right"),
        ]
        for name, justify in columns:
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        styles = {
            "charging": "green",
            "suspended": "bold red",
            "awaiting_payment_final": "yellow",
            "ended": "dim",
        }
        for session in self.sessions[:14]:
            visit = self._visit_of(session["id"])
            stats: PayerStats | None = visit.agent.stats if visit else None
            state = session["state"]
            billed, paid = (session.get("billed_msat") or 0) / 1000, (session.get("paid_msat") or 0) / 1000
            table.add_row(
                session["charger_id"],
                session.get("protocol") or "",
                (visit.car + ("*" if visit.agent.mode.stop_after_wh else "")) if visit else "",
                visit.how if visit else "",
                Text(self.STATE_LABELS.get(state, state), style=styles.get(state, "")),
                f"{(session.get('power_w') or 0) / 1000:.1f}" if state != "ended" else "",
                f"{session['energy_wh'] / 1000:.3f}",
                f"{billed:g}/{paid:g}",
                str(session.get("credit_wh") if session.get("credit_wh") is not None else ""),
                f"{stats.invoices_paid}/{stats.invoices_refused}" if stats else "",
            )
        return table

    def totals_line(self) -> str:
        s = self.summary()
        states: dict[str, int] = {}
        for session in self.sessions:
            states[session["state"]] = states.get(session["state"], 0) + 1
        by_state = ", ".join(f"{n} {self.STATE_LABELS.get(k, k)}" for k, n in sorted(states.items()))
        return (
            f"[{self.elapsed():5.1f}s] sessions {s.sessions} ({by_state or 'none yet'}) | "
            f"{s.energy_wh / 1000:.3f} kWh | billed {s.billed_msat // 1000} sat | "
            f"paid {s.paid_msat // 1000} sat | "
            f"suspensions {s.suspensions}, stops {s.stops}"
        )

    def render(self) -> Group:
        notes = Text("\n".join(self.notes[-8:]), style="dim")
        return Group(self.table(), Text(self.totals_line()), notes)

    async def _view(self) -> None:
        if self.live:
            with Live(self.render(), console=self.console, refresh_per_second=4, transient=False) as live:
                while True:
                    await self._poll()
                    live.update(self.render())
                    await asyncio.sleep(0.5)
        else:
            last = 0.0
            while True:
                await self._poll()
                if time.monotonic() - last >= self.options.plain_every_s:
                    last = time.monotonic()
                    self.console.print(self.totals_line(), markup=False, highlight=False)
                await asyncio.sleep(1.0)

    def summary(self) -> Summary:
        summary = Summary(duration_s=min(self.elapsed(), self.options.duration_s))
        for session in self.sessions:
            summary.sessions += 1
            summary.energy_wh += session.get("energy_wh") or 0
            summary.billed_msat += session.get("billed_msat") or 0
            summary.paid_msat += session.get("paid_msat") or 0
            outcome = session.get("outcome") or session["state"]
            summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
        for visit in self.visits:
            stats = visit.agent.stats
            summary.invoices_paid += stats.invoices_paid
            summary.invoices_refused += stats.invoices_refused
            summary.fees_msat += stats.fees_msat
            summary.suspensions += stats.suspensions
            summary.stops += int(stats.stopped)
        return summary


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; the exit code: 0, 1 if nothing was paid or a car failed, 2 if it could not start."""
    console = console or Console()
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True
    )
    if options.chargers < 1 or options.duration_s <= 0:
        console.print("[bold red]demo:[/] --chargers must be >= 1 and --duration > 0")
        return 2

    async def main() -> Summary:
        return await Demo(options, console).run()

    try:
        summary = asyncio.run(main())
    except DemoError as exc:
        console.print(f"[bold red]The demo cannot run:[/] {exc}")
        return 2
    console.print()
    for line in summary.lines():
        console.print(line, markup=False, highlight=False)
    if summary.paid_msat <= 0:
        console.print("[bold red]No sats were paid: the demo did not work (see the messages above).[/]")
        return 1
    return 0
