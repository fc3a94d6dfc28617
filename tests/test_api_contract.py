"""The REST API against its own OpenAPI document (openapi/openapi.json), over real HTTP.

The named cases first (integers beyond 64 bits, Allow on 405, strict types, tariff windows, unreadable
bodies, what the document declares), then schemathesis over the committed document against a running
satwatt with every kind of credential: the operator key, a payer token and a walk-up session token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer
from tests.ocpp_clients import connect_charger
from tests.test_ocpp16 import register

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "openapi" / "openapi.json"
PROBLEM = "application/problem+json"
BEYOND_INT64 = 2**63


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def walk_up(server: RunningServer, charger_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as anyone:
        response = await anyone.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def test_integers_beyond_64_bits_are_refused_for_every_caller(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-int")
    async with connect_charger(server.ocpp_url, "CP-int", "2.0.1"):
        session = await walk_up(server, "CP-int")
        async with httpx.AsyncClient(base_url=server.http_url, headers=bearer(session["token"])) as driver:
            for client in (api, driver):
                assert_problem(await client.get(f"/api/v1/sessions?offset={BEYOND_INT64}"), 422, "offset")
                assert (await client.get(f"/api/v1/sessions?offset={BEYOND_INT64 - 1}")).json() == []
                events = f"/api/v1/sessions/{session['id']}/events"
                assert_problem(await client.get(f"{events}?after={BEYOND_INT64}"), 422, "after")
                assert_problem(
                    await client.get(events, headers={"Last-Event-ID": str(BEYOND_INT64)}),
                    422,
                    "Last-Event-ID",
                )
            assert_problem(
                await api.post(
                    "/api/v1/chargers/CP-int/commands",
                    json={"command": "unlock_connector", "connector_id": 2**31},
                ),
                422,
                "unlock_connector.connector_id",
            )
            assert_problem(
                await driver.post("/api/v1/sessions", json={"charger_id": "CP-int", "connector_id": 10**30}),
                422,
                "connector_id",
            )


async def test_405_names_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    for method, path, allowed in [
        ("OPTIONS", "/api/v1/chargers", "GET, POST"),
        ("PUT", "/api/v1/chargers/CP-1", "GET, PATCH, DELETE"),
        ("DELETE", "/api/v1/tariffs/default", "GET, PATCH"),
        ("TRACE", "/api/v1/sessions", "GET, POST"),
    ]:
        response = await api.request(method, path)
        assert_problem(response, 405)
        assert response.headers["allow"] == allowed, (method, path)


async def test_types_are_strict_and_whole_numbers_are_integers(api: httpx.AsyncClient) -> None:
    refused = await api.post("/api/v1/tariffs", json={"name": "x", "min_invoice_interval_s": True})
    assert_problem(refused, 422, "min_invoice_interval_s")
    assert_problem(await api.post("/api/v1/tariffs", json={"name": "x", "grace_s": "5"}), 422, "grace_s")
    assert_problem(await api.patch("/api/v1/tariffs/default", json={"grace_s": None}), 422, "grace_s")
    created = await api.post("/api/v1/tariffs", json={"name": "x", "grace_s": 5.0})
    assert created.status_code == 201 and created.json()["grace_s"] == 5
    tag = await api.post("/api/v1/id-tags", json={"id_tag": "T-1", "expires_at": 0})
    assert_problem(tag, 422, "expires_at")
    payer = await api.post("/api/v1/payers", json={"name": "x", "id_tags": "ABC"})
    assert_problem(payer, 422, "id_tags")


async def test_tariff_windows_are_hh_mm_as_documented(api: httpx.AsyncClient) -> None:
    def window(start: str, end: str) -> dict[str, Any]:
        schedule = {
            "zone": "Europe/Berlin",
            "windows": [{"start": start, "end": end, "price_msat_per_kwh": 1000}],
        }
        return {"name": "tou", "schedule": schedule}

    document = json.loads(DOCUMENT.read_text())
    end_schema = document["components"]["schemas"]["Window"]["properties"]["end"]
    for start, end in [("17:00", ""), ("17:00", "7:00"), ("17:00", "17:00\n"), ("24:00", "01:00")]:
        response = await api.post("/api/v1/tariffs", json=window(start, end))
        assert_problem(response, 422)
        fields = [e["field"] for e in response.json()["errors"]]
        assert all(f.startswith("schedule.windows.0.") for f in fields), fields
    assert re.fullmatch(end_schema["pattern"], "24:00") and not re.fullmatch(end_schema["pattern"], "")
    assert (await api.post("/api/v1/tariffs", json=window("22:00", "24:00"))).status_code == 201
    overlap = window("17:00", "21:00")
    overlap["schedule"]["windows"].append({"start": "20:00", "end": "22:00", "price_msat_per_kwh": 2000})
    assert_problem(await api.post("/api/v1/tariffs", json=overlap), 422, "schedule.windows[1]")


async def test_an_unreadable_body_is_a_422_problem(api: httpx.AsyncClient) -> None:
    for content in (b"\xff\xfe{", b'{"name": '):
        response = await api.post(
            "/api/v1/payers", content=content, headers={"Content-Type": "application/json"}
        )
        assert_problem(response, 422)


def test_the_document_declares_problems_and_credentials() -> None:
    document = json.loads(DOCUMENT.read_text())
    schemes = document["components"]["securitySchemes"]
    assert {"operatorKey", "payerToken", "sessionToken", "tokenQuery"} <= set(schemes)
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            name = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert set(response["content"]) == {PROBLEM}, name
                    assert response["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
            if not path.startswith("/api/"):
                continue
            if name == "POST /api/v1/sessions":
                assert operation["security"] == [], "a walk-up needs no credentials"
                continue
            assert operation["security"], name
            assert "401" in operation["responses"], name
            names = {n for requirement in operation["security"] for n in requirement}
            if path.startswith("/api/v1/sessions"):
                assert {"operatorKey", "payerToken", "sessionToken"} <= names, name
                assert "403" in operation["responses"], name
            else:
                assert names == {"operatorKey"}, name


# ------------------------------------------------------------------ schemathesis
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = 8
LIVE = ["--exclude-path-regex", "/events$"]
SUMMARY = re.compile(r"(\d+) generated, (\d+) passed")


async def run_schemathesis(
    server: RunningServer, token: str, workdir: Path, max_examples: int, selection: list[str]
) -> tuple[int, str]:
    """One schemathesis run (all checks, all phases) over the committed document; (exit code, output)."""
    arguments = [
        str(DOCUMENT),
        "--url",
        server.http_url,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        *selection,
    ]
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        *arguments,
        cwd=workdir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_schemathesis_finds_no_server_error_and_no_check_failure(
    server: RunningServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await register(api, "CP-contract")
    payer = (await api.post("/api/v1/payers", json={"name": "Fleet", "id_tags": ["FLEET-1"]})).json()
    async with connect_charger(server.ocpp_url, "CP-contract", "1.6"):
        session = await walk_up(server, "CP-contract")
        # The sessions' operations as a driver and as a payer, then everything as the operator. The live
        # session's event stream lasts until the session ends, so only the payer (who may not see it) runs
        # requests against /events; tests above cover its parameters.
        runs = [
            ("session token", session["token"], 5, ["--include-path-regex", "^/api/v1/sessions", *LIVE]),
            ("payer token", payer["token"], 5, ["--include-path-regex", "^/api/v1/sessions"]),
            ("operator key", server.api_key, 5, LIVE),
        ]
        for name, token, examples, selection in runs:
            code, output = await run_schemathesis(server, token, tmp_path, examples, selection)
            counts = SUMMARY.search(output)
            assert code == 0 and counts is not None, f"schemathesis as {name}:\n{output[-6000:]}"
            assert counts.group(1) == counts.group(2), output[-3000:]
            print(f"schemathesis as {name}: {counts.group(1)} generated, {counts.group(2)} passed")
            assert "Server error" not in output
