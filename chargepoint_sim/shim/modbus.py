"""Modbus RTU (RS-485) and Modbus TCP through pymodbus: one connection per bus, one request at a time.

The meter, a relay coil and an EVSE's current register may sit on the same RS-485 line (or the same TCP
gateway): they share one :class:`ModbusBus`, whose lock keeps their requests from interleaving.  Every
failure (timeout, no connection, an exception response) raises :class:`ModbusError`; the connection is
dropped and made again on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from chargepoint_sim.shim.config import REGISTER_WORDS, ModbusLink, RegisterSpec

_DATATYPES = {
    "int16": AsyncModbusTcpClient.DATATYPE.INT16,
    "uint16": AsyncModbusTcpClient.DATATYPE.UINT16,
    "int32": AsyncModbusTcpClient.DATATYPE.INT32,
    "uint32": AsyncModbusTcpClient.DATATYPE.UINT32,
    "int64": AsyncModbusTcpClient.DATATYPE.INT64,
    "uint64": AsyncModbusTcpClient.DATATYPE.UINT64,
    "float32": AsyncModbusTcpClient.DATATYPE.FLOAT32,
    "float64": AsyncModbusTcpClient.DATATYPE.FLOAT64,
}


class ModbusError(Exception):
    """A Modbus request failed (no answer, no connection, or an exception response)."""


def decode(registers: list[int], typ: str, word_order: Literal["big", "little"] = "big") -> float:
    """The value of ``registers`` read as ``typ`` (float32 etc.), big-endian bytes in each register."""
    if len(registers) != REGISTER_WORDS[typ]:
        raise ModbusError(f"{typ} needs {REGISTER_WORDS[typ]} registers, got {len(registers)}")
    value = AsyncModbusTcpClient.convert_from_registers(registers, _DATATYPES[typ], word_order=word_order)
    assert isinstance(value, int | float)
    return float(value)


def encode(value: float, typ: str, word_order: Literal["big", "little"] = "big") -> list[int]:
    """Registers holding ``value`` as ``typ`` (the inverse of :func:`decode`; used by tests and the EVSE)."""
    v: int | float = value if typ.startswith("float") else int(value)
    return AsyncModbusTcpClient.convert_to_registers(v, _DATATYPES[typ], word_order=word_order)


class ModbusBus:
    """One Modbus link and its client, shared by every device on it."""

    def __init__(self, link: ModbusLink) -> None:
        self.link = link
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._lock = asyncio.Lock()

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        link = self.link
        if link.transport == "tcp":
            assert link.host is not None
            return AsyncModbusTcpClient(link.host, port=link.port, timeout=link.timeout_s, retries=0)
        assert link.device is not None
        return AsyncModbusSerialClient(
            link.device,
            baudrate=link.baudrate,
            parity=link.parity,
            stopbits=link.stopbits,
            bytesize=link.bytesize,
            timeout=link.timeout_s,
            retries=0,
        )

    async def _request(self, what: str, call: Any) -> Any:
        async with self._lock:
            try:
                if self._client is None or not self._client.connected:
                    if self._client is not None:
                        self._client.close()
                    self._client = self._make_client()
                    if not await self._client.connect():
                        raise ModbusError(f"cannot connect to {self.link.describe()}")
                response = await asyncio.wait_for(call(self._client), self.link.timeout_s * 2 + 1)
            except ModbusError:
                self._drop()
                raise
            except (ModbusException, OSError, TimeoutError) as e:
                self._drop()
                raise ModbusError(f"{what} on {self.link.describe()}: {e or type(e).__name__}") from None
            if response.isError():
                raise ModbusError(f"{what} on {self.link.describe()}: exception response {response}")
            return response

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    async def read_registers(
        self, unit: int, function: Literal["input", "holding"], address: int, count: int
    ) -> list[int]:
        what = f"reading {count} {function} register(s) at {address} of unit {unit}"
        if function == "input":
            response = await self._request(
                what, lambda c: c.read_input_registers(address, count=count, device_id=unit)
            )
        else:
            response = await self._request(
                what, lambda c: c.read_holding_registers(address, count=count, device_id=unit)
            )
        registers = list(response.registers)
        if len(registers) != count:
            raise ModbusError(f"{what}: got {len(registers)} register(s)")
        return registers

    async def read_value(self, unit: int, spec: RegisterSpec) -> float:
        """One value of a register map, scaled (raw x scale)."""
        registers = await self.read_registers(unit, spec.function, spec.address, spec.words)
        return decode(registers, spec.type, spec.word_order) * spec.scale

    async def read_bit(self, unit: int, function: Literal["coil", "discrete"], address: int) -> bool:
        what = f"reading {function} {address} of unit {unit}"
        if function == "coil":
            response = await self._request(what, lambda c: c.read_coils(address, count=1, device_id=unit))
        else:
            response = await self._request(
                what, lambda c: c.read_discrete_inputs(address, count=1, device_id=unit)
            )
        if not response.bits:
            raise ModbusError(f"{what}: no bits in the answer")
        return bool(response.bits[0])

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        await self._request(
            f"writing coil {address} of unit {unit}",
            lambda c: c.write_coil(address, value, device_id=unit),
        )

    async def write_register(self, unit: int, address: int, value: int) -> None:
        await self._request(
            f"writing register {address} of unit {unit}",
            lambda c: c.write_register(address, value, device_id=unit),
        )

    async def close(self) -> None:
        async with self._lock:
            self._drop()


class Buses:
    """The shim's Modbus links, one :class:`ModbusBus` per TCP endpoint or serial port."""

    def __init__(self) -> None:
        self._buses: dict[tuple[Any, ...], ModbusBus] = {}

    def get(self, link: ModbusLink) -> ModbusBus:
        bus = self._buses.get(link.key)
        if bus is None:
            bus = self._buses[link.key] = ModbusBus(link)
        return bus

    async def close(self) -> None:
        for bus in self._buses.values():
            await bus.close()
