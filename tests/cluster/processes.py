"""`csms serve` processes on this machine's databases: several in cluster mode on PostgreSQL and NATS,
sharing one simnet (the Lightning node) that lives in the test process; or one, killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats

from lightning.simnet import NodeSpec, Simnet

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
NATS_URL = os.environ.get("CSMS_TEST_NATS_URL", "nats://127.0.0.1:4222")
LEASE_S = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nats_reachable(url: str = NATS_URL) -> bool:
    host, _, port = url.removeprefix("nats://").partition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port or 4222)), timeout=1):
        return True
    return False


@dataclass
class Member:
    """One `csms serve` process of the cluster."""

    name: str
    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ocpp(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def api(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    async def start(self, timeout_s: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = os.open(self.data_dir / "serve.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "csms",
                "serve",
                "--port",
                str(self.port),
                cwd=REPO,
                env={**self.env, "CSMS_DATA_DIR": str(self.data_dir)},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            os.close(log)
        async with asyncio.timeout(timeout_s), httpx.AsyncClient() as client:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.http}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.http}/healthz")).json()  # type: ignore[no-any-return]

    async def process_id(self) -> str:
        return str((await self.health())["cluster"]["process"])

    async def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.data_dir / "serve.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 20) -> T:
    """``fetch()`` again and again (another process's state, over HTTP) until ``done`` holds; bounded."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await fetch()
            if done(value):
                return value
            await asyncio.sleep(0.05)


@dataclass
class Cluster:
    members: list[Member]
    simnet: Simnet
    api_key: str
    name: str

    async def leader(self) -> Member:
        """The member following the invoice stream (waits until one does)."""
        async with asyncio.timeout(30):
            while True:
                for member in self.members:
                    if member.process is None or member.process.returncode is not None:
                        continue
                    with contextlib.suppress(httpx.TransportError):
                        health = await member.health()
                        leader = health["cluster"]["invoice_stream_leader"]
                        if leader is not None and leader == health["cluster"]["process"]:
                            return member
                await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Environment:
    env: dict[str, str]
    api_key: str
    name: str
    simnet: Simnet


def serve_env(database_url: str, simnet: Simnet, api_key: str, **settings: str) -> dict[str, str]:
    """The environment of a `csms serve` process on ``database_url``, with ``simnet`` as its Lightning
    node (``settings``: more CSMS_ settings, lower-case without the prefix)."""
    return {
        **os.environ,
        "CSMS_DATABASE_URL": database_url,
        "CSMS_API_KEY": api_key,
        "CSMS_LIGHTNING_BACKEND": "lnd",
        "CSMS_LND_GRPC": simnet.address,
        "CSMS_LND_TLS_CERT": str(simnet.tls_cert_path),
        "CSMS_LND_MACAROON": str(simnet.macaroon_path("satwatt", "admin")),
        "CSMS_REQUIRE_CHARGER_PASSWORD": "false",
        "CSMS_SETTLEMENT_TICK_MS": "100",
        "CSMS_OCPP_CALL_TIMEOUT_S": "5",
        "CSMS_METER_SAMPLE_INTERVAL_S": "10",
        "CSMS_LOG_LEVEL": "INFO",
        "GRPC_VERBOSITY": "ERROR",
        **{f"CSMS_{k.upper()}": v for k, v in settings.items()},
    }


@contextlib.asynccontextmanager
async def cluster_environment(
    work: Path, database_url: str, cars: int = 2, **settings: str
) -> AsyncIterator[Environment]:
    """A simnet, and the environment of a cluster's processes."""
    simnet = Simnet(
        work / "simnet",
        port=0,
        nodes=(NodeSpec("satwatt", 1_000_000), *(NodeSpec(f"car{i}") for i in range(1, cars + 1))),
    )
    await simnet.start()
    key = "cluster-test-" + secrets.token_hex(8)
    name = "t" + secrets.token_hex(5)
    env = serve_env(
        database_url,
        simnet,
        key,
        nats_url=NATS_URL,
        cluster_name=name,
        cluster_lease_s=str(LEASE_S),
        **settings,
    )
    try:
        yield Environment(env, key, name, simnet)
    finally:
        await simnet.stop()
        await delete_buckets(name)


@contextlib.asynccontextmanager
async def running_cluster(
    work: Path, database_url: str, size: int = 3, cars: int = 2, **settings: str
) -> AsyncIterator[Cluster]:
    async with cluster_environment(work, database_url, cars, **settings) as environment:
        members = [Member(f"p{i}", work / f"p{i}", environment.env) for i in range(1, size + 1)]
        try:
            await asyncio.gather(*(m.start() for m in members))
            yield Cluster(members, environment.simnet, environment.api_key, environment.name)
        finally:
            await asyncio.gather(*(m.stop() for m in members), return_exceptions=True)


async def delete_buckets(cluster: str) -> None:
    """Remove a test cluster's key-value buckets from NATS."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        for bucket in ("processes", "owners", "leases"):
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{cluster}_{bucket}")
    finally:
        await client.close()
