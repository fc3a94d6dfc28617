"""The shim's drivers on their own: sysfs and file relays against a temporary directory standing in for
/sys/class/gpio, the Eastron and generic register maps against a pymodbus server, the meter poller's
refusal of implausible readings, and the offline queue across a reopen."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from chargepoint_sim.chargepoint import Transaction
from chargepoint_sim.shim.config import MeterConfig, ModbusLink, RegisterSpec, RelayConfig, parse_config
from chargepoint_sim.shim.evse import make_ev_input
from chargepoint_sim.shim.meters import (
    EASTRON_MAPS,
    EastronMeter,
    MapMeter,
    PolledMeter,
    SimulatedMeter,
    make_meter,
)
from chargepoint_sim.shim.modbus import Buses, ModbusBus, encode
from chargepoint_sim.shim.queue import OfflineQueue, QueueError
from chargepoint_sim.shim.relays import RelayError, make_relay
from tests.shim.conftest import ModbusSim


def float32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def fake_gpio(root: Path, gpio: int, value: str = "0") -> Path:
    d = root / f"gpio{gpio}"
    d.mkdir(parents=True)
    (d / "direction").write_text("in")
    (d / "value").write_text(value)
    return d


async def test_sysfs_relay_on_an_exported_line(tmp_path: Path) -> None:
    d = fake_gpio(tmp_path, 17, "1")
    relay = make_relay(RelayConfig("sysfs", gpio=17, sysfs_root=tmp_path), Buses())
    assert (d / "direction").read_text() == "low"  # an output, at the open level, in one write
    await relay.write(True)
    assert (d / "value").read_text() == "1" and await relay.read() is True
    await relay.write(False)
    assert (d / "value").read_text() == "0" and await relay.read() is False


async def test_sysfs_relay_exports_its_line_and_honours_active_low(tmp_path: Path) -> None:
    (tmp_path / "export").write_text("")

    def kernel() -> None:  # what the kernel does when a number is written to export
        deadline = time.monotonic() + 5
        while (tmp_path / "export").read_text() != "22":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fake_gpio(tmp_path, 22)

    t = threading.Thread(target=kernel)
    t.start()
    relay = await asyncio.to_thread(
        make_relay, RelayConfig("sysfs", gpio=22, sysfs_root=tmp_path, active_low=True), Buses()
    )
    t.join()
    d = tmp_path / "gpio22"
    assert (d / "direction").read_text() == "high"  # active low: open is a high output
    await relay.write(True)
    assert (d / "value").read_text() == "0" and await relay.read() is True


async def test_sysfs_relay_that_cannot_be_set_up(tmp_path: Path) -> None:
    with pytest.raises(RelayError, match="cannot set up GPIO 5"):
        await asyncio.to_thread(
            make_relay, RelayConfig("sysfs", gpio=5, sysfs_root=tmp_path / "none"), Buses()
        )


async def test_file_relay_and_its_read_back(tmp_path: Path) -> None:
    path = tmp_path / "relay"
    relay = make_relay(RelayConfig("file", path=path, active_low=True), Buses())
    await relay.write(False)
    assert path.read_text() == "1"
    await relay.write(True)
    assert path.read_text() == "0" and await relay.read() is True
    path.write_text("garbage")
    with pytest.raises(RelayError, match="holds 'garbage'"):
        await relay.read()


def test_gpiod_without_its_bindings_says_how_to_install_them() -> None:
    try:
        import gpiod  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gpiod is installed: the driver would request a real line")
    with pytest.raises(RelayError, match=r"install them .*\[board\]"):
        make_relay(RelayConfig("gpiod", chip="gpiochip0", line=17), Buses())


async def test_sysfs_car_input(tmp_path: Path) -> None:
    d = fake_gpio(tmp_path, 9, "0")
    cfg = parse_config(
        {
            "charge_point": {"id": "CP", "csms_url": "ws://h/ocpp"},
            "meter": {"driver": "simulated"},
            "relay": {"driver": "simulated"},
            "ev": {"driver": "sysfs", "gpio": 9, "sysfs_root": str(tmp_path), "active_low": True},
        }
    )
    ev_cfg = cfg.connectors[0].ev
    assert ev_cfg is not None
    ev = make_ev_input(ev_cfg, Buses())
    assert (d / "direction").read_text() == "in"
    assert await ev.read() is True  # active low: 0 means a car
    (d / "value").write_text("1")
    assert await ev.read() is False


async def test_eastron_maps(sdm630: ModbusSim) -> None:
    bus = ModbusBus(ModbusLink("tcp", host="127.0.0.1", port=sdm630.port))
    try:
        for kwh in (0.0, 0.001, 12.345, 9999.999, 123456.7):
            await sdm630.set_energy_kwh(kwh)
            reading = await EastronMeter(bus, 1, EASTRON_MAPS["sdm630"]).read()
            # the register's float32, in whole Wh, rounded: 12.345 kWh is held as 12.3450002 -> 12345 Wh;
            # 123456.7 kWh as 123456.703125 (float32 steps are 7.8 Wh up there) -> 123456703 Wh
            assert reading.energy_wh == round(float32(kwh) * 1000)
        assert [round(float32(k) * 1000) for k in (12.345, 123456.7)] == [12345, 123456703]
        await sdm630.set_power_w(6900.0)
        reading = await EastronMeter(bus, 1, EASTRON_MAPS["sdm72"]).read()
        assert reading.power_w == 6900.0 and reading.voltage_v == (230.0, 230.0, 230.0)
        assert [round(a, 3) for a in reading.current_a] == [10.0, 10.0, 10.0]
        # SDM120: one phase, power at 0x000C
        await sdm630.set_float(0x000C, 3680.0)
        reading = await EastronMeter(bus, 1, EASTRON_MAPS["sdm120"]).read()
        assert reading.power_w == 3680.0 and reading.voltage_v == (230.0,) and len(reading.current_a) == 1
    finally:
        await bus.close()


async def test_generic_register_map(sdm630: ModbusSim) -> None:
    assert sdm630.server is not None
    # energy: uint32 in 0.01 kWh (scale 10 -> Wh), low word first; power: int16 in W, holding registers
    await sdm630.server.context.async_setValues(1, 16, 40, encode(1234567, "uint32", "little"))
    await sdm630.server.context.async_setValues(1, 16, 42, encode(-15, "int16"))
    cfg = MeterConfig(
        "modbus-map",
        energy=RegisterSpec(40, "uint32", 10.0, "holding", "little"),
        power=RegisterSpec(42, "int16", 1.0, "holding"),
    )
    bus = ModbusBus(ModbusLink("tcp", host="127.0.0.1", port=sdm630.port))
    try:
        reading = await MapMeter(bus, 1, cfg).read()
    finally:
        await bus.close()
    assert reading.energy_wh == 12345670 and reading.power_w == -15.0


async def test_the_poller_refuses_what_is_not_a_measurement(sdm630: ModbusSim) -> None:
    bus = ModbusBus(ModbusLink("tcp", host="127.0.0.1", port=sdm630.port, timeout_s=0.5))
    cfg = MeterConfig("sdm630", retries=2, fault_after=2, poll_s=0.05)
    meter = PolledMeter(EastronMeter(bus, 1, EASTRON_MAPS["sdm630"]), cfg)
    try:
        await sdm630.set_energy_kwh(10.0)
        assert await meter.poll() and meter.energy_wh() == 10000.0 and meter.healthy
        await sdm630.set_energy_kwh(9.0)  # backwards
        assert not await meter.poll() and "went backwards" in (meter.last_error or "")
        await sdm630.set_energy_kwh(math.nan)
        assert not await meter.poll() and "not a number" in (meter.last_error or "")
        assert not meter.healthy and meter.energy_wh() == 10000.0  # the last good reading, never a new one
        assert meter.power_w() == 0.0
        await sdm630.set_energy_kwh(10.5)
        assert await meter.poll() and meter.healthy and meter.energy_wh() == 10500.0
        await sdm630.stop()  # nobody answers any more
        assert not await meter.poll() and "cannot connect" in (meter.last_error or "")
    finally:
        await bus.close()


async def test_the_simulated_meter_counts_only_while_the_relay_is_closed() -> None:
    closed = False
    meter = SimulatedMeter(MeterConfig("simulated", power_w=36_000_000.0), lambda: closed)  # 10 Wh per ms
    assert (await meter.read()).power_w == 0.0
    closed = True
    first = await meter.read()
    await asyncio.sleep(0.01)
    second = await meter.read()
    assert first.power_w == 36_000_000.0 and second.energy_wh > first.energy_wh


def tx(local_id: int, seq: int = 0, ended: bool = False) -> Transaction:
    return Transaction(
        connector_id=1,
        id_tag="TAG",
        meter_start_wh=100,
        started_at=1.0,
        local_id=local_id,
        tx_id="t",
        seq_no=seq,
        ended=ended,
    )


def test_the_queue_survives_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q" / "queue.sqlite3"
    q = OfflineQueue(path, "CP-1", "2.0.1")
    first = q.next_local_id()
    keys = [q.append("TransactionEvent", {"seqNo": i}, tx(first, seq=i + 1)) for i in range(5)]
    q.append("NotifyReport", {"x": 1}, None)
    q.done(keys[0])
    q.close()

    q = OfflineQueue(path, "CP-1", "2.0.1")  # as after a restart
    pending = q.pending()
    assert [m.payload.get("seqNo") for m in pending] == [1, 2, 3, 4, None]
    assert [m.key for m in pending] == sorted(m.key for m in pending)
    (open_tx,) = q.open_transactions()
    assert open_tx.local_id == first and open_tx.seq_no == 5 and open_tx.meter_start_wh == 100
    assert q.next_local_id() > first
    # ending the transaction and sending everything empties the queue
    end = q.append("TransactionEvent", {"seqNo": 5}, tx(first, seq=6, ended=True))
    for m in [*pending, type(pending[0])(end, "", {}, None)]:
        q.done(m.key)
    assert q.count() == 0 and q.open_transactions() == []
    q.close()


def test_the_queue_remembers_csms_transaction_ids(tmp_path: Path) -> None:
    q = OfflineQueue(tmp_path / "queue.sqlite3", "CP-1", "1.6")
    q.append("StartTransaction", {"meterStart": 1}, tx(7))
    q.set_csms_tx_id(7, 4242)
    q.close()
    q = OfflineQueue(tmp_path / "queue.sqlite3", "CP-1", "1.6")
    assert q.csms_tx_ids() == {7: 4242}
    q.close()


def test_a_queue_of_another_charger_is_refused_while_it_holds_messages(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    q = OfflineQueue(path, "CP-1", "1.6")
    key = q.append("StartTransaction", {"meterStart": 1}, tx(1))
    q.close()
    with pytest.raises(QueueError, match=r"offline\.queue: .* holds 1 unsent message"):
        OfflineQueue(path, "CP-1", "2.0.1")
    q = OfflineQueue(path, "CP-1", "1.6")
    q.done(key)
    q.close()
    OfflineQueue(path, "CP-2", "2.0.1").close()  # empty: anyone may use it


async def test_an_sdm630_over_modbus_rtu() -> None:
    """RTU framing (CRC, unit addressing) end to end; pyserial's socket:// URL stands in for the
    RS-485 port, as ``device`` in the config would name /dev/ttyAMA0."""
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = SimDevice(
        id=7,
        simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=0x100, values=0, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusSerialServer(
        device, framer=FramerType.RTU, port=f"socket://127.0.0.1:{port}", baudrate=9600
    )
    await server.serve_forever(background=True)
    try:
        await server.context.async_setValues(7, 4, 0x48, encode(42.5, "float32"))
        await server.context.async_setValues(7, 4, 0x0C, encode(2300.0, "float32"))
        cfg = parse_config(
            {
                "charge_point": {"id": "CP", "csms_url": "ws://h/ocpp"},
                "meter": {
                    "driver": "sdm120",
                    "transport": "rtu",
                    "device": f"socket://127.0.0.1:{port}",
                    "baudrate": 9600,
                    "parity": "N",
                    "unit": 7,
                },
                "relay": {"driver": "simulated"},
            }
        )
        buses = Buses()
        meter = PolledMeter(
            make_meter(cfg.connectors[0].meter, buses, lambda: False), cfg.connectors[0].meter
        )
        try:
            assert await meter.poll(), meter.last_error
        finally:
            await buses.close()
        assert meter.last is not None and meter.last.energy_wh == 42500 and meter.last.power_w == 2300.0
    finally:
        await server.shutdown()


def test_gpiod_names_a_chip_it_cannot_open(tmp_path: Path) -> None:
    """Where the [board] extra is installed: the libgpiod v2 request, up to the missing chip."""
    pytest.importorskip("gpiod")
    chip = tmp_path / "gpiochip9"
    with pytest.raises(RelayError, match=rf"cannot request line 17 of {chip}"):
        make_relay(RelayConfig("gpiod", chip=str(chip), line=17), Buses())
