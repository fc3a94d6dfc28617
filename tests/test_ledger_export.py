"""The operator's ledger over all sessions (``GET /api/v1/ledger``), over real HTTP on the simnet: every
paid invoice and paid refund of a period, traced to each session's own ledger, with exact totals, as JSON
and as CSV; the window's edges; and what it refuses."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from csms import lnurl
from csms.api.csv_export import csv_response
from lightning.errors import PaymentFailed
from tests.conftest import RunningServer
from tests.lnurl.test_deposit_flow import DEPOSIT
from tests.lnurl.test_lnurl_flow import surplus_session, wait_for, wallet_of
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import follow_events, pay
from tests.test_ocpp16 import register
from tests.test_settlement_flow import Meter, sell_at, start_remote

LEDGER = "/api/v1/ledger"
COLUMNS = [
    "at",
    "kind",
    "direction",
    "session_id",
    "charger_id",
    "key",
    "payment_hash",
    "amount_msat",
    "energy_wh",
    "fee_msat",
]
PROBLEM = "application/problem+json"


async def export(api: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await api.get(LEDGER, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def session_ledger(api: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/sessions/{session_id}/ledger")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def moments(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    """The money movements of one session, as its own ledger shows them: its paid invoices and paid
    refunds, as rows of the operator's ledger."""
    session = ledger["session"]
    common = {"session_id": session["id"], "charger_id": session["charger_id"]}
    rows = [
        {
            "at": i["paid_at"],
            "kind": i["kind"],
            "direction": "in",
            **common,
            "key": i["key"],
            "payment_hash": i["payment_hash"],
            "amount_msat": i["amount_msat"],
            "energy_wh": i["energy_wh"],
            "fee_msat": i["fee_msat"],
        }
        for i in ledger["invoices"]
        if i["status"] == "paid"
    ]
    rows += [
        {
            "at": r["paid_at"],
            "kind": "refund",
            "direction": "out",
            **common,
            "key": r["key"],
            "payment_hash": r["payment_hash"],
            "amount_msat": r["amount_msat"],
            "energy_wh": 0,
            "fee_msat": r["fee_msat"],
        }
        for r in ledger["refunds"]
        if r["status"] == "paid"
    ]
    return rows


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def in_time_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (when(r["at"]), r["direction"] == "out"))


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    received = sum(r["amount_msat"] for r in rows if r["direction"] == "in")
    refunded = sum(r["amount_msat"] for r in rows if r["direction"] == "out")
    fees = sum(r["fee_msat"] for r in rows if r["direction"] == "out")
    return {
        "received_msat": received,
        "refunded_msat": refunded,
        "routing_fees_msat": fees,
        "net_msat": received - refunded - fees,
        "energy_wh": sum(r["energy_wh"] for r in rows if r["direction"] == "in"),
    }


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def refunded_session(server: RunningServer, api: httpx.AsyncClient, charger_id: str) -> str:
    """An invoice-stream session (10 sat paid for 100 Wh, 40 Wh used) whose 6 sat surplus the driver's
    wallet withdrew from the receipt: a paid refund. Its id."""
    simnet = server.app.state.lightning.simnet
    created = await surplus_session(server.http_url, server.ocpp_url, api, charger_id, simnet)
    k1 = server.app.state.settlement.withdraw_k1(created["id"])
    async with wallet_of(server, "car2") as wallet:
        offer = await wallet.scan(lnurl.lightning_uri(f"{server.http_url}/lnurlw/{created['id']}?k1={k1}"))
        assert (await wallet.withdraw(offer)).amount_paid_msat == 6_000

    async def refund_recorded() -> bool:
        refunds = (await session_ledger(api, created["id"]))["refunds"]
        return [r["status"] for r in refunds] == ["paid"]

    await wait_for(refund_recorded)
    return str(created["id"])


async def deposit_session(server: RunningServer, api: httpx.AsyncClient, charger_id: str) -> str:
    """A walk-up on a hold-invoice deposit: 2 kWh charged, the final invoice paid, so the deposit is
    canceled (it moved nothing). Its id."""
    await register(api, charger_id)
    await sell_at(api, charger_id, session_fee_msat=5_000, **DEPOSIT)
    async with (
        connect_charger(server.ocpp_url, charger_id, "1.6") as cp,
        wallet_of(server, "car1") as wallet,
        httpx.AsyncClient(base_url=server.http_url) as driver,
    ):
        created = (
            await driver.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
        ).json()
        assert created["invoice"]["kind"] == "deposit"
        async with follow_events(server.http_url, created["id"], created["token"]) as events:
            held = asyncio.create_task(
                wallet.node.pay_invoice(created["invoice"]["bolt11"], fee_limit_msat=300_000, timeout_s=120)
            )
            tx = await start_remote(cp, "1.6")  # power on once the deposit's HTLC is held
            meter = Meter(cp, "1.6", tx)
            await meter.send(1_000)
            await meter.stop(2_000)
            final = (await events.next("invoice")).data
            while final["kind"] != "final":
                final = (await events.next("invoice")).data
            await pay(wallet.node, final["bolt11"])
            with pytest.raises(PaymentFailed):  # the deposit canceled: its sats went back
                await asyncio.wait_for(held, 30)
            assert (await events.next("closed")).data["outcome"] == "settled"
    return str(created["id"])


async def test_the_export_lists_every_payment_and_refund_of_the_period_as_the_sessions_ledgers_do(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    started = datetime.now(UTC)
    refunded_id = await refunded_session(server, api, "CP-books-1")
    # an invoice's paid_at is the node's settle time, in whole seconds: the next session's payments
    # start in the next second, so that they are after the refund (which satwatt stamps to the us)
    await asyncio.sleep(1.01 - datetime.now(UTC).microsecond / 1_000_000)
    deposit_id = await deposit_session(server, api, "CP-books-2")
    first, second = (await session_ledger(api, refunded_id)), (await session_ledger(api, deposit_id))

    # what each session's ledger says moved: A paid 10 sat for 100 Wh and got 6 sat back (the operator
    # paid the routing fee on top); B's deposit was canceled (not money received), its final invoice paid
    expected = in_time_order(moments(first) + moments(second))
    assert [(r["kind"], r["direction"], r["amount_msat"], r["energy_wh"]) for r in moments(first)] == [
        ("increment", "in", 10_000, 100),
        ("refund", "out", 6_000, 0),
    ]
    (refund,) = first["refunds"]
    assert refund["fee_msat"] > 0  # the simnet charges a routing fee per hop
    deposit = next(i for i in second["invoices"] if i["kind"] == "deposit")
    assert deposit["status"] == "canceled"
    (final,) = moments(second)
    assert final["kind"] == "final" and final["energy_wh"] == 2_000 and final["fee_msat"] == 5_000
    assert final["amount_msat"] == 2_005_000

    # the operator's ledger of the default window (the last 30 days): exactly those, in time order
    body = await export(api)
    assert body["movements"] == expected
    assert deposit["key"] not in [m["key"] for m in body["movements"]]
    assert body["totals"] == totals(expected)
    assert body["totals"] == {
        "received_msat": 10_000 + 2_005_000,
        "refunded_msat": 6_000,
        "routing_fees_msat": refund["fee_msat"],
        "net_msat": 10_000 + 2_005_000 - 6_000 - refund["fee_msat"],
        "energy_wh": 100 + 2_000,
    }
    until, since = when(body["until"]), when(body["since"])
    assert until - since == timedelta(days=30) and started <= until <= datetime.now(UTC)

    # CSV: the same rows under a header, named by the window's dates (in UTC)
    window = {"since": "2000-01-01T00:00:00+01:00", "until": iso(datetime.now(UTC) + timedelta(hours=1))}
    assert (await export(api, **window))["movements"] == expected
    exported = await api.get(LEDGER, params={**window, "format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    end = (datetime.now(UTC) + timedelta(hours=1)).date()
    assert exported.headers["content-disposition"] in {
        f'attachment; filename="satwatt-ledger-1999-12-31-{day.isoformat()}.csv"'
        for day in (end - timedelta(days=1), end)
    }
    reader = csv.DictReader(io.StringIO(exported.text))
    assert reader.fieldnames == COLUMNS
    assert list(reader) == [{k: str(v) for k, v in row.items()} for row in expected]
    # (the session's own CSV, which shares the CSV writer, is as it was: its invoices, then its refund)
    own = await api.get(f"/api/v1/sessions/{refunded_id}/ledger", params={"format": "csv"})
    assert own.headers["content-disposition"] == f'attachment; filename="satwatt-{refunded_id}.csv"'
    own_rows = list(csv.DictReader(io.StringIO(own.text)))
    assert [r["key"] for r in own_rows] == [i["key"] for i in first["invoices"]] + [refund["key"]]
    assert (own_rows[-1]["kind"], own_rows[-1]["amount_msat"], own_rows[-1]["fee_msat"]) == (
        "refund",
        "6000",
        "0",
    )

    # the window: since included, until excluded, in any time zone
    refund_at = when(refund["paid_at"])
    before_refund = await export(api, until=iso(refund_at.astimezone(timezone(timedelta(hours=2)))))
    assert before_refund["movements"] == expected[:1] and expected[0]["kind"] == "increment"
    assert before_refund["totals"] == {
        **totals([]),
        "received_msat": 10_000,
        "net_msat": 10_000,
        "energy_wh": 100,
    }
    just_the_refund = await export(api, since=iso(refund_at), until=final["at"])
    assert just_the_refund["movements"] == [r for r in expected if r["kind"] == "refund"]
    assert just_the_refund["totals"] == {
        "received_msat": 0,
        "refunded_msat": 6_000,
        "routing_fees_msat": refund["fee_msat"],
        "net_msat": -6_000 - refund["fee_msat"],
        "energy_wh": 0,
    }
    assert (await export(api, since=final["at"]))["movements"] == [final]
    long_ago = await export(api, since="2020-01-01T00:00:00Z", until="2020-02-01T00:00:00Z")
    assert long_ago["movements"] == [] and set(long_ago["totals"].values()) == {0}
    empty_csv = await api.get(LEDGER, params={"until": "2020-02-01T00:00:00Z", "format": "csv"})
    assert empty_csv.text.splitlines() == [",".join(COLUMNS)]
    assert empty_csv.headers["content-disposition"] == (
        'attachment; filename="satwatt-ledger-2020-01-02-2020-02-01.csv"'
    )


async def test_the_export_is_the_operators_and_refuses_a_bad_window(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-books-auth")
    payer = (await api.post("/api/v1/payers", json={"name": "Fleet", "id_tags": ["BOOKS-1"]})).json()
    async with (
        connect_charger(server.ocpp_url, "CP-books-auth", "1.6"),
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        walk_up = (
            await anyone.post("/api/v1/sessions", json={"charger_id": "CP-books-auth", "connector_id": 1})
        ).json()
        nobody = await anyone.get(LEDGER)
        assert nobody.status_code == 401 and nobody.headers["content-type"] == PROBLEM
        for token in (walk_up["token"], payer["token"], "not-a-token"):
            refused = await anyone.get(LEDGER, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM, refused.text
        # the driver still sees their own session's ledger
        own = await anyone.get(
            f"/api/v1/sessions/{walk_up['id']}/ledger",
            headers={"Authorization": f"Bearer {walk_up['token']}"},
        )
        assert own.status_code == 200

    async def refused(field: str, **params: str) -> str:
        response = await api.get(LEDGER, params=params)
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM, response.text
        problem = response.json()
        assert [e["field"] for e in problem["errors"]] == [field], problem
        message: str = problem["errors"][0]["message"]
        return message

    assert "must be before until" in await refused(
        "since", since="2026-02-01T00:00:00Z", until="2026-01-01T00:00:00Z"
    )
    assert "must be before until" in await refused(
        "since",
        since="2026-01-01T01:00:00+01:00",
        until="2026-01-01T00:00:00Z",  # the same moment
    )
    future = iso(datetime.now(UTC) + timedelta(days=1))
    assert "must be before until" in await refused("since", since=future)  # until is now
    assert "ISO 8601" in await refused("since", since="yesterday")
    assert "ISO 8601" in await refused("since", since="1767225600")  # Unix seconds are no date here
    assert "timezone" in await refused("until", until="2026-01-01T00:00:00")  # whose midnight?
    await refused("until", until="2026-02-30T00:00:00Z")
    await refused("format", format="xlsx")
    # the edges of the calendar: clamped to what UTC can hold, never an error
    widest = await export(api, since="0001-01-01T00:00:00+05:00", until="9999-12-31T23:59:59-05:00")
    assert widest["movements"] == [] and widest["since"].startswith("0001-01-01T00:00:00")


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_kept_as_text() -> None:
    rows = [
        {"charger_id": "=HYPERLINK(1)", "amount_msat": -5},
        {"charger_id": "+CP", "amount_msat": 6_000},
        {"charger_id": "-CP", "amount_msat": 0},
        {"charger_id": "@CP", "amount_msat": 1},
        {"charger_id": "CP-1", "amount_msat": 2},
    ]
    response = csv_response(rows, ("charger_id", "amount_msat"), "x.csv")
    assert bytes(response.body).decode().splitlines() == [
        "charger_id,amount_msat",
        "'=HYPERLINK(1),-5",  # numbers stay numbers
        "'+CP,6000",
        "'-CP,0",
        "'@CP,1",
        "CP-1,2",
    ]
