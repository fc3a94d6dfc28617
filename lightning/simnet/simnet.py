"""The embeddable simnet: a gRPC+TLS server speaking LND's API for several simulated nodes."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import grpc

from lightning.keepalive import LND_KEEPALIVE, KeepalivePolicy
from lightning.simnet import macaroons
from lightning.simnet.network import DEFAULT_NODES, AutoPay, Faults, FeePolicy, Network, NodeSpec
from lightning.simnet.server import ERR_STARTING_UP, ERR_UNAVAILABLE, Gate, add_services
from lightning.simnet.store import PaymentRow, Store
from lightning.simnet.tls import ensure_tls_cert

log = logging.getLogger("lightning.simnet")

MACAROON_KINDS = tuple(macaroons.MACAROON_KINDS)  # admin, invoice, readonly
ADDRESS_FILE = "grpc.address"


class SimnetBindError(OSError):
    """The simnet's gRPC address cannot be bound (the port is taken, or the address is not this host's)."""


@dataclass(frozen=True)
class NodeFiles:
    name: str
    pubkey: str
    admin_macaroon: Path
    invoice_macaroon: Path
    readonly_macaroon: Path


class Simnet:
    """A simulated Lightning network behind one TLS gRPC port.

    Files under ``data_dir``: ``tls.cert`` / ``tls.key``, ``simnet.db`` (state, kept across
    restarts) and ``<node>/{admin,invoice,readonly}.macaroon`` (raw V2 macaroons, as LND writes).
    """

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 10009,
        nodes: list[NodeSpec] | tuple[NodeSpec, ...] = DEFAULT_NODES,
        fees: FeePolicy | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        keepalive: KeepalivePolicy = LND_KEEPALIVE,
        autopay: AutoPay | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.keepalive = keepalive
        self.autopay = autopay
        self.host = host
        self._requested_port = port
        self.port = port
        self._specs = tuple(nodes)
        self._fees = fees or FeePolicy()
        self.faults = faults or Faults()
        self._seed = seed
        self._server: grpc.aio.Server | None = None
        self._store: Store | None = None
        self.network: Network | None = None
        self._restore_task: asyncio.Task[None] | None = None
        self._gate: Gate | None = None

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def tls_cert_path(self) -> Path:
        return self.data_dir / "tls.cert"

    @property
    def tls_key_path(self) -> Path:
        return self.data_dir / "tls.key"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address_path(self) -> Path:
        """Where the running simnet writes the address to reach it (``lightning-simnet pay`` reads it)."""
        return self.data_dir / ADDRESS_FILE

    def macaroon_path(self, node: str, kind: str = "admin") -> Path:
        if kind not in MACAROON_KINDS:
            raise ValueError(f"unknown macaroon kind {kind!r}; one of {MACAROON_KINDS}")
        return self.data_dir / node / f"{kind}.macaroon"

    def node_files(self) -> list[NodeFiles]:
        net = self._net()
        return [
            NodeFiles(
                name=n.name,
                pubkey=n.pubkey,
                admin_macaroon=self.macaroon_path(n.name, "admin"),
                invoice_macaroon=self.macaroon_path(n.name, "invoice"),
                readonly_macaroon=self.macaroon_path(n.name, "readonly"),
            )
            for n in net.nodes.values()
        ]

    def lndconnect_uri(self, node: str, kind: str = "admin") -> str:
        """``lndconnect://host:port?cert=<base64url DER>&macaroon=<base64url>`` for one node."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = x509.load_pem_x509_certificate(self.tls_cert_path.read_bytes()).public_bytes(Encoding.DER)
        mac = self.macaroon_path(node, kind).read_bytes()

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        return f"lndconnect://{self.address}?cert={quote(b64(der))}&macaroon={quote(b64(mac))}"

    def _net(self) -> Network:
        if self.network is None:
            raise RuntimeError("simnet not started")
        return self.network

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_tls_cert(self.tls_cert_path, self.tls_key_path, (self.host,))
        self._store = Store(self.data_dir / "simnet.db")
        try:
            self.network = Network(
                self._store, self._specs, self._fees, self.faults, self._seed, autopay=self.autopay
            )
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self._store.siblings = self._writes_in_progress
        self._write_macaroons()
        self.network.start()
        try:
            await self._start_server()
        except BaseException:
            await self.stop()
            raise
        log.info("simnet listening on %s (tls cert %s)", self.address, self.tls_cert_path)

    def _check_port_free(self) -> None:
        """Refuse a taken port before gRPC tries it (its C core logs a bind failure of its own)."""
        if self.port == 0:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise SimnetBindError(
                    f"simnet cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
                ) from None

    async def _start_server(self) -> None:
        self._check_port_free()
        cert_pem = self.tls_cert_path.read_bytes()
        key_pem = self.tls_key_path.read_bytes()
        server = grpc.aio.server(options=[*self.keepalive.server_options(), ("grpc.so_reuseport", 0)])
        self._gate = add_services(server, self._net())
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)])
        try:
            bound = server.add_secure_port(f"{self.host}:{self.port}", creds)
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            bound = 0
            cause: Exception | None = exc
        else:
            cause = None
        if bound == 0:
            message = f"simnet cannot listen on {self.host}:{self.port} (port in use?)"
            raise SimnetBindError(message) from cause
        self.port = bound
        await server.start()
        self._server = server
        # a client on this machine reaches a wildcard address through the loopback (in the cert's names)
        local = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        self.address_path.write_text(f"{local}:{self.port}\n")

    async def _stop_server(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            if self.network is not None:
                self.network.abort_streams(grpc.StatusCode.UNAVAILABLE, "simnet shutting down")
            await server.stop(grace=None)

    async def stop(self) -> None:
        if self._restore_task is not None:
            self._restore_task.cancel()
            self._restore_task = None
        await self._stop_server()
        if self.network is not None:
            await self.network.stop()
            self.network = None
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Simnet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _write_macaroons(self) -> None:
        for node in self._net().nodes.values():
            for kind, perms in macaroons.MACAROON_KINDS.items():
                path = self.macaroon_path(node.name, kind)
                if path.exists():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(macaroons.bake(node.name, node.row.root_key, perms))
                os.chmod(path, 0o600)

    def summary(self) -> str:
        """Where everything is, for printing at start-up (paths, pubkeys, lndconnect URIs)."""
        lines = [f"grpc      {self.address}", f"tls.cert  {self.tls_cert_path.resolve()}"]
        if self.autopay is not None:
            lines.append(
                f"autopay   {self.autopay.payer} pays every invoice of {self.autopay.payee} "
                f"after {self.autopay.delay_s * 1000:g} ms"
            )
        for node in self.node_files():
            lines += [
                f"node      {node.name} pubkey={node.pubkey}",
                f"  admin.macaroon    {node.admin_macaroon.resolve()}",
                f"  invoice.macaroon  {node.invoice_macaroon.resolve()}",
                f"  readonly.macaroon {node.readonly_macaroon.resolve()}",
                f"  lndconnect        {self.lndconnect_uri(node.name)}",
            ]
        return "\n".join(lines)

    # ---- fault injection -----------------------------------------------------------------------
    @property
    def is_serving(self) -> bool:
        return self._server is not None

    async def begin_outage(self) -> None:
        """Close the port (clients see UNAVAILABLE / connection refused), keeping all state."""
        await self._stop_server()

    async def end_outage(self) -> None:
        if self._server is None:
            await self._start_server()

    async def outage(self, seconds: float) -> None:
        """A full outage for ``seconds``, restored in the background."""
        await self.begin_outage()

        async def restore() -> None:
            await asyncio.sleep(seconds)
            await self.end_outage()

        self._restore_task = asyncio.get_running_loop().create_task(restore())

    def set_unavailable(self, on: bool) -> None:
        """Keep the port open but answer every RPC with UNAVAILABLE (and break open streams)."""
        self.faults.unavailable = on
        if on and self.network is not None:
            self.network.abort_streams(grpc.StatusCode.UNAVAILABLE, ERR_UNAVAILABLE)

    def set_starting_up(self, on: bool) -> None:
        """LND's start-up phase: every RPC fails with 'RPC server is in the process of starting up'."""
        self.faults.starting_up = on
        if on and self.network is not None:
            self.network.abort_streams(grpc.StatusCode.UNKNOWN, ERR_STARTING_UP)

    def mine_blocks(self, n: int = 1) -> int:
        return self._net().mine_blocks(n)

    # ---- inspection (tests, admin) ---------------------------------------------------------------
    def balance_msat(self, node: str) -> int:
        return self._net().nodes[node].row.balance_msat

    async def pay_direct(
        self,
        payer: str,
        payment_request: str,
        fee_limit_msat: int = 100_000,
        timeout_s: float = 30.0,
        amount_msat: int = 0,
    ) -> PaymentRow:
        """Pay in-process, without gRPC (works during an injected outage: the node is up, only
        its RPC link is down). Returns once the payment is final, or its HTLC is held."""
        net = self._net()
        pay = net.start_payment(
            payer, payment_request, amt_msat=amount_msat, fee_limit_msat=fee_limit_msat, timeout_s=timeout_s
        )
        key = (payer, pay.payment_hash)
        queue = net.payment_events.subscribe(key)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, PaymentRow):
                    return item
        finally:
            net.payment_events.unsubscribe(key, queue)

    def invoice_subscribers(self, node: str) -> int:
        """Open SubscribeInvoices streams of ``node`` (tests wait on this instead of sleeping)."""
        return len(self._net().invoice_events.queues.get(node, ()))

    def _writes_in_progress(self) -> int:
        net = self.network
        return (self._gate.writes if self._gate is not None else 0) + (net.payments_in_flight if net else 0)

    def stall_calls(self) -> None:
        """Fault: every call that arrives waits inside the node until :meth:`resume_calls`."""
        if self._gate is not None and self._gate.stall is None:
            self._gate.stall = asyncio.Event()

    def resume_calls(self) -> None:
        if self._gate is not None and self._gate.stall is not None:
            self._gate.stall.set()
            self._gate.stall = None

    @property
    def rpcs_delayed(self) -> int:
        """Calls inside the simnet right now, held by ``faults.rpc_latency_s`` or a stall."""
        return self._gate.delayed if self._gate is not None else 0

    @property
    def client_connections(self) -> set[str]:
        """The client connections (peer address:port) that made a call since the server started."""
        return set(self._gate.peers) if self._gate is not None else set()

    def pubkey(self, node: str) -> str:
        return self._net().nodes[node].pubkey
