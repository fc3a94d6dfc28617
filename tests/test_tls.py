"""TLS: satwatt serves wss:// and https:// with CSMS_TLS_CERT / CSMS_TLS_KEY, and HTTP Basic auth works
over it (OCPP security profile 2: a TLS server certificate plus the charger's password)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import websockets

from csms.settings import Settings
from lightning.simnet.tls import ensure_tls_cert
from tests.conftest import start_server
from tests.ocpp_clients import basic_auth


async def test_wss_and_https_with_a_server_certificate(database_url: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "satwatt.crt", tmp_path / "satwatt.key"
    ensure_tls_cert(cert, key)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, simnet_port=0, tls_cert=cert, tls_key=key
    )
    server, task, port = await start_server(settings, "tls-key")
    context = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(
            base_url=f"https://localhost:{port}", verify=context, headers={"Authorization": "Bearer tls-key"}
        ) as api:
            assert (await api.get("/healthz")).json()["database"] == "ok"
            created = await api.post("/api/v1/chargers", json={"id": "CP-tls", "password": "tls-secret-123"})
            assert created.status_code == 201
        async with websockets.connect(
            f"wss://localhost:{port}/ocpp/CP-tls",
            ssl=context,
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers=basic_auth("CP-tls", "tls-secret-123"),
        ) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
        with pytest.raises(ssl.SSLError):  # a client that does not trust the certificate is refused
            async with websockets.connect(
                f"wss://localhost:{port}/ocpp/CP-tls",
                ssl=ssl.create_default_context(),
                subprotocols=["ocpp2.0.1"],
            ):  # type: ignore[list-item]
                pass
    finally:
        server.should_exit = True
        await task


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    from csms.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="CSMS_TLS_CERT and CSMS_TLS_KEY must be set together"):
        load_settings(tls_cert=tmp_path / "missing.crt")
