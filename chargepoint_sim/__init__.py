"""Simulated OCPP 1.6J / 2.0.1 charge points, their EV physics, scenarios and a load generator."""

from chargepoint_sim.chargepoint import (
    ChargePoint,
    ChargePointOptions,
    Faults,
    Transaction,
    create_charge_point,
)
from chargepoint_sim.clock import Clock
from chargepoint_sim.physics import EV_MODELS, ChargerSpec, EVModel
from chargepoint_sim.rpc import Stats

__all__ = [
    "EV_MODELS",
    "ChargePoint",
    "ChargePointOptions",
    "ChargerSpec",
    "Clock",
    "EVModel",
    "Faults",
    "Stats",
    "Transaction",
    "create_charge_point",
]
