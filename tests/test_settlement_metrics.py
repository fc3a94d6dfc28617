"""Settlement's histograms and counters on /metrics count real events: a paid session over a real
websocket, REST, server-sent events and the simnet's gRPC, suspended for not paying and resumed by its
payment (no timing is asserted: the figures belong to bench/)."""

from __future__ import annotations

import asyncio

import httpx
from ocpp.v16 import call as call16
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger
from tests.sessions_helpers import EventReader, follow_events, pay, payer_node
from tests.test_ocpp16 import register
from tests.test_settlement_flow import Meter, sell_at


async def scrape(api: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics by (name, labels), parsed by prometheus_client's own parser."""
    reply = await api.get("/metrics")
    assert reply.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of a sample over its labels (a histogram's ``_count`` over every ``fact``)."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


async def count_of(events: EventReader, kind: str, n: int) -> None:
    """Wait until ``n`` events of ``kind`` have arrived (in whatever order with other kinds)."""
    async with asyncio.timeout(20), events.changed:
        await events.changed.wait_for(lambda: len(events.of(kind)) >= n)


def requests_by_fact(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["fact"]: value
        for (name, labels), value in samples.items()
        if name == "satwatt_invoice_request_seconds_count" and value
    }


async def test_histograms_count_an_invoice_a_suspension_and_a_paid_resume(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    charger_id = "CP-metrics"
    await register(api, charger_id)
    await sell_at(api, charger_id)
    payer = (await api.post("/api/v1/payers", json={"name": "Ann", "id_tags": ["ANN-CARD"]})).json()
    simnet = server.app.state.lightning.simnet

    before = await scrape(api)
    assert total(before, "satwatt_invoices_issued_total") == 0
    assert total(before, "satwatt_invoices_settled_total") == 0
    assert total(before, "satwatt_resume_seconds_count") == 0
    assert total(before, "satwatt_invoice_request_seconds_count") == 0

    async with connect_charger(server.ocpp_url, charger_id, "1.6") as cp, payer_node(simnet, "car2") as car:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="ANN-CARD", meter_start=1000, timestamp=at(0))
        )
        (session,) = (
            await api.get("/api/v1/sessions", headers={"Authorization": f"Bearer {payer['token']}"})
        ).json()
        async with follow_events(server.http_url, session["id"], payer["token"]) as events:
            # the transaction's start decides the first invoice
            first = (await events.next("invoice")).data
            started = await scrape(api)
            assert total(started, "satwatt_invoices_issued_total") == 1
            assert requests_by_fact(started) == {"started": 1}
            assert total(started, "satwatt_resume_seconds_count") == 0

            # past the allowance unpaid: cut; a suspension is not a resume
            metering = Meter(cp, "1.6", str(start.transaction_id))
            await metering.send(1060, 7000)
            await events.next("suspended")
            await cp.recorder.wait_for("SetChargingProfile")
            assert total(await scrape(api), "satwatt_resume_seconds_count") == 0

            # the payment arrives on the invoice stream: credited once, and the power comes back
            await pay(car, first["bolt11"])
            await count_of(events, "paid", 1)
            await count_of(events, "resumed", 1)
            await cp.recorder.wait_for("ClearChargingProfile")
            resumed = await scrape(api)
            assert total(resumed, "satwatt_invoices_settled_total") == 1
            assert total(resumed, "satwatt_resume_seconds_count") == 1
            assert total(resumed, "satwatt_resume_seconds_sum") > 0
            # a resume's bucket counts are cumulative: the +Inf bucket holds it
            assert resumed[("satwatt_resume_seconds_bucket", (("le", "+Inf"),))] == 1

            # the payment also decided the next invoice (the node's lane, beside the charger's): every
            # invoice issued was timed from the fact that decided it, by its kind
            await count_of(events, "invoice", 2)
            issued = await scrape(api)
            assert total(issued, "satwatt_invoices_issued_total") == 2
            assert requests_by_fact(issued) == {"started": 1, "payment": 1}
            assert total(issued, "satwatt_invoices_settled_total") == 1
