"""The simulated Lightning network: nodes, invoices, payments, following LND's semantics.

Pure asyncio, single event loop, no locks: every state change is synchronous (no await in between),
so subscriptions see a consistent backlog followed by live events, as LND guarantees. Changes are
persisted by group commit (``Store``); their events are published once committed, and the RPC
layer answers a write only after ``await network.durable()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import bolt11
import coincurve
from grpc import StatusCode

from lightning._protos import ln
from lightning.payreq import encode_payreq
from lightning.simnet.store import InvoiceRow, NodeRow, PaymentRow, Store

log = logging.getLogger("lightning.simnet")

OPEN, SETTLED, CANCELED, ACCEPTED = (
    ln.Invoice.OPEN,
    ln.Invoice.SETTLED,
    ln.Invoice.CANCELED,
    ln.Invoice.ACCEPTED,
)
P_UNKNOWN, P_IN_FLIGHT, P_SUCCEEDED, P_FAILED = (
    ln.Payment.UNKNOWN,
    ln.Payment.IN_FLIGHT,
    ln.Payment.SUCCEEDED,
    ln.Payment.FAILED,
)
HTLC_ACCEPTED, HTLC_SETTLED, HTLC_CANCELED = ln.ACCEPTED, ln.SETTLED, ln.CANCELED

REASON_NONE = ln.FAILURE_REASON_NONE
REASON_TIMEOUT = ln.FAILURE_REASON_TIMEOUT
REASON_NO_ROUTE = ln.FAILURE_REASON_NO_ROUTE
REASON_ERROR = ln.FAILURE_REASON_ERROR
REASON_INCORRECT_PAYMENT_DETAILS = ln.FAILURE_REASON_INCORRECT_PAYMENT_DETAILS
REASON_INSUFFICIENT_BALANCE = ln.FAILURE_REASON_INSUFFICIENT_BALANCE

# LND's limits and defaults.
DEFAULT_EXPIRY_S = 86400
MAX_EXPIRY_S = 365 * 24 * 3600
DEFAULT_CLTV_EXPIRY = 80
MAX_MEMO_LEN = 639
MAX_PAYMENT_MSAT = 2**32 - 1  # non-wumbo maximum
HOLD_EXPIRY_DELTA = 12  # LND cancels a held HTLC this many blocks before its CLTV expiry

# LND's error texts (gRPC status UNKNOWN unless stated).
ERR_MUTUALLY_EXCLUSIVE = "sat and msat arguments are mutually exclusive"
ERR_DUPLICATE = "invoice with payment hash already exists"
ERR_NOT_FOUND = "unable to locate invoice"
ERR_ALREADY_SETTLED = "invoice already settled"
ERR_ALREADY_CANCELED = "invoice already canceled"
ERR_STILL_OPEN = "invoice still open"
ERR_ALREADY_PAID = "invoice is already paid"
ERR_IN_TRANSITION = "payment is in transition"
ERR_PAYMENT_NOT_FOUND = "payment isn't initiated"
ERR_TIMEOUT_REQUIRED = "timeout_seconds must be specified"


class RpcError(Exception):
    """Becomes a gRPC status on the wire."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def unknown(details: str) -> RpcError:
    return RpcError(StatusCode.UNKNOWN, details)


@dataclass
class NodeSpec:
    """A node of the simnet. ``balance_sat`` is its outbound channel liquidity at first start."""

    name: str
    balance_sat: int = 10_000_000


DEFAULT_NODES = (
    NodeSpec("satwatt", 1_000_000),
    NodeSpec("car1"),
    NodeSpec("car2"),
    NodeSpec("wallet"),
)


@dataclass
class Faults:
    """Fault injection knobs; change them at any time (tests, admin API)."""

    rpc_latency_s: float = 0.0  # added before every RPC is handled
    payment_latency_s: float = 0.0  # time for a payment to reach the payee
    payment_failure_rate: float = 0.0  # fraction of payments that fail with payment_failure_reason
    payment_failure_reason: str = "FAILURE_REASON_NO_ROUTE"
    fail_next_payments: int = 0  # the next N payments fail (deterministic)
    unavailable: bool = False  # every RPC answers UNAVAILABLE
    starting_up: bool = False  # every RPC answers "RPC server is in the process of starting up"
    settle_index_step: int = 1  # >1 leaves gaps in settle_index (LND allows gaps)
    lose_next_responses: int = 0  # the next N writes (add/settle/cancel invoice, send payment) do
    # their work but answer UNAVAILABLE, as if the link broke before the reply: tests idempotency

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AutoPay:
    """A payer node that pays every invoice the payee node issues, ``delay_s`` after its creation,
    through the normal payment path (balances move, settle events flow as for any payment).

    For fleet benchmarks: every charger's invoices get paid without a payer agent per car. Hold
    invoices get their HTLC (ACCEPTED); zero-amount invoices are left alone (no amount to pay).
    """

    payer: str = "car1"
    payee: str = "satwatt"
    delay_s: float = 0.0
    timeout_s: int = 60


@dataclass
class AutoPayStats:
    started: int = 0  # payments sent (each then succeeds or fails like any payment)
    refused: int = 0  # not sent: the node refused the payment (e.g. expired, already paid)
    skipped: int = 0  # zero-amount invoices


@dataclass
class FeePolicy:
    hops: int = 1  # intermediate hops between two distinct simnet nodes
    base_fee_msat: int = 1000  # LND default: 1 sat per hop
    fee_rate_ppm: int = 1  # LND default: 1 ppm per hop

    def fee_for(self, amount_msat: int) -> int:
        return self.hops * (self.base_fee_msat + amount_msat * self.fee_rate_ppm // 1_000_000)


@dataclass
class Node:
    row: NodeRow
    key: coincurve.PrivateKey = field(repr=False)
    pubkey: str = ""

    def __post_init__(self) -> None:
        self.pubkey = self.key.public_key.format(compressed=True).hex()

    @property
    def name(self) -> str:
        return self.row.name


class _Broadcast:
    """Fan-out of events to subscriber queues."""

    def __init__(self) -> None:
        self.queues: dict[Any, set[asyncio.Queue[Any]]] = {}

    def subscribe(self, key: Any) -> asyncio.Queue[Any]:
        q: asyncio.Queue[Any] = asyncio.Queue()
        self.queues.setdefault(key, set()).add(q)
        return q

    def unsubscribe(self, key: Any, q: asyncio.Queue[Any]) -> None:
        qs = self.queues.get(key)
        if qs is not None:
            qs.discard(q)
            if not qs:
                del self.queues[key]

    def publish(self, key: Any, item: Any) -> None:
        for q in self.queues.get(key, ()):
            q.put_nowait(item)

    def publish_all(self, item: Any) -> None:
        for qs in self.queues.values():
            for q in qs:
                q.put_nowait(item)


@dataclass(frozen=True)
class Abort:
    """Sentinel pushed into subscriber queues to end their streams (outage, shutdown)."""

    code: StatusCode
    details: str


class Network:
    def __init__(
        self,
        store: Store,
        nodes: list[NodeSpec] | tuple[NodeSpec, ...] = DEFAULT_NODES,
        fees: FeePolicy | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        autopay: AutoPay | None = None,
    ) -> None:
        self.store = store
        self.fees = fees or FeePolicy()
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self.by_pubkey: dict[str, Node] = {}
        self.invoices: dict[str, dict[bytes, InvoiceRow]] = {}
        self.invoices_by_add: dict[str, list[InvoiceRow]] = {}
        self.payments: dict[str, dict[bytes, PaymentRow]] = {}
        self.invoice_events = _Broadcast()  # key: node name; items: ("add"|"settle", ln.Invoice)
        self.single_events = _Broadcast()  # key: (node, r_hash); items: ln.Invoice
        self.payment_events = _Broadcast()  # key: (node, payment_hash); items: PaymentRow snapshot
        self.block_height = int(store.get_meta("block_height", "1000") or "1000")
        self._expiries: list[tuple[int, str, bytes]] = []  # heap of (expiry time, node, r_hash)
        self._by_payreq: dict[str, tuple[str, bytes]] = {}  # payment request -> (node, r_hash)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tasks_running = False
        self.payments_in_flight = 0
        self._load(nodes)
        self.autopay = autopay
        self.autopay_stats = AutoPayStats()
        if autopay is not None:
            for role, name in (("payer", autopay.payer), ("payee", autopay.payee)):
                if name not in self.nodes:
                    known = ", ".join(sorted(self.nodes))
                    raise ValueError(f"auto-pay {role} {name!r} is not a node of the simnet ({known})")
            if autopay.payer == autopay.payee:
                raise ValueError("auto-pay payer and payee must be two different nodes")
            if autopay.delay_s < 0:
                raise ValueError("auto-pay delay must not be negative")

    # ---- loading -------------------------------------------------------------------------------
    def _load(self, specs: list[NodeSpec] | tuple[NodeSpec, ...]) -> None:
        for row in self.store.load_nodes():
            self._add_node(row)
        for spec in specs:
            if spec.name not in self.nodes:
                row = NodeRow(
                    name=spec.name,
                    privkey=secrets.token_bytes(32),
                    root_key=secrets.token_bytes(32),
                    balance_msat=spec.balance_sat * 1000,
                )
                self.store.save_node(row)
                self._add_node(row)
        for inv in self.store.load_invoices():
            if inv.node in self.nodes:
                self.invoices[inv.node][inv.r_hash] = inv
                self._by_payreq[inv.payment_request] = (inv.node, inv.r_hash)
                self.invoices_by_add[inv.node].append(inv)
        for node_invoices in self.invoices_by_add.values():
            node_invoices.sort(key=lambda r: r.add_index)
            for inv in node_invoices:
                if inv.state == OPEN:
                    self._expiries.append((inv.creation_date + inv.expiry, inv.node, inv.r_hash))
        heapq.heapify(self._expiries)
        for pay in self.store.load_payments():
            if pay.node not in self.nodes:
                continue
            self.payments[pay.node][pay.payment_hash] = pay
            if pay.status == P_IN_FLIGHT and not self._holds_htlc(pay):
                # Interrupted before its HTLC reached the payee: nothing moved, so it failed.
                pay.status, pay.failure_reason = P_FAILED, REASON_ERROR
                pay.resolve_time_ns = time.time_ns()
                self.store.save_payment(pay)
        self.store.flush()

    def _add_node(self, row: NodeRow) -> None:
        node = Node(row=row, key=coincurve.PrivateKey(row.privkey))
        self.nodes[row.name] = node
        self.by_pubkey[node.pubkey] = node
        self.invoices.setdefault(row.name, {})
        self.invoices_by_add.setdefault(row.name, [])
        self.payments.setdefault(row.name, {})

    def _holds_htlc(self, pay: PaymentRow) -> bool:
        if pay.dest is None:
            return False
        inv = self.invoices.get(pay.dest, {}).get(pay.payment_hash)
        return inv is not None and inv.state == ACCEPTED and inv.htlc_payer == pay.node

    def node(self, name: str) -> Node:
        return self.nodes[name]

    async def durable(self) -> None:
        """Wait until every change made so far is committed (answer a write only after this)."""
        if self.store.pending:
            await self.store.committed()

    def _emit(self, broadcast: _Broadcast, key: Any, item: Any) -> None:
        """Publish ``item`` once the change it reports is committed (events in commit order)."""
        self.store.after_commit(lambda: broadcast.publish(key, item))

    # ---- background ----------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks_running = True
        self._spawn(self._expiry_loop())

    async def stop(self) -> None:
        self._tasks_running = False
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _expiry_loop(self) -> None:
        """LND's invoice expiry watcher: OPEN invoices past their expiry become CANCELED."""
        while True:
            await asyncio.sleep(0.2)
            self.expire_invoices()

    def expire_invoices(self, now: float | None = None) -> int:
        current = time.time() if now is None else now
        count = 0
        while self._expiries and self._expiries[0][0] <= current:
            _, node, r_hash = heapq.heappop(self._expiries)
            inv = self.invoices.get(node, {}).get(r_hash)
            if inv is not None and inv.state == OPEN:
                self._cancel(inv)
                count += 1
        return count

    def mine_blocks(self, n: int) -> int:
        """Advance the chain; held HTLCs close to their CLTV expiry are cancelled, as LND does."""
        self.block_height += n
        self.store.set_meta("block_height", str(self.block_height))
        for node_invoices in self.invoices.values():
            for inv in node_invoices.values():
                if inv.state == ACCEPTED and inv.htlc_expiry_height - HOLD_EXPIRY_DELTA <= self.block_height:
                    self._cancel(inv)
        return self.block_height

    # ---- conversions ---------------------------------------------------------------------------
    def invoice_proto(self, inv: InvoiceRow) -> Any:
        msg = ln.Invoice(
            memo=inv.memo,
            r_preimage=inv.preimage or b"",
            r_hash=inv.r_hash,
            value=inv.value_msat // 1000,
            value_msat=inv.value_msat,
            settled=inv.state == SETTLED,
            creation_date=inv.creation_date,
            settle_date=inv.settle_date,
            payment_request=inv.payment_request,
            expiry=inv.expiry,
            cltv_expiry=inv.cltv_expiry,
            add_index=inv.add_index,
            settle_index=inv.settle_index,
            amt_paid=inv.amt_paid_msat,
            amt_paid_sat=inv.amt_paid_msat // 1000,
            amt_paid_msat=inv.amt_paid_msat,
            state=inv.state,
            payment_addr=inv.payment_addr,
        )
        if inv.htlc_payer is not None:
            msg.htlcs.add(
                chan_id=1,
                htlc_index=inv.add_index,
                amt_msat=inv.htlc_amt_msat,
                accept_height=inv.htlc_accept_height,
                accept_time=inv.htlc_accept_time,
                resolve_time=inv.htlc_resolve_time,
                expiry_height=inv.htlc_expiry_height,
                state=inv.htlc_state,
                mpp_total_amt_msat=inv.htlc_amt_msat,
            )
        return msg

    def payment_proto(self, pay: PaymentRow) -> Any:
        msg = ln.Payment(
            payment_hash=pay.payment_hash.hex(),
            value=pay.value_msat // 1000,
            creation_date=pay.creation_time_ns // 1_000_000_000,
            fee=pay.fee_msat // 1000,
            payment_preimage=(pay.preimage or bytes(32)).hex(),
            value_sat=pay.value_msat // 1000,
            value_msat=pay.value_msat,
            payment_request=pay.payment_request,
            status=pay.status,
            fee_sat=pay.fee_msat // 1000,
            fee_msat=pay.fee_msat,
            creation_time_ns=pay.creation_time_ns,
            payment_index=pay.payment_index,
            failure_reason=pay.failure_reason,
        )
        if pay.status != P_FAILED or pay.dest is not None:
            attempt = msg.htlcs.add(
                attempt_id=pay.payment_index,
                status={P_SUCCEEDED: 1, P_FAILED: 2}.get(pay.status, 0),
                attempt_time_ns=pay.creation_time_ns,
                resolve_time_ns=pay.resolve_time_ns,
                preimage=pay.preimage or b"",
            )
            attempt.route.total_amt_msat = pay.value_msat + pay.fee_msat
            attempt.route.total_fees_msat = pay.fee_msat
            attempt.route.total_time_lock = self.block_height + DEFAULT_CLTV_EXPIRY
        return msg

    # ---- invoices ------------------------------------------------------------------------------
    def add_invoice(
        self,
        node_name: str,
        *,
        value: int = 0,
        value_msat: int = 0,
        memo: str = "",
        expiry: int = 0,
        preimage: bytes | None = None,
        r_hash: bytes | None = None,
        cltv_expiry: int = 0,
        is_hold: bool = False,
        description_hash: bytes = b"",
    ) -> InvoiceRow:
        if value and value_msat:
            raise unknown(ERR_MUTUALLY_EXCLUSIVE)
        amount_msat = value_msat or value * 1000
        if amount_msat < 0:
            raise unknown("payment amount must not be negative")
        if amount_msat > MAX_PAYMENT_MSAT:
            raise unknown(
                f"payment of {amount_msat} mSAT is too large, max payment allowed is {MAX_PAYMENT_MSAT} mSAT"
            )
        if len(memo) > MAX_MEMO_LEN:
            raise unknown(f"memo too large: {len(memo)} bytes (maxsize={MAX_MEMO_LEN})")
        if expiry < 0:
            raise unknown("expiry must not be negative")
        if expiry > MAX_EXPIRY_S:
            raise unknown(f"expiry of {expiry} seconds is greater than max allowed of {MAX_EXPIRY_S} seconds")
        if cltv_expiry < 0 or cltv_expiry > 2016:
            raise unknown(f"cltv_expiry {cltv_expiry} out of range")
        if is_hold:
            if r_hash is None or len(r_hash) != 32:
                raise unknown("invalid hash length: expected 32 bytes")
        elif preimage:
            if len(preimage) != 32:
                raise unknown("invalid preimage length: expected 32 bytes")
        else:
            preimage = secrets.token_bytes(32)
        if preimage is not None and not is_hold:
            r_hash = hashlib.sha256(preimage).digest()
        assert r_hash is not None
        node = self.nodes[node_name]
        if r_hash in self.invoices[node_name]:
            raise unknown(ERR_DUPLICATE)
        now = int(time.time())
        expiry = expiry or DEFAULT_EXPIRY_S
        cltv_expiry = cltv_expiry or DEFAULT_CLTV_EXPIRY
        payment_addr = secrets.token_bytes(32)
        payment_request = self._encode_bolt11(
            node, r_hash, payment_addr, amount_msat, memo, now, expiry, cltv_expiry, description_hash
        )
        node.row.add_index += 1
        inv = InvoiceRow(
            node=node_name,
            r_hash=r_hash,
            preimage=None if is_hold else preimage,
            value_msat=amount_msat,
            memo=memo,
            payment_request=payment_request,
            payment_addr=payment_addr,
            creation_date=now,
            expiry=expiry,
            cltv_expiry=cltv_expiry,
            add_index=node.row.add_index,
            settle_index=0,
            state=OPEN,
            settle_date=0,
            amt_paid_msat=0,
            is_hold=is_hold,
        )
        self.store.save_node(node.row)
        self.store.save_invoice(inv)
        self.invoices[node_name][r_hash] = inv
        self.invoices_by_add[node_name].append(inv)
        heapq.heappush(self._expiries, (now + expiry, node_name, r_hash))
        self._by_payreq[payment_request] = (node_name, r_hash)
        proto = self.invoice_proto(inv)
        self._emit(self.invoice_events, node_name, ("add", proto))
        self._emit(self.single_events, (node_name, r_hash), proto)
        if self.autopay is not None and node_name == self.autopay.payee:
            self.store.after_commit(lambda: self._schedule_autopay(inv))
        return inv

    def _schedule_autopay(self, inv: InvoiceRow) -> None:
        assert self.autopay is not None
        loop = asyncio.get_running_loop()
        if self.autopay.delay_s > 0:
            loop.call_later(self.autopay.delay_s, self._autopay, inv)
        else:
            loop.call_soon(self._autopay, inv)

    def _autopay(self, inv: InvoiceRow) -> None:
        autopay = self.autopay
        if autopay is None or not self._tasks_running:
            return
        if not inv.value_msat:
            self.autopay_stats.skipped += 1
            return
        try:
            self.start_payment(
                autopay.payer,
                inv.payment_request,
                amt_msat=0,
                fee_limit_msat=self.fees.fee_for(inv.value_msat),
                timeout_s=autopay.timeout_s,
            )
        except RpcError as exc:
            self.autopay_stats.refused += 1
            log.debug("auto-pay of %s refused: %s", inv.r_hash.hex(), exc.details)
        else:
            self.autopay_stats.started += 1

    def _encode_bolt11(
        self,
        node: Node,
        r_hash: bytes,
        payment_addr: bytes,
        amount_msat: int,
        memo: str,
        date: int,
        expiry: int,
        cltv_expiry: int,
        description_hash: bytes,
    ) -> str:
        return encode_payreq(
            node.key,
            payment_hash=r_hash,
            payment_secret=payment_addr,
            amount_msat=amount_msat,
            timestamp=date,
            description=memo,
            description_hash=description_hash,
            expiry_s=expiry,
            min_final_cltv_expiry=cltv_expiry,
        )

    def lookup(self, node_name: str, r_hash: bytes) -> InvoiceRow:
        if len(r_hash) != 32:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "payment hash must be exactly 32 bytes")
        inv = self.invoices[node_name].get(r_hash)
        if inv is None:
            empty = not self.invoices[node_name]
            raise RpcError(StatusCode.NOT_FOUND, "there are no existing invoices" if empty else ERR_NOT_FOUND)
        return inv

    def list_invoices(
        self, node_name: str, *, pending_only: bool, index_offset: int, num_max: int, reversed_: bool
    ) -> tuple[list[InvoiceRow], int, int]:
        num_max = num_max or 100
        rows = self.invoices_by_add[node_name]
        if pending_only:
            rows = [r for r in rows if r.state in (OPEN, ACCEPTED)]
        if reversed_:
            cand = [r for r in rows if index_offset == 0 or r.add_index < index_offset]
            out = cand[-num_max:]
        else:
            out = [r for r in rows if r.add_index > index_offset][:num_max]
        first = out[0].add_index if out else 0
        last = out[-1].add_index if out else 0
        return out, first, last

    def backlog(self, node_name: str, add_index: int, settle_index: int) -> list[tuple[str, Any]]:
        """What SubscribeInvoices replays: adds with index > add_index, then settles > settle_index."""
        events: list[tuple[str, Any]] = []
        if add_index:
            for inv in self.invoices_by_add[node_name]:
                if inv.add_index > add_index:
                    events.append(("add", self.invoice_proto(inv)))
        if settle_index:
            settled = [
                inv
                for inv in self.invoices_by_add[node_name]
                if inv.state == SETTLED and inv.settle_index > settle_index
            ]
            settled.sort(key=lambda r: r.settle_index)
            events.extend(("settle", self.invoice_proto(inv)) for inv in settled)
        return events

    def _publish_change(self, inv: InvoiceRow) -> None:
        proto = self.invoice_proto(inv)
        if inv.state == SETTLED:
            self._emit(self.invoice_events, inv.node, ("settle", proto))
        self._emit(self.single_events, (inv.node, inv.r_hash), proto)

    def settle_hold(self, node_name: str, preimage: bytes) -> None:
        if len(preimage) != 32:
            raise unknown("invalid preimage length")
        r_hash = hashlib.sha256(preimage).digest()
        inv = self.invoices[node_name].get(r_hash)
        if inv is None:
            raise unknown(ERR_NOT_FOUND)
        if inv.state == SETTLED:
            return  # idempotent, as in LND
        if inv.state == OPEN:
            raise unknown(ERR_STILL_OPEN)
        if inv.state == CANCELED:
            raise unknown(ERR_ALREADY_CANCELED)
        self._settle(inv, preimage, inv.htlc_amt_msat)

    def cancel_invoice(self, node_name: str, r_hash: bytes) -> None:
        inv = self.invoices[node_name].get(r_hash)
        if inv is None:
            raise unknown(ERR_NOT_FOUND)
        if inv.state == SETTLED:
            raise unknown(ERR_ALREADY_SETTLED)
        if inv.state == CANCELED:
            return  # idempotent
        self._cancel(inv)

    def _settle(self, inv: InvoiceRow, preimage: bytes, amount_msat: int) -> None:
        """Settle an invoice whose HTLC (amount_msat) is locked; completes the payer's payment."""
        node = self.nodes[inv.node]
        node.row.settle_index += max(1, self.faults.settle_index_step)
        now = int(time.time())
        inv.state = SETTLED
        inv.preimage = preimage
        inv.settle_index = node.row.settle_index
        inv.settle_date = now
        inv.amt_paid_msat = amount_msat
        node.row.balance_msat += amount_msat
        pay = None
        if inv.htlc_payer is not None:
            inv.htlc_state = HTLC_SETTLED
            inv.htlc_resolve_time = now
            pay = self.payments[inv.htlc_payer].get(inv.r_hash)
            if pay is not None and pay.status == P_IN_FLIGHT:
                pay.status = P_SUCCEEDED
                pay.preimage = preimage
                pay.resolve_time_ns = time.time_ns()
            else:
                pay = None
        self.store.save_node(node.row)
        self.store.save_invoice(inv)
        if pay is not None:
            self.store.save_payment(pay)
        self._publish_change(inv)
        if pay is not None:
            self._publish_payment(pay)

    def _cancel(self, inv: InvoiceRow) -> None:
        now = int(time.time())
        pay = None
        payer = None
        if inv.state == ACCEPTED and inv.htlc_payer is not None:
            inv.htlc_state = HTLC_CANCELED
            inv.htlc_resolve_time = now
            pay = self.payments[inv.htlc_payer].get(inv.r_hash)
            payer = self.nodes.get(inv.htlc_payer)
            if pay is not None and pay.status == P_IN_FLIGHT and payer is not None:
                payer.row.balance_msat += pay.value_msat + pay.fee_msat  # HTLC failed back: refund
                pay.status = P_FAILED
                pay.failure_reason = REASON_INCORRECT_PAYMENT_DETAILS
                pay.resolve_time_ns = time.time_ns()
            else:
                pay = None
        inv.state = CANCELED
        self.store.save_invoice(inv)
        if pay is not None and payer is not None:
            self.store.save_node(payer.row)
            self.store.save_payment(pay)
        self._publish_change(inv)
        if pay is not None:
            self._publish_payment(pay)

    # ---- payments ------------------------------------------------------------------------------
    def _publish_payment(self, pay: PaymentRow) -> None:
        self._emit(self.payment_events, (pay.node, pay.payment_hash), dataclasses.replace(pay))

    def decode(self, payment_request: str) -> Any:
        try:
            decoded = bolt11.decode(payment_request)
        except Exception as exc:
            raise unknown(f"invalid payment request: {exc}") from exc
        return decoded

    def invoice_amount_msat(self, payment_request: str) -> int:
        known = self._by_payreq.get(payment_request)
        if known is not None:
            return self.invoices[known[0]][known[1]].value_msat
        return int(self.decode(payment_request).amount_msat or 0)

    def start_payment(
        self,
        payer_name: str,
        payment_request: str,
        *,
        amt_msat: int,
        fee_limit_msat: int,
        timeout_s: float,
    ) -> PaymentRow:
        """Validate and register a payment (IN_FLIGHT), then run it in the background."""
        if not payment_request:
            raise unknown("payment_request required: keysend and payments by hash are not simulated")
        known = self._by_payreq.get(payment_request)
        if known is not None:
            # One of ours: skip the (slow, pure-Python) BOLT11 decode; same fields, same checks.
            row = self.invoices[known[0]][known[1]]
            payee, r_hash = self.nodes[row.node].pubkey, row.r_hash
            invoice_amt, expiry_time = row.value_msat, row.creation_date + row.expiry
        else:
            decoded = self.decode(payment_request)
            if not decoded.is_regtest():
                raise unknown("invoice not for current active network 'regtest'")
            payee, r_hash = decoded.payee or "", bytes.fromhex(decoded.payment_hash)
            invoice_amt, expiry_time = int(decoded.amount_msat or 0), decoded.expiry_time
        if time.time() > expiry_time:
            valid_until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(expiry_time))
            raise unknown(f"invoice expired. Valid until {valid_until} +0000 UTC")
        if invoice_amt and amt_msat:
            raise unknown("amount must not be specified when paying a non-zero amount invoice")
        if not invoice_amt and not amt_msat:
            raise unknown("amount must be specified when paying a zero amount invoice")
        amount = invoice_amt or amt_msat
        if fee_limit_msat < 0:
            raise unknown("fee limit must not be negative")
        payer = self.nodes[payer_name]
        existing = self.payments[payer_name].get(r_hash)
        if existing is not None:
            if existing.status == P_SUCCEEDED:
                raise RpcError(StatusCode.ALREADY_EXISTS, ERR_ALREADY_PAID)
            if existing.status == P_IN_FLIGHT:
                raise RpcError(StatusCode.ALREADY_EXISTS, ERR_IN_TRANSITION)
        payer.row.payment_index += 1
        pay = PaymentRow(
            node=payer_name,
            payment_hash=r_hash,
            payment_request=payment_request,
            dest=None,
            value_msat=amount,
            fee_msat=0,
            status=P_IN_FLIGHT,
            failure_reason=REASON_NONE,
            preimage=None,
            creation_time_ns=time.time_ns(),
            payment_index=payer.row.payment_index,
        )
        self.store.save_node(payer.row)
        self.store.save_payment(pay)
        self.payments[payer_name][r_hash] = pay
        self.payments_in_flight += 1
        task = self._spawn(self._run_payment(pay, payee, fee_limit_msat, timeout_s))
        task.add_done_callback(self._payment_done)
        return pay

    def _payment_done(self, _task: asyncio.Task[Any]) -> None:
        self.payments_in_flight -= 1

    def _fail(self, pay: PaymentRow, reason: int) -> None:
        pay.status = P_FAILED
        pay.failure_reason = reason
        pay.resolve_time_ns = time.time_ns()
        self.store.save_payment(pay)
        self._publish_payment(pay)

    async def _run_payment(self, pay: PaymentRow, payee: str, fee_limit_msat: int, timeout_s: float) -> None:
        await self.durable()  # the payment is on record before its HTLC goes out (LND's control tower)
        latency = self.faults.payment_latency_s
        if latency > 0:
            if latency >= timeout_s:
                await asyncio.sleep(timeout_s)
                self._fail(pay, REASON_TIMEOUT)
                return
            await asyncio.sleep(latency)
        faults = self.faults
        if faults.fail_next_payments > 0 or (
            faults.payment_failure_rate > 0 and self.rng.random() < faults.payment_failure_rate
        ):
            faults.fail_next_payments = max(0, faults.fail_next_payments - 1)
            self._fail(pay, ln.PaymentFailureReason.Value(faults.payment_failure_reason))
            return
        dest = self.by_pubkey.get(payee)
        payer = self.nodes[pay.node]
        if dest is None or dest.name == pay.node:
            self._fail(pay, REASON_NO_ROUTE)  # unknown node, or a self-payment (not allowed)
            return
        fee = self.fees.fee_for(pay.value_msat)
        if fee > fee_limit_msat:
            self._fail(pay, REASON_NO_ROUTE)  # no route within the fee limit
            return
        if payer.row.balance_msat < pay.value_msat + fee:
            self._fail(pay, REASON_INSUFFICIENT_BALANCE)
            return
        inv = self.invoices[dest.name].get(pay.payment_hash)
        if (
            inv is None
            or inv.state != OPEN
            or inv.creation_date + inv.expiry <= time.time()
            or (inv.value_msat and pay.value_msat < inv.value_msat)
        ):
            self._fail(pay, REASON_INCORRECT_PAYMENT_DETAILS)
            return
        # The HTLC is locked in: the payer's balance is committed.
        payer.row.balance_msat -= pay.value_msat + fee
        pay.fee_msat = fee
        pay.dest = dest.name
        now = int(time.time())
        inv.htlc_payer = pay.node
        inv.htlc_amt_msat = pay.value_msat
        inv.htlc_accept_time = now
        inv.htlc_accept_height = self.block_height
        inv.htlc_expiry_height = self.block_height + inv.cltv_expiry
        inv.htlc_state = HTLC_ACCEPTED
        if inv.is_hold:
            inv.state = ACCEPTED
            self.store.save_node(payer.row)
            self.store.save_payment(pay)
            self.store.save_invoice(inv)
            self._publish_change(inv)
            self._publish_payment(pay)
            return
        assert inv.preimage is not None
        self.store.save_node(payer.row)
        self.store.save_payment(pay)
        self._settle(inv, inv.preimage, pay.value_msat)

    def payment(self, node_name: str, payment_hash: bytes) -> PaymentRow:
        pay = self.payments[node_name].get(payment_hash)
        if pay is None:
            raise RpcError(StatusCode.NOT_FOUND, ERR_PAYMENT_NOT_FOUND)
        return pay

    # ---- outage support --------------------------------------------------------------------------
    def abort_streams(self, code: StatusCode, details: str) -> None:
        item = Abort(code, details)
        self.invoice_events.publish_all(item)
        self.single_events.publish_all(item)
        self.payment_events.publish_all(item)
