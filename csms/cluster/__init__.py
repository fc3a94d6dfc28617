"""Cluster mode (``CSMS_NATS_URL``): several satwatt processes, on one machine or many, share one
PostgreSQL database and one NATS server.

The process that holds a charger's websocket owns the charger and the settlement of its sessions
(:mod:`csms.cluster.ownership`); commands, walk-up requests and payments travel to the owner
(:mod:`csms.cluster.registry`, :mod:`csms.cluster.payments`); one process at a time follows the Lightning
node's invoice stream (:mod:`csms.cluster.lease`); a session's events reach readers on every process
(:mod:`csms.cluster.events`). See docs/adr/0002-cluster-ownership-over-nats.md.
"""
