"""Fixtures of the shim tests: a pymodbus-simulated Eastron SDM630 (with coils for a relay module) on a
free TCP port, a TCP relay that can cut the shim off from satwatt, and helpers to write shim configs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from chargepoint_sim.shim.modbus import encode

ENERGY = 0x0048  # SDM630 total import energy, kWh
POWER = 0x0034  # SDM630 total system power, W
VOLTAGES = (0x0000, 0x0002, 0x0004)
CURRENTS = (0x0006, 0x0008, 0x000A)
EVSE_REGISTER = 20  # holding register of the simulated EVSE's current limit


class ModbusSim:
    """A Modbus TCP device (unit 1): an SDM630's input registers, coils for a relay module, holding
    registers for an EVSE; the test changes values while the shim reads them."""

    def __init__(self) -> None:
        self.failing = False  # answer every input register read with an exception
        self.reads = 0
        self.server: ModbusTcpServer | None = None
        self.port = 0

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code == 4:
            self.reads += 1
            if self.failing:
                return ExcCodes.DEVICE_FAILURE
        return None

    async def start(self) -> ModbusSim:
        device = SimDevice(
            id=1,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=0x160, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        await self.server.serve_forever(background=True)
        transport: Any = self.server.transport
        self.port = transport.sockets[0].getsockname()[1]
        await self.set_float(ENERGY, 0.0)
        for a in VOLTAGES:
            await self.set_float(a, 230.0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()

    async def set_float(self, address: int, value: float) -> None:
        assert self.server is not None
        await self.server.context.async_setValues(1, 4, address, encode(value, "float32"))

    async def set_energy_kwh(self, kwh: float) -> None:
        await self.set_float(ENERGY, kwh)

    async def set_power_w(self, watts: float) -> None:
        await self.set_float(POWER, watts)
        for a in CURRENTS:
            await self.set_float(a, watts / 3 / 230.0)

    async def coil(self, address: int) -> bool:
        assert self.server is not None
        bits = await self.server.context.async_getValues(1, 1, address, 1)
        assert isinstance(bits, list)
        return bool(bits[0])

    async def set_coil(self, address: int, value: bool) -> None:
        assert self.server is not None
        await self.server.context.async_setValues(1, 5, address, [value])

    async def holding(self, address: int) -> int:
        assert self.server is not None
        regs = await self.server.context.async_getValues(1, 3, address, 1)
        assert isinstance(regs, list)
        return int(regs[0])


@pytest.fixture
async def sdm630() -> AsyncIterator[ModbusSim]:
    sim = await ModbusSim().start()
    yield sim
    await sim.stop()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; :meth:`cut` drops every connection and refuses new ones
    (the central system has gone away), :meth:`restore` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for t in list(self._pipes):
            t.cancel()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` holds, re-checking every 50 ms; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def modbus_tcp(port: int) -> str:
    """The TOML keys of a device on the test's Modbus TCP simulator (unit 1)."""
    return f'transport = "tcp"\nhost = "127.0.0.1"\nport = {port}\nunit = 1'


def shim_config(
    tmp_path: Path,
    *,
    cp_id: str,
    csms_url: str,
    protocol: str,
    password: str,
    modbus_port: int,
    relay: str,
    grace_s: float = 2.0,
    meter_interval_s: float = 1.0,
    extra: str = "",
) -> Path:
    """tmp_path/shim.toml: one connector, an SDM630 on the simulator, the queue tmp_path/queue.sqlite3."""
    return write_config(
        tmp_path / "shim.toml",
        f"""
[charge_point]
id = "{cp_id}"
csms_url = "{csms_url}"
protocol = "{protocol}"
password = "{password}"
meter_interval_s = {meter_interval_s}
heartbeat_s = 60

[meter]
driver = "sdm630"
{modbus_tcp(modbus_port)}
poll_s = 0.1
retries = 2
fault_after = 2
timeout_s = 0.5

[relay]
{relay}

[offline]
queue = "{tmp_path / "queue.sqlite3"}"
grace_s = {grace_s}
{extra}
""",
    )
