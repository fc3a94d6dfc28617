"""The OCPP-J handshake: charger ids, HTTP Basic auth, subprotocol choice, newest connection wins."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import websockets
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from csms.settings import Settings
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import basic_auth, connect_charger
from tests.test_ocpp16 import register


async def handshake_status(
    url: str, headers: dict[str, str] | None = None, subprotocols: list[str] | None = None
) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            url,
            subprotocols=subprotocols or ["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=headers or {},
            open_timeout=10,
        ):
            pass
    return refused.value.response.status_code


async def test_unknown_charger_is_refused_with_401(server: RunningServer) -> None:
    assert await handshake_status(f"{server.ocpp_url}/nobody") == 401


async def test_password_is_required_and_checked(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-secure", "s3cret-password-1")
    url = f"{server.ocpp_url}/CP-secure"
    assert await handshake_status(url) == 401
    assert await handshake_status(url, basic_auth("CP-secure", "wrong-password")) == 401
    assert await handshake_status(url, basic_auth("other-id", "s3cret-password-1")) == 401
    assert await handshake_status(url, {"Authorization": "Basic !!!not-base64"}) == 401
    async with connect_charger(server.ocpp_url, "CP-secure", "1.6", "s3cret-password-1") as cp:
        assert (await cp.call(call16.Heartbeat())).current_time
    charger = (await api.get("/api/v1/chargers/CP-secure")).json()
    assert charger["password_set"] is True
    listing = (await api.get("/api/v1/chargers")).json()
    assert "s3cret" not in str(listing)


async def test_unknown_chargers_admitted_when_allowed(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=database_url, allow_unknown_chargers=True, simnet_port=0
    )
    uv, task, port = await start_server(settings, "k")
    try:
        async with connect_charger(f"ws://127.0.0.1:{port}/ocpp", "walk-in", "2.0.1") as cp:
            assert (await cp.call(call201.Heartbeat())).current_time
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer k"}
        ) as c:
            charger = (await c.get("/api/v1/chargers/walk-in")).json()
        assert charger["registered"] is False and charger["protocol"] == "2.0.1"
    finally:
        uv.should_exit = True
        await task


async def test_invalid_charger_id_is_refused(server: RunningServer) -> None:
    assert await handshake_status(f"{server.ocpp_url}/{'x' * 49}") == 404


async def test_server_prefers_201_whatever_the_client_order(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-both")
    async with websockets.connect(f"{server.ocpp_url}/CP-both", subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"
    async with websockets.connect(f"{server.ocpp_url}/CP-both", subprotocols=["ocpp1.5", "ocpp1.6"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp1.6"


async def test_no_common_subprotocol_completes_handshake_then_closes(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-old")
    async with websockets.connect(
        f"{server.ocpp_url}/CP-old",
        subprotocols=["ocpp1.5"],  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        # websockets (the client) accepts a response without Sec-WebSocket-Protocol
        assert ws.subprotocol is None
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002


async def test_newest_connection_wins(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-twice")
    async with (
        connect_charger(server.ocpp_url, "CP-twice", "1.6") as old,
        connect_charger(server.ocpp_url, "CP-twice", "1.6") as new,
    ):
        await old._connection.wait_closed()
        assert old._connection.close_code == 1000
        assert (await new.call(call16.Heartbeat())).current_time
        charger = (await api.get("/api/v1/chargers/CP-twice")).json()
        assert charger["connection_state"] == "connected"


async def test_same_id_reconnects_with_another_version(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-upgrade")
    async with connect_charger(server.ocpp_url, "CP-upgrade", "1.6") as cp:
        await cp.call(
            call16.BootNotification(
                charge_point_vendor="Acme", charge_point_model="A", firmware_version="1.0"
            )
        )
    assert (await api.get("/api/v1/chargers/CP-upgrade")).json()["protocol"] == "1.6"
    async with connect_charger(server.ocpp_url, "CP-upgrade", "2.0.1") as cp:
        await cp.call(
            call201.BootNotification(
                charging_station={"model": "A", "vendor_name": "Acme", "firmware_version": "2.0"},
                reason="FirmwareUpdate",
            )
        )
        charger = (await api.get("/api/v1/chargers/CP-upgrade")).json()
    assert charger["protocol"] == "2.0.1" and charger["firmware_version"] == "2.0"
