"""start_lightning: the embedded simnet by default, a real LND from the environment otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning import Backend, InvoiceState
from lightning.factory import start_lightning
from lightning.lnd import LndBackend, LndConfigError


async def test_simnet_runtime(tmp_path: Path) -> None:
    runtime = await start_lightning("simnet", data_dir=tmp_path, simnet_port=0)
    try:
        assert isinstance(runtime.backend, Backend) and runtime.simnet is not None
        assert (await runtime.backend.get_info()).alias == "satwatt"
        invoice = await runtime.backend.create_invoice(1_000)
        assert (await runtime.backend.lookup_invoice(invoice.payment_hash)).state is InvoiceState.OPEN
        text = runtime.describe()
        assert str(tmp_path / "simnet" / "tls.cert") in text
        assert str(tmp_path / "simnet" / "car1" / "admin.macaroon") in text
        assert (tmp_path / "simnet" / "car1" / "invoice.macaroon").exists()
    finally:
        await runtime.close()


async def test_lnd_runtime_from_env(tmp_path: Path) -> None:
    with pytest.raises(LndConfigError, match="CSMS_LND_CONNECT"):
        await start_lightning("lnd", environ={})
    with pytest.raises(ValueError, match="unknown Lightning backend"):
        await start_lightning("eclair", data_dir=tmp_path)
    # Point it at a simnet through the environment, as an operator would with a real node.
    simnet_runtime = await start_lightning("simnet", data_dir=tmp_path, simnet_port=0)
    try:
        assert simnet_runtime.simnet is not None
        env = {"CSMS_LND_CONNECT": simnet_runtime.simnet.lndconnect_uri("wallet")}
        runtime = await start_lightning("lnd", environ=env)
        try:
            assert isinstance(runtime.backend, LndBackend) and runtime.simnet is None
            assert (await runtime.backend.get_info()).alias == "wallet"
            assert "LND at" in runtime.describe()
        finally:
            await runtime.close()
    finally:
        await simnet_runtime.close()
