"""The shim's configuration: the example validates, every error names its key, the CLI reports bad
configs without a traceback, and ``--check`` reads a meter once and switches nothing."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chargepoint_sim.shim.config import ConfigError, load_config, parse_config
from tests.shim.conftest import ModbusSim

EXAMPLE = Path(__file__).parents[2] / "deploy" / "shim" / "shim.example.toml"

BASE: dict[str, Any] = {
    "charge_point": {"id": "CP-1", "csms_url": "ws://127.0.0.1:8180/ocpp", "protocol": "1.6"},
    "meter": {"driver": "sdm630", "transport": "tcp", "host": "127.0.0.1"},
    "relay": {"driver": "file", "path": "/tmp/relay"},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one key set (value None: removed); path like "meter.port"."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return data


def test_the_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    (c,) = cfg.connectors
    assert cfg.charge_point.protocol == "2.0.1" and c.meter.driver == "sdm630"
    assert c.meter.link is not None and c.meter.link.transport == "rtu" and c.relay.driver == "gpiod"
    assert cfg.offline.grace_s == 60


def test_a_minimal_config_gets_the_defaults() -> None:
    cfg = parse_config(BASE)
    assert cfg.charge_point.meter_interval_s == 60 and cfg.charge_point.heartbeat_s == 300
    (c,) = cfg.connectors
    assert c.meter.link is not None and c.meter.link.port == 502 and c.meter.unit == 1
    assert c.evse is None and c.ev is None and not c.relay.active_low


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("charge_point.csms_url", "http://x/ocpp", "charge_point.csms_url: must be a ws:// or wss:// URL"),
        ("charge_point.id", None, "charge_point.id: is required"),
        ("charge_point.id", "has space", "charge_point.id: must be 1-20"),
        ("charge_point.id", "CP:1", "charge_point.id: must be 1-20"),  # satwatt would answer 404
        ("charge_point.protocol", "2.0", "charge_point.protocol: must be one of '1.6', '2.0.1'"),
        ("charge_point.password", "short", "charge_point.password: must be 16-20 characters"),
        ("charge_point.meter_interval_s", 0, "charge_point.meter_interval_s: must be > 0"),
        ("charge_point.heartbeat_s", "often", "charge_point.heartbeat_s: must be a number"),
        ("meter.driver", "sdm999", "meter.driver: must be one of"),
        ("meter.port", 70000, "meter.port: must be between 1 and 65535"),
        ("meter.port", "502", "meter.port: must be an integer"),
        ("meter.transport", "udp", "meter.transport: must be one of 'tcp', 'rtu'"),
        ("meter.host", None, "meter.host: is required"),
        ("meter.unit", 300, "meter.unit: must be between 0 and 247"),
        ("meter.colour", "blue", "meter.colour: unknown key"),
        ("relay.driver", None, "relay.driver: is required"),
        ("relay.path", None, "relay.path: is required"),
        ("relay.active_low", "yes", "relay.active_low: must be true or false"),
        ("offline.grace_s", -1, "offline.grace_s: must be >= 0"),
        ("offline.queue", 3, "offline.queue: must be a non-empty string"),
        ("meter", None, "meter: is required"),
        ("charge_point", None, "charge_point: is required"),
    ],
)
def test_errors_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_(path, value))
    assert str(err.value).startswith(message), str(err.value)


def test_driver_specific_keys_are_checked() -> None:
    rtu = with_("meter", {"driver": "sdm120", "transport": "rtu", "baudrate": 9600})
    with pytest.raises(ConfigError, match=r"^meter\.device: is required"):
        parse_config(rtu)
    mapped = with_("meter", {"driver": "modbus-map", "transport": "tcp", "host": "h"})
    with pytest.raises(ConfigError, match=r"^meter\.energy: is required for driver 'modbus-map'"):
        parse_config(mapped)
    mapped["meter"]["energy"] = {"address": 10, "type": "uint128"}
    with pytest.raises(ConfigError, match=r"^meter\.energy\.type: must be one of"):
        parse_config(mapped)
    gpiod = with_("relay", {"driver": "gpiod", "chip": "gpiochip0"})
    with pytest.raises(ConfigError, match=r"^relay\.line: is required"):
        parse_config(gpiod)
    coil = with_("relay", {"driver": "modbus-coil", "transport": "tcp", "host": "h"})
    with pytest.raises(ConfigError, match=r"^relay\.coil: is required"):
        parse_config(coil)
    evse = with_(
        "evse",
        {
            "driver": "modbus-current",
            "transport": "tcp",
            "host": "h",
            "register": 5,
            "min_amps": 20,
            "max_amps": 16,
        },
    )
    with pytest.raises(ConfigError, match=r"^evse\.min_amps: must not exceed max_amps"):
        parse_config(evse)


def test_several_connectors() -> None:
    data = {
        "charge_point": BASE["charge_point"],
        "connectors": [
            {"meter": BASE["meter"], "relay": {"driver": "file", "path": "/tmp/r1"}},
            {"meter": BASE["meter"] | {"unit": 2}, "relay": {"driver": "file", "path": "/tmp/r2"}},
        ],
    }
    cfg = parse_config(data)
    assert [c.id for c in cfg.connectors] == [1, 2] and cfg.connectors[1].meter.unit == 2
    data["connectors"][1]["relay"]["path"] = "/tmp/r1"
    with pytest.raises(ConfigError, match=r"^connectors\[2\]\.relay: drives the same output as connector 1"):
        parse_config(data)
    data["connectors"][1]["relay"] = {"driver": "file"}
    with pytest.raises(ConfigError, match=r"^connectors\[2\]\.relay\.path: is required"):
        parse_config(data)
    with pytest.raises(ConfigError, match=r"^connectors: give either"):
        parse_config(data | {"meter": BASE["meter"]})


def test_the_queue_path_is_relative_to_the_config(tmp_path: Path) -> None:
    text = tmp_path / "shim.toml"
    text.write_text(
        '[charge_point]\nid = "CP-1"\ncsms_url = "ws://h/ocpp"\n'
        '[meter]\ndriver = "simulated"\n[relay]\ndriver = "simulated"\n[offline]\nqueue = "q.sqlite3"\n'
    )
    assert load_config(text).offline.queue == tmp_path / "q.sqlite3"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chargepoint_sim.cli", "shim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_the_cli_reports_a_bad_config_by_key_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("baudrate = 9600", 'baudrate = "fast"'))
    result = run_cli("--config", str(bad))
    assert result.returncode == 2
    assert "meter.baudrate: must be an integer, got 'fast'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[charge_point\n")
    result = run_cli("--config", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stdout + result.stderr


async def test_check_reads_the_meter_and_switches_nothing(sdm630: ModbusSim, tmp_path: Path) -> None:
    await sdm630.set_energy_kwh(1234.5)
    await sdm630.set_power_w(6900.0)
    relay = tmp_path / "relay"
    relay.write_text("1")
    config = tmp_path / "shim.toml"
    config.write_text(
        f'[charge_point]\nid = "CP-1"\ncsms_url = "ws://127.0.0.1:9/ocpp"\n'
        f'[meter]\ndriver = "sdm630"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {sdm630.port}\n'
        f'[relay]\ndriver = "file"\npath = "{relay}"\n[offline]\nqueue = "{tmp_path / "q.sqlite3"}"\n'
    )
    result = await asyncio.to_thread(run_cli, "--check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (
        "1234500 Wh" in result.stdout
        and "6900 W" in result.stdout
        and "230.0 / 230.0 / 230.0 V" in result.stdout
    )
    assert relay.read_text() == "1"  # untouched
    assert not (tmp_path / "q.sqlite3").exists()  # nothing queued, nothing sent
    sdm630.failing = True
    result = await asyncio.to_thread(run_cli, "--check", "--config", str(config))
    assert result.returncode == 1 and "meter:" in result.stderr
