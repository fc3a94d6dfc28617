"""The shim over wss:// to a satwatt with its own (self-signed) certificate: ``charge_point.ca_file``."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from chargepoint_sim.shim.config import ConfigError, load_config
from lightning.simnet.tls import ensure_tls_cert
from tests.shim.conftest import until, write_config
from tests.shim.test_shim_satwatt import running
from tests.test_charger_security import Pki, satwatt
from tests.test_charger_security import pki as pki  # the fixture: a CA, satwatt's certificate, a rogue CA
from tests.test_charger_security import register as register_charger

TOML = """
[charge_point]
id = "CP-wss"
csms_url = "{url}"
protocol = "2.0.1"
{tls}
[meter]
driver = "simulated"
[relay]
driver = "file"
path = "{relay}"
[offline]
queue = "{queue}"
"""


async def shim_admitted(api: httpx.AsyncClient, config: Path, what: str) -> None:
    """Run the shim of ``config`` (charger CP-wss) until satwatt shows it connected and its boot accepted."""
    async with running(config) as shim:

        async def connected() -> bool:
            return (await api.get("/api/v1/chargers/CP-wss")).json()["connection_state"] == "connected"

        await until(connected, what=what)
        cp = shim.cp
        assert cp is not None
        await until(lambda: cp.online, what="its boot accepted")


async def test_wss_with_the_certificate_of_satwatt(database_url: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "satwatt.crt", tmp_path / "satwatt.key"
    ensure_tls_cert(cert, key)
    async with (
        satwatt(database_url, tmp_path, tls_cert=cert, tls_key=key) as server,
        httpx.AsyncClient(
            base_url=f"https://localhost:{server.port}",
            verify=ssl.create_default_context(cafile=str(cert)),
            headers={"Authorization": "Bearer security-key"},
        ) as api,
    ):
        await register_charger(api, "CP-wss", "a-long-tls-secret-1")
        config = write_config(
            tmp_path / "shim.toml",
            TOML.format(
                url=f"wss://localhost:{server.port}/ocpp",
                tls=f'password = "a-long-tls-secret-1"\nca_file = "{cert}"',
                relay=tmp_path / "relay",
                queue=tmp_path / "q.sqlite3",
            ),
        )
        await shim_admitted(api, config, "the shim connected over wss://")


def test_tls_keys_are_checked(tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    cert.write_text("x")
    for url, tls, message in (
        ("ws://h/ocpp", f'ca_file = "{cert}"', "charge_point.ca_file: is only used with a wss:// csms_url"),
        ("wss://h/ocpp", f'ca_file = "{tmp_path / "nope.crt"}"', "charge_point.ca_file: no such file"),
        ("wss://h/ocpp", f'client_cert = "{cert}"', "charge_point.client_key: client_cert and client_key go"),
    ):
        config = write_config(
            tmp_path / "shim.toml",
            TOML.format(url=url, tls=tls, relay=tmp_path / "relay", queue=tmp_path / "q.sqlite3"),
        )
        with pytest.raises(ConfigError) as err:
            load_config(config)
        assert str(err.value).startswith(message), str(err.value)


async def test_wss_with_a_client_certificate(database_url: str, tmp_path: Path, pki: Pki) -> None:
    """OCPP security profile 3: no password, the certificate's CN is the charger's id."""
    client = pki.ca.issue("CP-wss")
    async with (
        satwatt(
            database_url,
            tmp_path,
            tls_cert=pki.server.cert,
            tls_key=pki.server.key,
            tls_client_ca=pki.ca.path,
        ) as server,
        httpx.AsyncClient(
            base_url=f"https://localhost:{server.port}",
            verify=pki.client_context(),
            headers={"Authorization": "Bearer security-key"},
        ) as api,
    ):
        await register_charger(api, "CP-wss")
        config = write_config(
            tmp_path / "shim.toml",
            TOML.format(
                url=f"wss://localhost:{server.port}/ocpp",
                tls=f'ca_file = "{pki.ca.path}"\nclient_cert = "{client.cert}"\nclient_key = "{client.key}"',
                relay=tmp_path / "relay",
                queue=tmp_path / "q.sqlite3",
            ),
        )
        await shim_admitted(api, config, "the shim admitted by its certificate")
