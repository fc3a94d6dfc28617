"""Connecting satwatt to its Lightning node: a real LND, or the embedded simnet (the default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from csms.security import data_secret
from csms.settings import Settings
from lightning import Backend
from lightning.factory import LightningRuntime, start_lightning
from lightning.lnd import LndBackend
from lightning.lnd.config import LndConfig
from lightning.simnet import NodeSpec, Simnet
from lightning.simnet.simnet import SimnetBindError

log = logging.getLogger("csms.lightning")

SELLER_NODE = "satwatt"
SECRET_FILE = "settlement.secret"


class LightningStartError(Exception):
    """The Lightning node cannot be started; the message says why and what to do (one sentence)."""


@dataclass
class LightningNode:
    """The running backend (and embedded simnet), with the lines ``csms serve`` prints about it."""

    runtime: LightningRuntime
    description: list[str] = field(default_factory=list)

    @property
    def backend(self) -> Backend:
        return self.runtime.backend

    @property
    def simnet(self) -> Simnet | None:
        return self.runtime.simnet

    async def close(self) -> None:
        await self.runtime.close()


def simnet_nodes(cars: int) -> tuple[NodeSpec, ...]:
    return (
        NodeSpec(SELLER_NODE, 1_000_000),
        *(NodeSpec(f"car{i}") for i in range(1, cars + 1)),
        NodeSpec("wallet"),
    )


async def open_lightning(settings: Settings) -> LightningNode:
    """The node the validated settings name: a real LND, or the embedded simnet."""
    if settings.lightning_backend == "lnd":
        if settings.lnd_connect is not None:
            config = LndConfig.from_lndconnect(settings.lnd_connect.get_secret_value())
        else:
            assert settings.lnd_grpc and settings.lnd_tls_cert and settings.lnd_macaroon
            config = LndConfig.from_paths(settings.lnd_grpc, settings.lnd_tls_cert, settings.lnd_macaroon)
        runtime = LightningRuntime(backend=LndBackend(config, name="lnd"))
        return LightningNode(runtime, [f"  Lightning          LND at {config.grpc_address}"])
    nodes = simnet_nodes(settings.simnet_cars)
    try:
        runtime = await start_lightning(
            "simnet",
            data_dir=settings.data_dir,
            simnet_host=settings.simnet_host,
            simnet_port=settings.simnet_port,
            simnet_nodes=nodes,
            simnet_autopay_ms=settings.simnet_autopay_ms,
        )
    except SimnetBindError as exc:  # "simnet cannot listen on 127.0.0.1:10009: Address already in use"
        raise LightningStartError(
            f"the embedded Lightning {exc} (another satwatt or lightning-simnet? or CSMS_SIMNET_HOST is not "
            "an address of this host); set CSMS_SIMNET_PORT=0 for any free port, or another port"
        ) from None
    assert runtime.simnet is not None
    simnet = runtime.simnet
    payers = ", ".join(n.name for n in nodes[1:])
    return LightningNode(
        runtime,
        [
            f"  Lightning          simnet (simulated, regtest) at {simnet.address}",
            f"     TLS cert        {simnet.tls_cert_path}",
            f"     payer nodes     {payers}: macaroons in {simnet.data_dir}/<node>/admin.macaroon",
            *(
                [f"     auto-pay        car1 pays every invoice after {settings.simnet_autopay_ms} ms"]
                if settings.simnet_autopay_ms is not None
                else []
            ),
        ],
    )


def settlement_secret(data_dir: Path) -> bytes:
    """The server secret invoice preimages are derived from (created once, kept with the data)."""
    return data_secret(data_dir, SECRET_FILE)
