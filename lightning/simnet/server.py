"""gRPC servicers of the simnet, built on LND's own Servicer base classes (lndgrpc.compiled).

One TLS port serves every node: the macaroon in the call's metadata selects the node and its rights.
Errors use LND's status codes and texts (mostly UNKNOWN with LND's message, NOT_FOUND for lookups,
ALREADY_EXISTS for repeated payments), so clients are tested against what a real LND answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from grpc import StatusCode

from lightning._protos import inv, inv_grpc, ln, ln_grpc, router_grpc, state, state_grpc
from lightning.simnet import macaroons
from lightning.simnet.network import (
    P_IN_FLIGHT,
    P_SUCCEEDED,
    Abort,
    Network,
    Node,
    RpcError,
    unknown,
)

if TYPE_CHECKING:
    from lightning.simnet.network import Faults

ERR_STARTING_UP = "the RPC server is in the process of starting up, but not yet ready to accept calls"
ERR_UNAVAILABLE = "simnet: node unavailable (injected outage)"

# LND's channeldb.FailureReason strings, used by SendPaymentSync's payment_error.
_SYNC_REASON = {
    ln.FAILURE_REASON_TIMEOUT: "timeout",
    ln.FAILURE_REASON_NO_ROUTE: "no_route",
    ln.FAILURE_REASON_ERROR: "error",
    ln.FAILURE_REASON_INCORRECT_PAYMENT_DETAILS: "incorrect_payment_details",
    ln.FAILURE_REASON_INSUFFICIENT_BALANCE: "insufficient_balance",
}


class Gate:
    """Shared by all servicers: fault checks, latency and macaroon authentication."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.delayed = 0  # calls held by rpc_latency_s or a stall right now (tests see pipelining)
        self.stall: asyncio.Event | None = None  # set: calls wait until it is set (Simnet.stall_calls)
        self.peers: set[str] = set()  # client connections seen (address:port)
        self.writes = 0  # write calls in progress
        # Macaroons verified before (metadata value -> node, permissions, time-before as a timestamp).
        self._verified: dict[str, tuple[Node, frozenset[str], float | None]] = {}

    @property
    def faults(self) -> Faults:
        return self.network.faults

    async def enter(self, context: grpc.aio.ServicerContext, perm: str | None) -> Node:
        faults = self.faults
        if faults.unavailable:
            await context.abort(StatusCode.UNAVAILABLE, ERR_UNAVAILABLE)
        if faults.starting_up:
            await context.abort(StatusCode.UNKNOWN, ERR_STARTING_UP)
        if faults.rpc_latency_s > 0 or self.stall is not None:
            self.delayed += 1
            try:
                if faults.rpc_latency_s > 0:
                    await asyncio.sleep(faults.rpc_latency_s)
                if self.stall is not None:
                    await self.stall.wait()
            finally:
                self.delayed -= 1
        self.peers.add(context.peer())
        node, perms = await self._authenticate(context)
        if perm is not None and perm not in perms:
            await context.abort(StatusCode.UNKNOWN, "permission denied")
        if perm is not None and perm.endswith(":write"):
            self.writes += 1  # the store's group commit waits for siblings when there are many
            context.add_done_callback(self._write_done)
        return node

    def _write_done(self, _context: Any) -> None:
        self.writes -= 1

    async def maybe_lose_response(self, context: grpc.aio.ServicerContext) -> None:
        """Fault: the call did its work, but the answer is lost (the link broke just then)."""
        if self.faults.lose_next_responses > 0:
            self.faults.lose_next_responses -= 1
            await context.abort(StatusCode.UNAVAILABLE, "simnet: response lost (injected)")

    def _macaroon_value(self, context: grpc.aio.ServicerContext) -> str:
        values = [v for k, v in (context.invocation_metadata() or ()) if k == "macaroon"]
        if len(values) != 1:
            raise RpcError(StatusCode.UNKNOWN, f"expected 1 macaroon, got {len(values)}")
        value = values[0]
        return value if isinstance(value, str) else value.decode("latin-1")

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> tuple[Node, frozenset[str]]:
        try:
            value = self._macaroon_value(context)
            cached = self._verified.get(value)
            if cached is not None:
                node, perms, until = cached
                if until is None or time.time() < until:
                    return node, perms
                del self._verified[value]
            try:
                raw = bytes.fromhex(value)
            except ValueError as exc:
                raise RpcError(StatusCode.UNKNOWN, f"unable to decode macaroon: {exc}") from exc
            name, perms, mac = macaroons.identify(raw)
            found = self.network.nodes.get(name)
            if found is None:
                raise RpcError(StatusCode.UNKNOWN, "cannot get macaroon: root key with id 0 doesn't exist")
            macaroons.verify(mac, found.row.root_key)
            limit = macaroons.valid_until(mac)
            if len(self._verified) >= 1024:
                self._verified.clear()
            # Verified once; its time-before (if any) is checked on every later call.
            self._verified[value] = (found, perms, limit.timestamp() if limit is not None else None)
        except RpcError as exc:
            await context.abort(exc.code, exc.details)
        except macaroons.MacaroonError as exc:
            await context.abort(StatusCode.UNKNOWN, f"verification failed: {exc}")
        return found, perms


async def _abort(context: grpc.aio.ServicerContext, exc: RpcError) -> None:
    await context.abort(exc.code, exc.details)


def _resolve_fee_limit_msat(fee_limit: Any, amount_msat: int) -> int:
    """lnrpc.FeeLimit (SendPaymentSync): fixed, fixed_msat or percent; unset = the whole amount."""
    which = fee_limit.WhichOneof("limit") if fee_limit is not None else None
    if which == "fixed":
        return int(fee_limit.fixed) * 1000
    if which == "fixed_msat":
        return int(fee_limit.fixed_msat)
    if which == "percent":
        return amount_msat * int(fee_limit.percent) // 100
    return amount_msat


class LightningService(ln_grpc.LightningServicer):  # type: ignore[misc]
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.net = gate.network

    async def GetInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "info:read")
        height = self.net.block_height
        return ln.GetInfoResponse(
            version="0.18.0-beta satwatt-simnet",
            identity_pubkey=node.pubkey,
            alias=node.name,
            color="#3399ff",
            num_active_channels=1,
            num_peers=1,
            block_height=height,
            block_hash=hashlib.sha256(f"simnet-block-{height}".encode()).hexdigest(),
            best_header_timestamp=int(time.time()),
            synced_to_chain=True,
            synced_to_graph=True,
            chains=[ln.Chain(chain="bitcoin", network="regtest")],
            uris=[f"{node.pubkey}@127.0.0.1:9735"],
        )

    async def WalletBalance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.gate.enter(context, "onchain:read")
        sats = 100_000_000
        return ln.WalletBalanceResponse(total_balance=sats, confirmed_balance=sats)

    async def ChannelBalance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "offchain:read")
        local = node.row.balance_msat
        remote = max(0, 100_000_000_000 - local)
        return ln.ChannelBalanceResponse(
            balance=local // 1000,
            local_balance=ln.Amount(sat=local // 1000, msat=local),
            remote_balance=ln.Amount(sat=remote // 1000, msat=remote),
        )

    async def AddInvoice(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:write")
        try:
            row = self.net.add_invoice(
                node.name,
                value=request.value,
                value_msat=request.value_msat,
                memo=request.memo,
                expiry=request.expiry,
                preimage=request.r_preimage or None,
                cltv_expiry=request.cltv_expiry,
                description_hash=request.description_hash,
            )
        except RpcError as exc:
            await _abort(context, exc)
        await self.net.durable()  # answered once committed, as LND does
        await self.gate.maybe_lose_response(context)
        return ln.AddInvoiceResponse(
            r_hash=row.r_hash,
            payment_request=row.payment_request,
            add_index=row.add_index,
            payment_addr=row.payment_addr,
        )

    async def LookupInvoice(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:read")
        r_hash = request.r_hash or (bytes.fromhex(request.r_hash_str) if request.r_hash_str else b"")
        try:
            return self.net.invoice_proto(self.net.lookup(node.name, r_hash))
        except RpcError as exc:
            await _abort(context, exc)

    async def ListInvoices(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:read")
        rows, first, last = self.net.list_invoices(
            node.name,
            pending_only=request.pending_only,
            index_offset=request.index_offset,
            num_max=request.num_max_invoices,
            reversed_=request.reversed,
        )
        return ln.ListInvoiceResponse(
            invoices=[self.net.invoice_proto(r) for r in rows],
            first_index_offset=first,
            last_index_offset=last,
        )

    async def SubscribeInvoices(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        node = await self.gate.enter(context, "invoices:read")
        queue = self.net.invoice_events.subscribe(node.name)
        try:
            last_add, last_settle = request.add_index, request.settle_index
            # Backlog and subscription are taken together (no await in between): nothing is lost.
            for kind, msg in self.net.backlog(node.name, request.add_index, request.settle_index):
                if kind == "add":
                    last_add = max(last_add, msg.add_index)
                else:
                    last_settle = max(last_settle, msg.settle_index)
                yield msg
            while True:
                item = await queue.get()
                if isinstance(item, Abort):
                    await context.abort(item.code, item.details)
                kind, msg = item
                if kind == "add":
                    if msg.add_index <= last_add:
                        continue
                    last_add = msg.add_index
                else:
                    if msg.settle_index <= last_settle:
                        continue
                    last_settle = msg.settle_index
                yield msg
        finally:
            self.net.invoice_events.unsubscribe(node.name, queue)

    async def DecodePayReq(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.gate.enter(context, "offchain:read")
        try:
            d = self.net.decode(request.pay_req)
        except RpcError as exc:
            await _abort(context, exc)
        return ln.PayReq(
            destination=d.payee or "",
            payment_hash=d.payment_hash,
            num_satoshis=int(d.amount_msat or 0) // 1000,
            timestamp=d.date,
            expiry=d.expiry,
            description=d.description or "",
            description_hash=d.description_hash or "",
            cltv_expiry=d.min_final_cltv_expiry,
            payment_addr=bytes.fromhex(d.payment_secret) if d.payment_secret else b"",
            num_msat=int(d.amount_msat or 0),
        )

    async def SendPaymentSync(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "offchain:write")
        if request.amt and request.amt_msat:
            await _abort(context, unknown("sat and msat arguments are mutually exclusive"))
        amt_msat = request.amt_msat or request.amt * 1000
        try:
            decoded_amt = self.net.invoice_amount_msat(request.payment_request)
            fee_limit = _resolve_fee_limit_msat(
                request.fee_limit if request.HasField("fee_limit") else None, decoded_amt or amt_msat
            )
            queue_key = None
            pay = self.net.start_payment(
                node.name, request.payment_request, amt_msat=amt_msat, fee_limit_msat=fee_limit, timeout_s=60
            )
        except RpcError as exc:
            if exc.code == StatusCode.ALREADY_EXISTS:
                return ln.SendResponse(payment_error=exc.details)
            await _abort(context, exc)
        queue_key = (node.name, pay.payment_hash)
        queue = self.net.payment_events.subscribe(queue_key)
        try:
            current = dataclasses.replace(pay)
            while current.status == P_IN_FLIGHT:
                item = await queue.get()
                if isinstance(item, Abort):
                    await context.abort(item.code, item.details)
                current = item
        finally:
            self.net.payment_events.unsubscribe(queue_key, queue)
        if current.status == P_SUCCEEDED:
            route = ln.Route(
                total_time_lock=self.net.block_height + 80,
                total_fees=current.fee_msat // 1000,
                total_amt=(current.value_msat + current.fee_msat) // 1000,
                total_fees_msat=current.fee_msat,
                total_amt_msat=current.value_msat + current.fee_msat,
            )
            return ln.SendResponse(
                payment_preimage=current.preimage or b"",
                payment_hash=current.payment_hash,
                payment_route=route,
            )
        return ln.SendResponse(
            payment_error=_SYNC_REASON.get(current.failure_reason, "error"),
            payment_hash=current.payment_hash,
        )


class InvoicesService(inv_grpc.InvoicesServicer):  # type: ignore[misc]
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.net = gate.network

    async def AddHoldInvoice(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:write")
        try:
            row = self.net.add_invoice(
                node.name,
                value=request.value,
                value_msat=request.value_msat,
                memo=request.memo,
                expiry=request.expiry,
                r_hash=request.hash,
                cltv_expiry=request.cltv_expiry,
                is_hold=True,
                description_hash=request.description_hash,
            )
        except RpcError as exc:
            await _abort(context, exc)
        await self.net.durable()  # answered once committed, as LND does
        await self.gate.maybe_lose_response(context)
        return inv.AddHoldInvoiceResp(
            payment_request=row.payment_request, add_index=row.add_index, payment_addr=row.payment_addr
        )

    async def SettleInvoice(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:write")
        try:
            self.net.settle_hold(node.name, request.preimage)
        except RpcError as exc:
            await _abort(context, exc)
        await self.net.durable()  # answered once committed, as LND does
        await self.gate.maybe_lose_response(context)
        return inv.SettleInvoiceResp()

    async def CancelInvoice(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:write")
        try:
            self.net.cancel_invoice(node.name, request.payment_hash)
        except RpcError as exc:
            await _abort(context, exc)
        await self.net.durable()  # answered once committed, as LND does
        await self.gate.maybe_lose_response(context)
        return inv.CancelInvoiceResp()

    async def LookupInvoiceV2(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = await self.gate.enter(context, "invoices:read")
        which = request.WhichOneof("invoice_ref")
        try:
            if which == "payment_hash":
                return self.net.invoice_proto(self.net.lookup(node.name, request.payment_hash))
            if which == "payment_addr":
                for row in self.net.invoices[node.name].values():
                    if row.payment_addr == request.payment_addr:
                        return self.net.invoice_proto(row)
                raise RpcError(StatusCode.NOT_FOUND, "unable to locate invoice")
            raise RpcError(StatusCode.INVALID_ARGUMENT, "unsupported invoice reference")
        except RpcError as exc:
            await _abort(context, exc)

    async def SubscribeSingleInvoice(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        node = await self.gate.enter(context, "invoices:read")
        key = (node.name, request.r_hash)
        queue = self.net.single_events.subscribe(key)
        try:
            row = self.net.invoices[node.name].get(request.r_hash)
            last = None
            if row is not None:  # current state first; an unknown hash waits for its creation (LND)
                first = self.net.invoice_proto(row)
                yield first
                if row.state in (ln.Invoice.SETTLED, ln.Invoice.CANCELED):
                    return
                last = (first.state, first.amt_paid_msat, first.settle_index)
            while True:
                item = await queue.get()
                if isinstance(item, Abort):
                    await context.abort(item.code, item.details)
                key = (item.state, item.amt_paid_msat, item.settle_index)
                if key == last:
                    continue  # the event of a change already shown (it is published once committed)
                last = key
                yield item
                if item.state in (ln.Invoice.SETTLED, ln.Invoice.CANCELED):
                    return
        finally:
            self.net.single_events.unsubscribe(key, queue)


class RouterService(router_grpc.RouterServicer):  # type: ignore[misc]
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.net = gate.network

    async def _stream(
        self, context: grpc.aio.ServicerContext, node: Node, pay: Any, no_inflight: bool, new: bool = False
    ) -> AsyncIterator[Any]:
        key = (node.name, pay.payment_hash)
        queue = self.net.payment_events.subscribe(key)
        try:
            current = dataclasses.replace(pay)  # a snapshot: the network mutates its own row
            if new:
                # A new payment: its first update (IN_FLIGHT) once it is on record; what happens
                # to it meanwhile comes as events (published after their commit, so none is missed).
                await self.net.durable()
                # The payment goes on; the payer loses the stream.
                await self.gate.maybe_lose_response(context)
            if not (no_inflight and current.status == P_IN_FLIGHT):
                yield self.net.payment_proto(current)
            while current.status == P_IN_FLIGHT:
                item = await queue.get()
                if isinstance(item, Abort):
                    await context.abort(item.code, item.details)
                current = item
                if no_inflight and current.status == P_IN_FLIGHT:
                    continue
                yield self.net.payment_proto(current)
        finally:
            self.net.payment_events.unsubscribe(key, queue)

    async def SendPaymentV2(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        node = await self.gate.enter(context, "offchain:write")
        try:
            if request.timeout_seconds <= 0:
                raise unknown("timeout_seconds must be specified")
            if request.fee_limit_sat and request.fee_limit_msat:
                raise unknown("sat and msat arguments are mutually exclusive")
            if request.amt and request.amt_msat:
                raise unknown("sat and msat arguments are mutually exclusive")
            pay = self.net.start_payment(
                node.name,
                request.payment_request,
                amt_msat=request.amt_msat or request.amt * 1000,
                fee_limit_msat=request.fee_limit_msat or request.fee_limit_sat * 1000,
                timeout_s=request.timeout_seconds,
            )
        except RpcError as exc:
            await _abort(context, exc)
        async for msg in self._stream(context, node, pay, request.no_inflight_updates, new=True):
            yield msg

    async def TrackPaymentV2(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        node = await self.gate.enter(context, "offchain:read")
        try:
            pay = self.net.payment(node.name, request.payment_hash)
        except RpcError as exc:
            await _abort(context, exc)
        async for msg in self._stream(context, node, pay, request.no_inflight_updates):
            yield msg


class StateService(state_grpc.StateServicer):  # type: ignore[misc]
    """LND's readiness service (no macaroon needed): SERVER_ACTIVE unless 'starting up' is injected."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def _state(self) -> int:
        return state.RPC_ACTIVE if self.gate.faults.starting_up else state.SERVER_ACTIVE

    async def GetState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.gate.faults.unavailable:
            await context.abort(StatusCode.UNAVAILABLE, ERR_UNAVAILABLE)
        return state.GetStateResponse(state=self._state())

    async def SubscribeState(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if self.gate.faults.unavailable:
            await context.abort(StatusCode.UNAVAILABLE, ERR_UNAVAILABLE)
        last = None
        while True:
            current = self._state()
            if current != last:
                yield state.SubscribeStateResponse(state=current)
                last = current
            await asyncio.sleep(0.05)


def add_services(server: grpc.aio.Server, network: Network) -> Gate:
    gate = Gate(network)
    ln_grpc.add_LightningServicer_to_server(LightningService(gate), server)
    inv_grpc.add_InvoicesServicer_to_server(InvoicesService(gate), server)
    router_grpc.add_RouterServicer_to_server(RouterService(gate), server)
    state_grpc.add_StateServicer_to_server(StateService(gate), server)
    return gate
