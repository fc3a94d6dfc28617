"""One call for the app: the configured backend, and the embedded simnet when that is the choice.

    runtime = await start_lightning("simnet", data_dir=Path("satwatt-data"), simnet_port=10009)
    print(runtime.describe())            # where the cert and the payers' macaroons are
    backend = runtime.backend            # a lightning.Backend
    ...
    await runtime.close()

``kind="lnd"`` reads ``CSMS_LND_CONNECT`` or ``CSMS_LND_GRPC`` / ``CSMS_LND_TLS_CERT`` /
``CSMS_LND_MACAROON`` (see :meth:`LndConfig.from_env`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lightning.lnd import LndBackend, LndConfig, RetryPolicy
from lightning.simnet import DEFAULT_NODES, AutoPay, NodeSpec, Simnet

BACKEND_KINDS = ("simnet", "lnd")


@dataclass
class LightningRuntime:
    backend: LndBackend
    simnet: Simnet | None = None

    def describe(self) -> str:
        if self.simnet is not None:
            return "Lightning: embedded simnet\n" + self.simnet.summary()
        return f"Lightning: LND at {self.backend.config.grpc_address}"

    async def close(self) -> None:
        await self.backend.close()
        if self.simnet is not None:
            await self.simnet.stop()


async def start_lightning(
    kind: str = "simnet",
    *,
    data_dir: Path | str = Path("satwatt-data"),
    simnet_host: str = "127.0.0.1",
    simnet_port: int = 10009,
    simnet_nodes: tuple[NodeSpec, ...] = DEFAULT_NODES,
    seller_node: str = "satwatt",
    seller_macaroon: str = "admin",
    environ: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    simnet_autopay_ms: int | None = None,
    simnet_autopay_payer: str = "car1",
) -> LightningRuntime:
    """Start the backend named by ``kind`` (``CSMS_LIGHTNING_BACKEND``): "simnet" or "lnd".

    ``simnet_autopay_ms``: the simnet's node ``simnet_autopay_payer`` pays every invoice of the
    seller node that many milliseconds after its creation (fleet benchmarks; None = off)."""
    if kind == "lnd":
        return LightningRuntime(backend=LndBackend(LndConfig.from_env(environ), retry=retry))
    if kind != "simnet":
        raise ValueError(f"unknown Lightning backend {kind!r}; one of {', '.join(BACKEND_KINDS)}")
    autopay = None
    if simnet_autopay_ms is not None:
        autopay = AutoPay(payer=simnet_autopay_payer, payee=seller_node, delay_s=simnet_autopay_ms / 1000)
    simnet = Simnet(
        Path(data_dir) / "simnet", host=simnet_host, port=simnet_port, nodes=simnet_nodes, autopay=autopay
    )
    await simnet.start()
    try:
        config = LndConfig.from_simnet(simnet, seller_node, seller_macaroon)
    except Exception:
        await simnet.stop()
        raise
    return LightningRuntime(backend=LndBackend(config, retry=retry), simnet=simnet)
