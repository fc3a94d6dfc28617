"""Settlement's latencies and counts, for /metrics (Prometheus text format).

Two latencies make satwatt's settlement promise observable in production:

* ``satwatt_invoice_request_seconds{fact}``: from the arrival at settlement of the fact that decided
  an invoice (a transaction start, a meter sample or a transaction's end handed over by the charging
  service, a settlement tick, a payment read from the node's invoice stream, a walk-up request) to the
  AddInvoice call at the node. It covers the group commit of the fact, the outbox read and the invoice
  row read; not the OCPP frame's parsing before it, nor the node's answer.
* ``satwatt_resume_seconds``: from a settle event read from the node's invoice stream to the resume
  command (ClearChargingProfile) it decided being handed to the charger's connection. Not the wait for
  an earlier call to that charger to be answered (one outstanding call per connection), nor the
  charger's answer.

Both on the monotonic clock. The cost per fact is one clock read; a dict entry is kept only for the
facts that decide an invoice or a resume, and dropped when the call is made.

The counters: invoices issued (created at the node) and settled (a payment credited once).

Built on ``prometheus_client`` with a registry per engine (several apps live in one test process),
rendered into the hand-written /metrics page with ``generate_latest``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# fine around the goals (20 ms to the node, 50 ms to the charger), coarse beyond
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
FACTS = ("started", "meter", "ended", "tick", "payment", "request", "other")

now = time.monotonic  # the clock every latency here is read on


class SettlementMetrics:
    """The settlement engine's histograms and counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        invoice_request = Histogram(
            "satwatt_invoice_request_seconds",
            "From the fact that decided an invoice (meter sample, tick, payment, request) arriving at "
            "settlement to the AddInvoice call at the node.",
            ["fact"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.invoice_request = {fact: invoice_request.labels(fact=fact) for fact in FACTS}
        self.resume = Histogram(
            "satwatt_resume_seconds",
            "From a settle event read from the node's invoice stream to the resume command it decided "
            "being sent to the charger.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.issued = Counter(
            "satwatt_invoices_issued",
            "Invoices created at the Lightning node.",
            registry=self.registry,
        )
        self.settled = Counter(
            "satwatt_invoices_settled",
            "Invoice payments credited to their session (each once).",
            registry=self.registry,
        )

    def observe_invoice_request(self, fact: str, arrived: float) -> None:
        self.invoice_request.get(fact, self.invoice_request["other"]).observe(now() - arrived)

    def observe_resume(self, arrived: float) -> None:
        self.resume.observe(now() - arrived)

    def render(self) -> str:
        """The Prometheus text exposition of these metrics."""
        return generate_latest(self.registry).decode()
