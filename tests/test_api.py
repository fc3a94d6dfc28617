"""The REST API: operator authentication, problem responses, the charger registry."""

from __future__ import annotations

import httpx

from tests.conftest import RunningServer


async def test_operator_key_is_required(server: RunningServer) -> None:
    async with server.api(key=None) as anonymous:
        response = await anonymous.get("/api/v1/chargers")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    async with server.api(key="wrong-key") as wrong:
        assert (await wrong.get("/api/v1/chargers")).status_code == 401
        # sessions also take driver and payer tokens: an unknown token is refused as forbidden
        assert (await wrong.get("/api/v1/sessions")).status_code == 403
    async with server.api(key=None) as anonymous:
        assert (await anonymous.get("/healthz")).json()["status"] == "ok"


async def test_register_list_update_delete(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/chargers", json={"id": "CP-1", "password": "twelve-chars"})
    assert created.status_code == 201 and created.headers["location"] == "/api/v1/chargers/CP-1"
    charger = created.json()
    assert charger["connection_state"] == "never_connected" and charger["password_set"] is True
    assert "password" not in charger and "password_hash" not in charger
    duplicate = await api.post("/api/v1/chargers", json={"id": "CP-1"})
    assert duplicate.status_code == 409 and duplicate.json()["title"] == "Charger already registered"
    await api.post("/api/v1/chargers", json={"id": "CP-2"})
    assert [c["id"] for c in (await api.get("/api/v1/chargers")).json()] == ["CP-1", "CP-2"]
    patched = await api.patch("/api/v1/chargers/CP-1", json={"remove_password": True, "lenient": True})
    assert patched.json()["password_set"] is False and patched.json()["lenient"] is True
    assert (await api.delete("/api/v1/chargers/CP-2")).status_code == 204
    missing = await api.get("/api/v1/chargers/CP-2")
    assert missing.status_code == 404 and missing.json()["status"] == 404


async def test_bad_input_gets_problems_naming_the_field(api: httpx.AsyncClient) -> None:
    for body, field in [
        ({"id": "has space"}, "id"),
        ({"id": "x" * 49}, "id"),
        ({"id": "ok", "password": "short"}, "password"),
        ({"id": "ok", "surprise": 1}, "surprise"),
        ({}, "id"),
    ]:
        response = await api.post("/api/v1/chargers", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
    not_json = await api.post(
        "/api/v1/chargers", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    bad_state = await api.get("/api/v1/sessions", params={"state": "flying"})
    assert bad_state.status_code == 422 and bad_state.json()["errors"][0]["field"] == "state"
    bad_limit = await api.get("/api/v1/sessions", params={"limit": 0})
    assert bad_limit.status_code == 422 and bad_limit.json()["errors"][0]["field"] == "limit"
    naive = await api.post("/api/v1/id-tags", json={"id_tag": "T", "expires_at": "2030-01-01T00:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "expires_at"
    assert (await api.get("/api/v1/sessions/nope")).status_code == 404


async def test_id_tags(api: httpx.AsyncClient) -> None:
    assert (
        await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1", "status": "Blocked"})
    ).status_code == 201
    assert (await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})).json()["status"] == "Accepted"
    assert [t["id_tag"] for t in (await api.get("/api/v1/id-tags")).json()] == ["CARD-1"]
    assert (await api.delete("/api/v1/id-tags/CARD-1")).status_code == 204
    assert (await api.delete("/api/v1/id-tags/CARD-1")).status_code == 404
