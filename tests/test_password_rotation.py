"""POST /api/v1/chargers/{id}/password: a new password sent through OCPP (1.6 AuthorizationKey as hex,
2.0.1 SecurityCtrlr.BasicAuthPassword) to the simulated chargers of chargepoint_sim, stored only when
the charger accepts it, shown once, never logged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from chargepoint_sim import ChargePoint, ChargePointOptions, create_charge_point
from tests.conftest import RunningServer
from tests.ocpp_clients import basic_auth
from tests.test_handshake import handshake_status

VERSIONS = ["1.6", "2.0.1"]
OLD_PASSWORD = "the-first-password-1"


@contextlib.asynccontextmanager
async def charger(
    server: RunningServer, api: httpx.AsyncClient, charger_id: str, version: str, **options: Any
) -> AsyncIterator[ChargePoint]:
    created = await api.post("/api/v1/chargers", json={"id": charger_id, "password": OLD_PASSWORD})
    assert created.status_code == 201, created.text
    cp = create_charge_point(
        ChargePointOptions(
            id=charger_id,
            csms_url=server.ocpp_url,
            protocol=version,
            password=OLD_PASSWORD,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
            call_timeout_s=5.0,
            **options,
        )
    )
    await cp.start()
    try:
        await cp.wait_online(10)
        yield cp
    finally:
        await cp.stop()


async def admitted(server: RunningServer, charger_id: str, password: str, version: str) -> bool:
    """Whether satwatt admits ``password`` for the charger (a refused handshake answers 401)."""
    subprotocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    try:
        async with websockets.connect(
            f"{server.ocpp_url}/{charger_id}",
            subprotocols=[subprotocol],  # type: ignore[list-item]
            additional_headers=basic_auth(charger_id, password),
            open_timeout=10,
        ):
            return True
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code == 401
        return False


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_new_random_password_is_sent_accepted_stored_and_never_logged(
    server: RunningServer, api: httpx.AsyncClient, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    charger_id = f"CP-rotate-{version}"
    async with charger(server, api, charger_id, version) as cp:
        first = cp.conn
        response = await api.post(f"/api/v1/chargers/{charger_id}/password")
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        answer = response.json()
        password = answer["password"]
        assert answer["status"] == "Accepted" and answer["protocol"] == version
        assert answer["configuration_key"] == (
            "AuthorizationKey" if version == "1.6" else "SecurityCtrlr.BasicAuthPassword"
        )
        assert len(password) == 20 and password != OLD_PASSWORD
        # the charger took it (1.6: decoded from hex) and reconnects with it
        assert cp.options.password == password
        await cp.wait_for(lambda: cp.online and cp.conn is not None and cp.conn is not first, 15)
        # satwatt now admits the new password only
        assert await admitted(server, charger_id, password, version)
        assert not await admitted(server, charger_id, OLD_PASSWORD, version)
        charger_json = (await api.get(f"/api/v1/chargers/{charger_id}")).json()
        assert charger_json["password_set"] is True and password not in str(charger_json)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "password changed through" in logged  # the change is logged, the secret is not
    assert password not in logged and password.encode().hex() not in logged.lower()


async def test_a_given_password_within_the_version_limits(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    async with charger(server, api, "CP-given", "2.0.1") as cp:
        chosen = "a-chosen-password:with|40@chars.abcdefgh"  # 40 characters: 2.0.1's maximum
        response = await api.post("/api/v1/chargers/CP-given/password", json={"password": chosen})
        assert response.status_code == 200, response.text
        assert response.json()["password"] == chosen and cp.options.password == chosen
    async with charger(server, api, "CP-given-16", "1.6") as cp:
        too_long = await api.post("/api/v1/chargers/CP-given-16/password", json={"password": "x" * 21})
        assert too_long.status_code == 422
        assert too_long.json()["errors"][0]["field"] == "password"
        for bad in ("short-password", "has a space in it!", "ümlaut-password-123"):
            refused = await api.post("/api/v1/chargers/CP-given-16/password", json={"password": bad})
            assert refused.status_code == 422, bad
        assert cp.options.password == OLD_PASSWORD  # nothing was sent


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_refused_password_is_not_stored(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-keeps-{version}"
    async with charger(server, api, charger_id, version, accept_new_password=False) as cp:
        response = await api.post(f"/api/v1/chargers/{charger_id}/password")
        assert response.status_code == 409, response.text
        problem = response.json()
        assert problem["reason"] == "rejected" and "password" not in problem
        assert cp.options.password == OLD_PASSWORD
    assert await admitted(server, charger_id, OLD_PASSWORD, version)


async def test_an_offline_or_unknown_charger(server: RunningServer, api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/chargers", json={"id": "CP-away", "password": OLD_PASSWORD})).is_success
    offline = await api.post("/api/v1/chargers/CP-away/password")
    assert offline.status_code == 409 and offline.json()["reason"] == "not_connected"
    assert (await api.post("/api/v1/chargers/CP-nobody/password")).status_code == 404
    assert await handshake_status(f"{server.ocpp_url}/CP-away") == 401  # still needs the old password
