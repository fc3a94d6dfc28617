"""Scenario files: fleets of simulated charge points and a timeline of what happens to them.

A scenario is YAML (``.yaml`` / ``.yml``) or TOML (``.toml``)::

    name: evening-rush
    csms: ws://127.0.0.1:8180/ocpp      # optional; the CLI's --csms wins
    clock_scale: 1                       # simulated seconds per real second
    duration: 120                        # optional: stop after this many real seconds
    fleets:
      - id_pattern: "AC-{n:03d}"         # {n} counts from 1 within the fleet
        count: 3
        protocol: mixed                  # 1.6 | 2.0.1 | mixed (alternating)
        connectors: 2
        charger: {kind: AC, power_kw: 22}
        ev: {model: sedan, soc: 0.3}     # or just: sedan
        password: secret                 # HTTP Basic password (user = charger id)
        meter_interval: 10
        faults: {quirks: [energy_kwh], reject_charging_profiles: false}
    timeline:                            # `at` is real seconds after start
      - {at: 2, charger: AC-001, connector: 1, action: plug_in, ev: suv, soc: 0.2}
      - {at: 3, charger: AC-001, action: authorize, id_tag: TAG-1}
      - {at: 30, charger: "AC-*", action: disconnect, duration: 10}
      - {at: 60, charger: AC-001, action: unplug}

Actions: ``plug_in`` (ev, soc, target_soc), ``unplug``, ``authorize`` (id_tag), ``stop`` (reason),
``disconnect`` (duration, graceful), ``reboot``, ``faults`` (any Faults field), ``connector_fault``
(faulted, error_code).  ``charger`` is an id, a glob (``AC-*``) or a list of them.

Errors name the offending field, e.g. ``fleets[0].protocol: must be one of 1.6, 2.0.1, mixed``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chargepoint_sim.chargepoint import QUIRKS, ChargePoint, ChargePointOptions, Faults, create_charge_point
from chargepoint_sim.physics import EV_MODELS, ChargerSpec
from chargepoint_sim.rpc import Stats

ACTIONS = ("plug_in", "unplug", "authorize", "stop", "disconnect", "reboot", "faults", "connector_fault")
FLEET_PROTOCOLS = ("1.6", "2.0.1", "mixed")


class ScenarioError(ValueError):
    """A scenario file is not valid; the message names the file and the field."""


@dataclass
class EVSpec:
    model: str = "sedan"
    soc: float = 0.3
    target_soc: float = 1.0


@dataclass
class FleetSpec:
    id_pattern: str = "SIM-{n:04d}"
    count: int = 1
    protocol: str = "2.0.1"
    connectors: int = 1
    charger: ChargerSpec = field(default_factory=ChargerSpec)
    ev: EVSpec = field(default_factory=EVSpec)
    password: str | None = None
    meter_interval: float = 60.0
    faults: dict[str, Any] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [self.id_pattern.format(n=n) for n in range(1, self.count + 1)]

    def protocol_of(self, index: int) -> str:
        if self.protocol == "mixed":
            return "2.0.1" if index % 2 == 0 else "1.6"
        return self.protocol


@dataclass
class Step:
    at: float
    action: str
    chargers: list[str]
    connector: int = 1
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str = "scenario"
    description: str = ""
    csms: str | None = None
    clock_scale: float = 1.0
    duration: float | None = None
    fleets: list[FleetSpec] = field(default_factory=list)
    timeline: list[Step] = field(default_factory=list)

    def all_ids(self) -> list[str]:
        return [i for f in self.fleets for i in f.ids()]


# ------------------------------------------------------------------------------------ validation helpers
class _V:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {msg}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        return value

    def no_extra(self, m: dict[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(m) - allowed)
        if extra:
            raise self.fail(
                f"{where}.{extra[0]}" if where else extra[0], f"unknown field; allowed: {sorted(allowed)}"
            )

    def number(
        self,
        m: dict[str, Any],
        key: str,
        where: str,
        default: float | None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> float | None:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(f"{where}.{key}", f"must be a number, got {v!r}")
        if lo is not None and v < lo:
            raise self.fail(f"{where}.{key}", f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.fail(f"{where}.{key}", f"must be <= {hi}, got {v}")
        return float(v)

    def integer(
        self, m: dict[str, Any], key: str, where: str, default: int, lo: int = 0, hi: int = 10**6
    ) -> int:
        v = m.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{where}.{key}", f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(f"{where}.{key}", f"must be between {lo} and {hi}, got {v}")
        return v

    def string(self, m: dict[str, Any], key: str, where: str, default: str | None) -> str | None:
        v = m.get(key, default)
        if v is None:
            return None
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)  # "protocol: 1.6" parses as a float in YAML
        if not isinstance(v, str):
            raise self.fail(f"{where}.{key}", f"must be a string, got {v!r}")
        return v

    def boolean(self, m: dict[str, Any], key: str, where: str, default: bool) -> bool:
        v = m.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(f"{where}.{key}", f"must be true or false, got {v!r}")
        return v


def _parse_faults(v: _V, raw: Any, where: str) -> dict[str, Any]:
    m = v.mapping(raw, where)
    v.no_extra(
        m, {"reject_charging_profiles", "duplicate_sends", "duplicate_mode", "clock_skew_s", "quirks"}, where
    )
    out: dict[str, Any] = {}
    for key in ("reject_charging_profiles", "duplicate_sends"):
        if key in m:
            out[key] = v.boolean(m, key, where, False)
    if "duplicate_mode" in m:
        mode = v.string(m, "duplicate_mode", where, "same_id")
        if mode not in ("same_id", "new_id"):
            raise v.fail(f"{where}.duplicate_mode", f"must be same_id or new_id, got {mode!r}")
        out["duplicate_mode"] = mode
    if "clock_skew_s" in m:
        out["clock_skew_s"] = v.number(m, "clock_skew_s", where, 0.0)
    if "quirks" in m:
        q = m["quirks"]
        if not isinstance(q, list) or not all(isinstance(x, str) for x in q):
            raise v.fail(f"{where}.quirks", "must be a list of quirk names")
        for i, name in enumerate(q):
            if name not in QUIRKS:
                raise v.fail(f"{where}.quirks[{i}]", f"unknown quirk {name!r}; known: {', '.join(QUIRKS)}")
        out["quirks"] = set(q)
    return out


def _parse_ev(v: _V, raw: Any, where: str) -> EVSpec:
    if isinstance(raw, str):
        raw = {"model": raw}
    m = v.mapping(raw, where)
    v.no_extra(m, {"model", "soc", "target_soc"}, where)
    model = v.string(m, "model", where, "sedan") or "sedan"
    if model not in EV_MODELS:
        raise v.fail(f"{where}.model", f"unknown EV model {model!r}; known: {', '.join(EV_MODELS)}")
    soc = v.number(m, "soc", where, 0.3, 0.0, 1.0)
    target = v.number(m, "target_soc", where, 1.0, 0.0, 1.0)
    return EVSpec(model, soc if soc is not None else 0.3, target if target is not None else 1.0)


def _parse_charger(v: _V, raw: Any, where: str) -> ChargerSpec:
    m = v.mapping(raw, where)
    v.no_extra(m, {"kind", "power_kw", "phases"}, where)
    kind = v.string(m, "kind", where, "AC")
    if kind not in ("AC", "DC"):
        raise v.fail(f"{where}.kind", f"must be AC or DC, got {kind!r}")
    hi = 22.0 if kind == "AC" else 350.0
    power = v.number(m, "power_kw", where, 22.0 if kind == "AC" else 150.0, 1.0, hi)
    assert power is not None
    phases = v.integer(m, "phases", where, 3, 1, 3)
    if kind == "AC" and phases not in (1, 3):
        raise v.fail(f"{where}.phases", "must be 1 or 3")
    return ChargerSpec.ac(power, phases) if kind == "AC" else ChargerSpec.dc(power)


def _parse_fleet(v: _V, raw: Any, where: str) -> FleetSpec:
    m = v.mapping(raw, where)
    allowed = {
        "id_pattern",
        "count",
        "protocol",
        "connectors",
        "charger",
        "ev",
        "password",
        "meter_interval",
        "faults",
    }
    v.no_extra(m, allowed, where)
    pattern = v.string(m, "id_pattern", where, "SIM-{n:04d}") or "SIM-{n:04d}"
    try:
        pattern.format(n=1)
    except (KeyError, IndexError, ValueError) as e:
        raise v.fail(f"{where}.id_pattern", f"must be a format string using {{n}}: {e}") from None
    count = v.integer(m, "count", where, 1, 1, 100_000)
    if count > 1 and pattern.format(n=1) == pattern.format(n=2):
        raise v.fail(f"{where}.id_pattern", "must contain {n} when count > 1 (ids would collide)")
    protocol = v.string(m, "protocol", where, "2.0.1")
    if protocol == "2.01" or protocol == "2":
        protocol = "2.0.1"
    if protocol not in FLEET_PROTOCOLS:
        raise v.fail(
            f"{where}.protocol", f"must be one of {', '.join(FLEET_PROTOCOLS)}, got {m.get('protocol')!r}"
        )
    return FleetSpec(
        id_pattern=pattern,
        count=count,
        protocol=protocol,
        connectors=v.integer(m, "connectors", where, 1, 1, 32),
        charger=_parse_charger(v, m.get("charger", {}), f"{where}.charger"),
        ev=_parse_ev(v, m.get("ev", {}), f"{where}.ev"),
        password=v.string(m, "password", where, None),
        meter_interval=v.number(m, "meter_interval", where, 60.0, 0.0) or 0.0,
        faults=_parse_faults(v, m.get("faults", {}), f"{where}.faults"),
    )


def _parse_step(v: _V, raw: Any, where: str, known_ids: list[str]) -> Step:
    m = v.mapping(raw, where)
    action = v.string(m, "action", where, None)
    if action is None:
        raise v.fail(f"{where}.action", f"is required; one of {', '.join(ACTIONS)}")
    if action not in ACTIONS:
        raise v.fail(f"{where}.action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    at = v.number(m, "at", where, None, 0.0)
    if at is None:
        raise v.fail(f"{where}.at", "is required (seconds after start)")
    sel = m.get("charger", "*")
    patterns = sel if isinstance(sel, list) else [sel]
    if not all(isinstance(p, str) for p in patterns):
        raise v.fail(f"{where}.charger", "must be a charger id, a glob or a list of them")
    chargers = [i for i in known_ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
    if not chargers:
        raise v.fail(f"{where}.charger", f"{sel!r} matches no charger of the fleets")
    connector = v.integer(m, "connector", where, 1, 1, 32)
    common = {"at", "action", "charger", "connector"}
    per_action: dict[str, set[str]] = {
        "plug_in": {"ev", "soc", "target_soc"},
        "unplug": set(),
        "authorize": {"id_tag"},
        "stop": {"reason"},
        "disconnect": {"duration", "graceful"},
        "reboot": set(),
        "faults": {"reject_charging_profiles", "duplicate_sends", "duplicate_mode", "clock_skew_s", "quirks"},
        "connector_fault": {"faulted", "error_code"},
    }
    v.no_extra(m, common | per_action[action], where)
    args: dict[str, Any] = {}
    if action == "plug_in":
        ev_raw = m.get("ev", "sedan")
        ev = _parse_ev(v, ev_raw if not isinstance(ev_raw, str) else {"model": ev_raw}, f"{where}.ev")
        args["ev"] = ev.model
        args["soc"] = v.number(m, "soc", where, ev.soc, 0.0, 1.0)
        args["target_soc"] = v.number(m, "target_soc", where, ev.target_soc, 0.0, 1.0)
    elif action == "authorize":
        tag = v.string(m, "id_tag", where, None)
        if not tag:
            raise v.fail(f"{where}.id_tag", "is required for authorize")
        args["id_tag"] = tag
    elif action == "stop":
        args["reason"] = v.string(m, "reason", where, "Local")
    elif action == "disconnect":
        args["duration"] = v.number(m, "duration", where, 0.0, 0.0)
        args["graceful"] = v.boolean(m, "graceful", where, True)
    elif action == "faults":
        args = _parse_faults(v, {k: m[k] for k in m if k not in common}, where)
    elif action == "connector_fault":
        args["faulted"] = v.boolean(m, "faulted", where, True)
        args["error_code"] = v.string(m, "error_code", where, "OtherError")
    return Step(at=at, action=action, chargers=chargers, connector=connector, args=args)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    v = _V(source)
    m = v.mapping(data, "(top level)")
    v.no_extra(m, {"name", "description", "csms", "clock_scale", "duration", "fleets", "timeline"}, "")
    fleets_raw = m.get("fleets")
    if not isinstance(fleets_raw, list) or not fleets_raw:
        raise v.fail("fleets", "is required: a non-empty list of fleets")
    fleets = [_parse_fleet(v, f, f"fleets[{i}]") for i, f in enumerate(fleets_raw)]
    seen: dict[str, int] = {}
    for i, f in enumerate(fleets):
        for cid in f.ids():
            if cid in seen:
                raise v.fail(
                    f"fleets[{i}].id_pattern", f"charger id {cid!r} already used by fleets[{seen[cid]}]"
                )
            seen[cid] = i
    ids = list(seen)
    timeline_raw = m.get("timeline", []) or []
    if not isinstance(timeline_raw, list):
        raise v.fail("timeline", "must be a list of steps")
    steps = [_parse_step(v, s, f"timeline[{i}]", ids) for i, s in enumerate(timeline_raw)]
    for i, s in enumerate(steps):
        for cid in s.chargers:
            fleet = fleets[seen[cid]]
            if s.connector > fleet.connectors:
                raise v.fail(f"timeline[{i}].connector", f"{cid} has only {fleet.connectors} connector(s)")
    csms = v.string(m, "csms", "", None)
    if csms is not None and not csms.startswith(("ws://", "wss://")):
        raise v.fail("csms", f"must be a ws:// or wss:// URL, got {csms!r}")
    return Scenario(
        name=v.string(m, "name", "", "scenario") or "scenario",
        description=v.string(m, "description", "", "") or "",
        csms=csms,
        clock_scale=v.number(m, "clock_scale", "", 1.0, 0.001, 10_000) or 1.0,
        duration=v.number(m, "duration", "", None, 0.0),
        fleets=fleets,
        timeline=sorted(steps, key=lambda s: s.at),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a YAML or TOML scenario file; raises ScenarioError naming the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ScenarioError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {e}") from None
    return parse_scenario(data, str(p))


# ------------------------------------------------------------------------------------ fleets and running
def build_fleet(
    fleets: list[FleetSpec],
    csms_url: str,
    *,
    stats: Stats | None = None,
    clock_scale: float = 1.0,
    **option_overrides: Any,
) -> list[ChargePoint]:
    """One ChargePoint per charger of the fleets (not started)."""
    cps: list[ChargePoint] = []
    for fleet in fleets:
        for index, cid in enumerate(fleet.ids()):
            opts = ChargePointOptions(
                id=cid,
                csms_url=csms_url,
                protocol=fleet.protocol_of(index),
                password=fleet.password,
                connectors=fleet.connectors,
                charger=fleet.charger,
                meter_interval_s=fleet.meter_interval,
                clock_scale=clock_scale,
                faults=Faults(**{**fleet.faults, "quirks": set(fleet.faults.get("quirks", set()))}),
                **option_overrides,
            )
            cps.append(create_charge_point(opts, stats=stats))
    return cps


async def apply_step(cp: ChargePoint, step: Step) -> None:
    a = step.args
    if step.action == "plug_in":
        await cp.plug_in(step.connector, a["ev"], a["soc"], a["target_soc"])
    elif step.action == "unplug":
        await cp.unplug(step.connector)
    elif step.action == "authorize":
        await cp.authorize(step.connector, a["id_tag"])
    elif step.action == "stop":
        await cp.stop_charging(step.connector, a["reason"])
    elif step.action == "disconnect":
        await cp.disconnect(for_s=a["duration"], graceful=a["graceful"])
    elif step.action == "reboot":
        await cp.reboot("LocalReset" if cp.version == "2.0.1" else "SoftReset")
    elif step.action == "faults":
        for key, value in a.items():
            setattr(cp.faults, key, value)
        if "clock_skew_s" in a:
            cp.clock.skew_s = a["clock_skew_s"]
    elif step.action == "connector_fault":
        cp.set_fault(step.connector, a["faulted"], a["error_code"])


async def run_timeline(
    scenario: Scenario,
    cps: dict[str, ChargePoint],
    on_step: Callable[[Step, str, Exception | None], None] | None = None,
) -> None:
    """Execute the timeline against started charge points (``at`` = real seconds after the call)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for step in scenario.timeline:
        delay = t0 + step.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

        async def one(cid: str, step: Step = step) -> None:
            err: Exception | None = None
            try:
                await apply_step(cps[cid], step)
            except Exception as e:  # a step failing must not stop the scenario
                err = e
            if on_step:
                on_step(step, cid, err)

        await asyncio.gather(*(one(cid) for cid in step.chargers))
