"""Shared FastAPI dependencies: the app's services, typed."""

from __future__ import annotations

from fastapi import Request

from csms.charging.service import ChargingService
from csms.ocpp.registry import ConnectionRegistry


def service_of(request: Request) -> ChargingService:
    return request.app.state.service  # type: ignore[no-any-return]


def registry_of(request: Request) -> ConnectionRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]
