"""The shim's configuration: one TOML file, validated at start-up; every error names its key.

One connector::

    [charge_point]  id, csms_url, password, protocol, meter_interval_s, heartbeat_s
    [meter]         driver, transport, host, port, device, baudrate, parity, unit, ...
    [relay]         driver, chip/line, gpio, path, host/port/unit/coil, active_low
    [evse]          optional: driver = "modbus-current", register, min_amps, max_amps
    [ev]            optional: the car's presence (control pilot / plug switch input)
    [offline]       queue, grace_s

More than one: ``[[connectors]]`` tables, each with its own ``meter``, ``relay``, ``evse`` and ``ev``.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MeterDriverName = Literal["sdm630", "sdm120", "sdm72", "modbus-map", "simulated"]
RelayDriverName = Literal["gpiod", "sysfs", "file", "modbus-coil", "simulated"]
RegisterType = Literal["float32", "float64", "int16", "uint16", "int32", "uint32", "int64", "uint64"]

METER_DRIVERS = ("sdm630", "sdm120", "sdm72", "modbus-map", "simulated")
RELAY_DRIVERS = ("gpiod", "sysfs", "file", "modbus-coil", "simulated")
EV_DRIVERS = ("gpiod", "sysfs", "modbus")
REGISTER_TYPES = ("float32", "float64", "int16", "uint16", "int32", "uint32", "int64", "uint64")
REGISTER_WORDS = {
    "int16": 1,
    "uint16": 1,
    "float32": 2,
    "int32": 2,
    "uint32": 2,
    "float64": 4,
    "int64": 4,
    "uint64": 4,
}
# the characters satwatt accepts in a charger id (csms/ocpp/server.py CHARGER_ID; it answers any other 404)
CHARGER_ID = re.compile(r"^[A-Za-z0-9._~\-@#*+]{1,20}$")


class ConfigError(ValueError):
    """A bad configuration; the message starts with the key, e.g. ``meter.port: ...``."""


@dataclass(frozen=True)
class ModbusLink:
    """One Modbus connection: a TCP endpoint or a serial (RS-485) port; devices on it share it."""

    transport: Literal["tcp", "rtu"]
    host: str | None = None
    port: int = 502
    device: str | None = None
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 1.0

    @property
    def key(self) -> tuple[Any, ...]:
        if self.transport == "tcp":
            return ("tcp", self.host, self.port)
        return ("rtu", self.device)

    def describe(self) -> str:
        if self.transport == "tcp":
            return f"tcp {self.host}:{self.port}"
        return f"rtu {self.device} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True)
class RegisterSpec:
    """A value in a generic meter: where it is, how it is encoded, what multiplies it into Wh / W / V / A."""

    address: int
    type: RegisterType = "float32"
    scale: float = 1.0
    function: Literal["input", "holding"] = "input"
    word_order: Literal["big", "little"] = "big"

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


@dataclass(frozen=True)
class MeterConfig:
    driver: MeterDriverName
    link: ModbusLink | None = None
    unit: int = 1
    # modbus-map: energy (-> Wh) and power (-> W) required; voltage and current optional
    energy: RegisterSpec | None = None
    power: RegisterSpec | None = None
    voltage: RegisterSpec | None = None
    current: RegisterSpec | None = None
    poll_s: float = 1.0
    retries: int = 3
    fault_after: int = 3
    # simulated: the power drawn while the relay is closed, the register at start
    power_w: float = 7400.0
    energy_wh: int = 0


@dataclass(frozen=True)
class RelayConfig:
    driver: RelayDriverName
    active_low: bool = False
    chip: str = "/dev/gpiochip0"
    line: int | str | None = None
    gpio: int | None = None
    sysfs_root: Path = Path("/sys/class/gpio")
    path: Path | None = None
    link: ModbusLink | None = None
    unit: int = 1
    coil: int | None = None


@dataclass(frozen=True)
class EvseConfig:
    driver: Literal["modbus-current"]
    link: ModbusLink
    register: int
    unit: int = 1
    min_amps: float = 6.0
    max_amps: float = 16.0
    scale: float = 1.0  # register units per A (e.g. 10 for 0.1 A steps)
    phases: int = 3
    voltage: float = 230.0


@dataclass(frozen=True)
class EvInputConfig:
    driver: Literal["gpiod", "sysfs", "modbus"]
    active_low: bool = False
    chip: str = "/dev/gpiochip0"
    line: int | str | None = None
    gpio: int | None = None
    sysfs_root: Path = Path("/sys/class/gpio")
    link: ModbusLink | None = None
    unit: int = 1
    address: int | None = None
    function: Literal["discrete", "coil", "input", "holding"] = "discrete"


@dataclass(frozen=True)
class ConnectorConfig:
    id: int
    meter: MeterConfig
    relay: RelayConfig
    evse: EvseConfig | None = None
    ev: EvInputConfig | None = None

    @property
    def phases(self) -> int:
        return self.evse.phases if self.evse else 3

    @property
    def voltage(self) -> float:
        return self.evse.voltage if self.evse else 230.0


@dataclass(frozen=True)
class ChargePointConfig:
    id: str
    csms_url: str
    protocol: Literal["1.6", "2.0.1"] = "2.0.1"
    password: str | None = None
    meter_interval_s: float = 60.0
    heartbeat_s: float = 300.0
    vendor: str = "satwatt"
    model: str = "satwatt-shim"
    serial: str | None = None
    ca_file: Path | None = None  # wss://: the CA (or satwatt's own certificate) to trust
    client_cert: Path | None = None  # wss:// with a client certificate (OCPP security profile 3)
    client_key: Path | None = None

    @property
    def base_url(self) -> str:
        """The URL without the charger id (the charge point appends it)."""
        url = self.csms_url.rstrip("/")
        return url[: -len(self.id) - 1] if url.endswith("/" + self.id) else url


@dataclass(frozen=True)
class OfflineConfig:
    queue: Path = Path("/var/lib/satwatt-shim/queue.sqlite3")
    grace_s: float = 60.0


@dataclass(frozen=True)
class ShimConfig:
    charge_point: ChargePointConfig
    connectors: tuple[ConnectorConfig, ...]
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    source: Path | None = None


# ------------------------------------------------------------------------------------------ parsing
class _Table:
    """A TOML table with the path of its keys, for error messages, and a check for unknown keys."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.key(name)}: {message}")

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.fail(name, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise self.fail(name, f"is required (one of {', '.join(map(repr, choices))})")
            return default
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return str(value)

    def integer(
        self, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(name, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, name: str, default: float, *, lo: float = 0.0, above: bool = False) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, f"must be a number, got {value!r}")
        if value < lo or (above and value == lo):
            raise self.fail(name, f"must be {'>' if above else '>='} {lo:g}, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        return None if value is None else _Table(value, self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(
                unknown[0], "unknown key" + (f" (also {', '.join(unknown[1:])})" if unknown[1:] else "")
            )


def _path(t: _Table, name: str, source: Path | None) -> Path | None:
    """A file path (relative to the config file), which must be readable."""
    value = t.string(name)
    if value is None:
        return None
    path = Path(value)
    if source is not None and not path.is_absolute():
        path = source.parent / path
    if not path.is_file():
        raise t.fail(name, f"no such file: {path}")
    return path


def _line(t: _Table, name: str = "line") -> int | str:
    value = t.raw(name)
    if value is None:
        raise t.fail(name, "is required (the line's offset on the chip, or its name)")
    if isinstance(value, bool) or not isinstance(value, int | str) or (isinstance(value, int) and value < 0):
        raise t.fail(name, f"must be a line offset (integer >= 0) or a line name, got {value!r}")
    return value


def _gpio(t: _Table, driver: str) -> dict[str, Any]:
    """The line of a gpiod or sysfs GPIO (a relay's output, the car's input), as config fields."""
    if driver == "gpiod":
        chip = t.string("chip", "/dev/gpiochip0")
        assert chip is not None
        return {"chip": chip, "line": _line(t)}
    gpio = t.integer("gpio", lo=0, hi=100_000)
    if gpio is None:
        raise t.fail("gpio", "is required (the kernel's GPIO number, as in /sys/class/gpio/gpioN)")
    root = t.string("sysfs_root", "/sys/class/gpio")
    assert root is not None
    return {"gpio": gpio, "sysfs_root": Path(root)}


def _link(t: _Table, default_port: int = 502) -> ModbusLink:
    transport = t.choice("transport", ("tcp", "rtu"))
    timeout = t.number("timeout_s", 1.0, lo=0.0, above=True)
    if transport == "tcp":
        host = t.string("host", required=True)
        port = t.integer("port", default_port, lo=1, hi=65535)
        assert host is not None and port is not None
        return ModbusLink("tcp", host=host, port=port, timeout_s=timeout)
    device = t.string("device", required=True)
    baudrate = t.integer("baudrate", 9600, lo=300, hi=921600)
    parity = t.choice("parity", ("N", "E", "O"), "N")
    stopbits = t.integer("stopbits", 1, lo=1, hi=2)
    bytesize = t.integer("bytesize", 8, lo=7, hi=8)
    assert baudrate is not None and stopbits is not None and bytesize is not None
    return ModbusLink(
        "rtu",
        device=device,
        baudrate=baudrate,
        parity=parity,  # type: ignore[arg-type]
        stopbits=stopbits,
        bytesize=bytesize,
        timeout_s=timeout,
    )


def _register(t: _Table, default_scale: float) -> RegisterSpec:
    address = t.integer("address", lo=0, hi=65535)
    if address is None:
        raise t.fail("address", "is required (the register address, 0-based as on the wire)")
    typ = t.choice("type", REGISTER_TYPES, "float32")
    scale = t.raw("scale")
    if scale is None:
        scale = default_scale
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not math.isfinite(scale)
        or scale == 0
    ):
        raise t.fail("scale", f"must be a non-zero number, got {scale!r}")
    spec = RegisterSpec(
        address=address,
        type=typ,  # type: ignore[arg-type]
        scale=float(scale),
        function=t.choice("function", ("input", "holding"), "input"),  # type: ignore[arg-type]
        word_order=t.choice("word_order", ("big", "little"), "big"),  # type: ignore[arg-type]
    )
    t.done()
    return spec


def _meter(t: _Table) -> MeterConfig:
    driver = t.choice("driver", METER_DRIVERS)
    poll_s = t.number("poll_s", 1.0, lo=0.05)
    retries = t.integer("retries", 3, lo=1, hi=10)
    fault_after = t.integer("fault_after", 3, lo=1, hi=1000)
    assert retries is not None and fault_after is not None
    if driver == "simulated":
        power_w = t.number("power_w", 7400.0)
        energy_wh = t.integer("energy_wh", 0, lo=0)
        assert energy_wh is not None
        t.done()
        return MeterConfig(
            "simulated",
            poll_s=poll_s,
            retries=retries,
            fault_after=fault_after,
            power_w=power_w,
            energy_wh=energy_wh,
        )
    link = _link(t)
    unit = t.integer("unit", 1, lo=0, hi=247)
    assert unit is not None
    regs: dict[str, RegisterSpec | None] = {}
    if driver == "modbus-map":
        for name, scale, required in (
            ("energy", 1.0, True),
            ("power", 1.0, True),
            ("voltage", 1.0, False),
            ("current", 1.0, False),
        ):
            sub = t.table(name)
            if sub is None:
                if required:
                    raise t.fail(
                        name,
                        f"is required for driver 'modbus-map': a table with address, type and "
                        f"scale (the factor to {'Wh' if name == 'energy' else 'W'})",
                    )
                regs[name] = None
            else:
                regs[name] = _register(sub, scale)
    t.done()
    return MeterConfig(
        driver,  # type: ignore[arg-type]
        link=link,
        unit=unit,
        energy=regs.get("energy"),
        power=regs.get("power"),
        voltage=regs.get("voltage"),
        current=regs.get("current"),
        poll_s=poll_s,
        retries=retries,
        fault_after=fault_after,
    )


def _relay(t: _Table) -> RelayConfig:
    driver = t.choice("driver", RELAY_DRIVERS)
    active_low = t.boolean("active_low", False)
    if driver in ("gpiod", "sysfs"):
        cfg = RelayConfig(driver, active_low=active_low, **_gpio(t, driver))  # type: ignore[arg-type]
    elif driver == "file":
        path = t.string("path", required=True)
        assert path is not None
        cfg = RelayConfig("file", active_low=active_low, path=Path(path))
    elif driver == "modbus-coil":
        link = _link(t)
        unit = t.integer("unit", 1, lo=0, hi=247)
        coil = t.integer("coil", lo=0, hi=65535)
        if coil is None:
            raise t.fail("coil", "is required (the coil address, 0-based as on the wire)")
        assert unit is not None
        cfg = RelayConfig("modbus-coil", active_low=active_low, link=link, unit=unit, coil=coil)
    else:
        cfg = RelayConfig("simulated", active_low=active_low)
    t.done()
    return cfg


def _evse(t: _Table) -> EvseConfig:
    t.choice("driver", ("modbus-current",))
    link = _link(t)
    unit = t.integer("unit", 1, lo=0, hi=247)
    register = t.integer("register", lo=0, hi=65535)
    if register is None:
        raise t.fail("register", "is required (the holding register of the current limit)")
    min_amps = t.number("min_amps", 6.0)
    max_amps = t.number("max_amps", 16.0, lo=0.0, above=True)
    if min_amps > max_amps:
        raise t.fail("min_amps", f"must not exceed max_amps ({max_amps:g}), got {min_amps:g}")
    scale = t.number("scale", 1.0, lo=0.0, above=True)
    phases = t.integer("phases", 3, lo=1, hi=3)
    voltage = t.number("voltage", 230.0, lo=0.0, above=True)
    assert unit is not None and phases is not None
    if phases == 2:
        raise t.fail("phases", "must be 1 or 3")
    if max_amps * phases * voltage > 22_000:
        raise t.fail("max_amps", f"{max_amps:g} A x {phases} x {voltage:g} V is over 22 kW (AC)")
    t.done()
    return EvseConfig(
        "modbus-current",
        link=link,
        register=register,
        unit=unit,
        min_amps=min_amps,
        max_amps=max_amps,
        scale=scale,
        phases=phases,
        voltage=voltage,
    )


def _ev(t: _Table) -> EvInputConfig:
    driver = t.choice("driver", EV_DRIVERS)
    active_low = t.boolean("active_low", False)
    if driver in ("gpiod", "sysfs"):
        cfg = EvInputConfig(driver, active_low=active_low, **_gpio(t, driver))  # type: ignore[arg-type]
    else:
        link = _link(t)
        unit = t.integer("unit", 1, lo=0, hi=247)
        address = t.integer("address", lo=0, hi=65535)
        if address is None:
            raise t.fail("address", "is required (the input's address, 0-based as on the wire)")
        function = t.choice("function", ("discrete", "coil", "input", "holding"), "discrete")
        assert unit is not None
        cfg = EvInputConfig(
            "modbus", active_low=active_low, link=link, unit=unit, address=address, function=function
        )  # type: ignore[arg-type]
    t.done()
    return cfg


def _connector(t: _Table, cid: int) -> ConnectorConfig:
    meter = t.table("meter")
    if meter is None:
        raise t.fail("meter", "is required (a [meter] table)")
    relay = t.table("relay")
    if relay is None:
        raise t.fail("relay", "is required (a [relay] table)")
    evse = t.table("evse")
    ev = t.table("ev")
    return ConnectorConfig(
        id=cid,
        meter=_meter(meter),
        relay=_relay(relay),
        evse=_evse(evse) if evse is not None else None,
        ev=_ev(ev) if ev is not None else None,
    )


def parse_config(data: dict[str, Any], source: Path | None = None) -> ShimConfig:
    root = _Table(data, "")
    cpt = root.table("charge_point")
    if cpt is None:
        raise ConfigError("charge_point: is required (a [charge_point] table)")
    cp_id = cpt.string("id", required=True)
    assert cp_id is not None
    if not CHARGER_ID.match(cp_id):
        raise cpt.fail(
            "id", f"must be 1-20 letters, digits or ._~-@#*+ (as registered in satwatt), got {cp_id!r}"
        )
    url = cpt.string("csms_url", required=True)
    assert url is not None
    if not re.match(r"^wss?://[^/\s]+", url):
        raise cpt.fail(
            "csms_url", f"must be a ws:// or wss:// URL, e.g. ws://satwatt.local:8180/ocpp, got {url!r}"
        )
    protocol = cpt.choice("protocol", ("1.6", "2.0.1"), "2.0.1")
    password = cpt.string("password")
    if password is not None and not 16 <= len(password) <= (20 if protocol == "1.6" else 40):
        raise cpt.fail(
            "password", f"must be 16-{20 if protocol == '1.6' else 40} characters for OCPP {protocol}"
        )
    charge_point = ChargePointConfig(
        id=cp_id,
        csms_url=url,
        protocol=protocol,  # type: ignore[arg-type]
        password=password,
        meter_interval_s=cpt.number("meter_interval_s", 60.0, lo=0.0, above=True),
        heartbeat_s=cpt.number("heartbeat_s", 300.0, lo=0.0, above=True),
        vendor=cpt.string("vendor", "satwatt") or "satwatt",
        model=cpt.string("model", "satwatt-shim") or "satwatt-shim",
        serial=cpt.string("serial"),
        ca_file=_path(cpt, "ca_file", source),
        client_cert=_path(cpt, "client_cert", source),
        client_key=_path(cpt, "client_key", source),
    )
    tls_keys = [k for k in ("ca_file", "client_cert", "client_key") if getattr(charge_point, k) is not None]
    if tls_keys and not url.startswith("wss://"):
        raise cpt.fail(tls_keys[0], "is only used with a wss:// csms_url")
    if (charge_point.client_cert is None) != (charge_point.client_key is None):
        raise cpt.fail(
            "client_key" if charge_point.client_key is None else "client_cert",
            "client_cert and client_key go together",
        )
    cpt.done()

    connectors: list[ConnectorConfig] = []
    listed = root.raw("connectors")
    single = any(root.has(k) for k in ("meter", "relay", "evse", "ev"))
    if listed is not None:
        if single:
            raise ConfigError(
                "connectors: give either [meter]/[relay] (one connector) or [[connectors]], not both"
            )
        if not isinstance(listed, list) or not listed:
            raise ConfigError("connectors: must be a list of [[connectors]] tables")
        for i, item in enumerate(listed, start=1):
            t = _Table(item, f"connectors[{i}]")
            connectors.append(_connector(t, i))
            t.done()
    else:
        connectors.append(_connector(root, 1))

    off = root.table("offline")
    offline = OfflineConfig()
    if off is not None:
        queue = off.string("queue", str(offline.queue))
        assert queue is not None
        qpath = Path(queue)
        if source is not None and not qpath.is_absolute():
            qpath = source.parent / qpath
        offline = OfflineConfig(queue=qpath, grace_s=off.number("grace_s", offline.grace_s))
        off.done()
    root.done()
    _check_shared_outputs(connectors)
    return ShimConfig(charge_point=charge_point, connectors=tuple(connectors), offline=offline, source=source)


def _check_shared_outputs(connectors: list[ConnectorConfig]) -> None:
    seen: dict[tuple[Any, ...], int] = {}
    for c in connectors:
        r = c.relay
        ident: tuple[Any, ...] | None = {
            "gpiod": (r.chip, r.line),
            "sysfs": (str(r.sysfs_root), r.gpio),
            "file": (str(r.path),),
            "modbus-coil": (r.link.key if r.link else None, r.unit, r.coil),
            "simulated": None,
        }[r.driver]
        if ident is None:
            continue
        ident = (r.driver, *ident)
        if ident in seen:
            raise ConfigError(f"connectors[{c.id}].relay: drives the same output as connector {seen[ident]}")
        seen[ident] = c.id


def load_config(path: Path) -> ShimConfig:
    """Read and validate a config file; :class:`ConfigError` names the key of any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return parse_config(data, source=path.resolve())
