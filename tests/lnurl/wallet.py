"""A phone wallet's side of LNURL, written from the LUD documents (lnurl/luds 01, 03, 06, 09, 17), not
from satwatt's code: it decodes the bech32 LNURL itself, checks what LUD-06 tells a wallet to check
(the invoice's description hash is sha256 of the metadata string, its amount is the one asked for),
and pays or receives with its own Lightning node (a simnet node over LND's gRPC)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import bech32
import bolt11
import httpx

from lightning import Invoice, InvoiceState
from lightning.lnd import LndBackend


class LnurlRefused(Exception):
    """The service answered ``{"status": "ERROR", "reason": ...}``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_lnurl(text: str) -> str:
    """LUD-01: ``lightning:LNURL1...`` (or bare) to its URL; LUD-17 ``lnurlp://``/``lnurlw://`` to https
    (http for a local test server)."""
    text = text.strip()
    if text.lower().startswith(("https://", "http://")):  # LUD-01's fallback: the LNURL as ?lightning=
        found = parse_qs(urlsplit(text).query).get("lightning")
        assert found, f"a web address without an LNURL: {text}"
        text = found[0]
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:") :]
    for scheme in ("lnurlp://", "lnurlw://", "lnurlc://", "keyauth://"):
        if text.lower().startswith(scheme):
            rest = text[len(scheme) :]
            local = rest.startswith(("127.0.0.1", "localhost"))
            return ("http://" if local else "https://") + rest
    lowered = text.lower()
    hrp, _, data_part = lowered.rpartition("1")
    assert hrp == "lnurl", f"not an LNURL: {text[:20]}"
    data = [bech32.CHARSET.find(c) for c in data_part]
    assert -1 not in data and bech32.bech32_verify_checksum(hrp, data), "bad LNURL checksum"
    decoded = bech32.convertbits(data[:-6], 5, 8, False)
    assert decoded is not None
    return bytes(decoded).decode("utf-8")


def _with_query(url: str, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


@dataclass
class PayResult:
    pr: str
    payment_hash: str
    success_action: dict[str, Any] | None


@dataclass
class Wallet:
    node: LndBackend
    http: httpx.AsyncClient

    async def scan(self, lnurl: str, **params: str) -> dict[str, Any]:
        """LUD-01 step 2: GET the decoded URL; an ERROR answer raises LnurlRefused."""
        url = decode_lnurl(lnurl)
        if params:
            url = _with_query(url, **params)
        response = await self.http.get(url)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body.get("status") == "ERROR":
            raise LnurlRefused(body["reason"])
        return body

    async def get(self, url: str) -> dict[str, Any]:
        response = await self.http.get(url)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body.get("status") == "ERROR":
            raise LnurlRefused(body["reason"])
        return body

    async def pay(self, offer: dict[str, Any], amount_msat: int) -> PayResult:
        """LUD-06 steps 4-10 on a payRequest: ask for the invoice, check it, pay it."""
        assert offer["tag"] == "payRequest"
        assert offer["minSendable"] <= amount_msat <= offer["maxSendable"]
        answer = await self.get(_with_query(offer["callback"], amount=amount_msat))
        pr = answer["pr"]
        decoded = bolt11.decode(pr)
        # LUD-06 6: the h tag is sha256 of the metadata string's UTF-8 bytes, exactly as received
        assert decoded.description_hash == hashlib.sha256(offer["metadata"].encode("utf-8")).hexdigest()
        assert decoded.amount_msat == amount_msat  # LUD-06 7
        action = answer.get("successAction")
        if action is not None and action.get("tag") == "url":  # LUD-09: same domain as the callback
            assert urlsplit(action["url"]).netloc == urlsplit(offer["callback"]).netloc
        await self.node.pay_invoice(pr, fee_limit_msat=max(amount_msat // 100, 10_000), timeout_s=30)
        return PayResult(pr, decoded.payment_hash, action)

    async def withdraw(self, offer: dict[str, Any], amount_msat: int | None = None) -> Invoice:
        """LUD-03 steps 4-7: make an invoice for the amount, send it with k1, wait to be paid."""
        assert offer["tag"] == "withdrawRequest"
        amount = offer["maxWithdrawable"] if amount_msat is None else amount_msat
        invoice = await self.node.create_invoice(amount, offer.get("defaultDescription", ""), 3600)
        await self.submit(offer, invoice.bolt11)
        return await self.wait_paid(invoice)

    async def submit(self, offer: dict[str, Any], pr: str) -> None:
        await self.get(_with_query(offer["callback"], k1=offer["k1"], pr=pr))

    async def wait_paid(self, invoice: Invoice, timeout: float = 30) -> Invoice:
        async with asyncio.timeout(timeout):
            async for update in self.node.watch_invoice(invoice.payment_hash):
                if update.state is InvoiceState.SETTLED:
                    return update
        raise AssertionError("the withdraw was never paid")
