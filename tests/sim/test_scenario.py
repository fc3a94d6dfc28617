"""Scenario loading: the shipped files load, bad files fail naming the field, a timeline runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chargepoint_sim.scenario import ScenarioError, build_fleet, load_scenario, parse_scenario, run_timeline
from tests.sim.conftest import FAST
from tests.sim.csms_double import CsmsDouble

SCENARIOS = sorted((Path(__file__).parents[2] / "scenarios").glob("*.*"))


def test_shipped_scenarios_load() -> None:
    assert len(SCENARIOS) >= 3
    for path in SCENARIOS:
        s = load_scenario(path)
        assert s.fleets and s.all_ids()


def _base() -> dict[str, Any]:
    return {
        "fleets": [{"id_pattern": "A-{n}", "count": 2, "protocol": "1.6"}],
        "timeline": [{"at": 1, "charger": "A-1", "action": "plug_in"}],
    }


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("fleets"), "fleets: is required"),
        (lambda d: d["fleets"][0].update(protocol="3.0"), "fleets[0].protocol: must be one of"),
        (lambda d: d["fleets"][0].update(count="many"), "fleets[0].count: must be an integer"),
        (lambda d: d["fleets"][0].update(id_pattern="SAME"), "fleets[0].id_pattern: must contain {n}"),
        (lambda d: d["fleets"][0].update(colour="red"), "fleets[0].colour: unknown field"),
        (
            lambda d: d["fleets"][0].update(charger={"kind": "AC", "power_kw": 50}),
            "fleets[0].charger.power_kw",
        ),
        (lambda d: d["fleets"][0].update(ev={"model": "tractor"}), "fleets[0].ev.model: unknown EV model"),
        (
            lambda d: d["fleets"][0].update(faults={"quirks": ["nope"]}),
            "fleets[0].faults.quirks[0]: unknown quirk",
        ),
        (lambda d: d["timeline"][0].update(action="explode"), "timeline[0].action: unknown action"),
        (lambda d: d["timeline"][0].pop("at"), "timeline[0].at: is required"),
        (lambda d: d["timeline"][0].update(charger="B-*"), "timeline[0].charger: 'B-*' matches no charger"),
        (lambda d: d["timeline"][0].update(connector=3), "timeline[0].connector: A-1 has only 1 connector"),
        (lambda d: d["timeline"].append({"at": 2, "action": "authorize"}), "timeline[1].id_tag: is required"),
        (
            lambda d: d["timeline"].append({"at": 2, "action": "unplug", "id_tag": "x"}),
            "timeline[1].id_tag: unknown",
        ),
        (lambda d: d.update(csms="http://x"), "csms: must be a ws://"),
        (
            lambda d: d["fleets"].append({"id_pattern": "A-{n}"}),
            "fleets[1].id_pattern: charger id 'A-1' already used",
        ),
    ],
)
def test_errors_name_the_field(mutate: Any, expected: str) -> None:
    data = _base()
    mutate(data)
    with pytest.raises(ScenarioError, match=r"^f\.yaml: ") as exc:
        parse_scenario(data, "f.yaml")
    assert expected in str(exc.value)


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleets: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    toml = tmp_path / "s.toml"
    toml.write_text('[[fleets]]\nid_pattern = "T-{n}"\ncount = 2\nprotocol = "mixed"\n')
    s = load_scenario(toml)
    assert [f.protocol_of(i) for f in s.fleets for i in range(2)] == ["2.0.1", "1.6"]
    y = tmp_path / "p.yaml"
    y.write_text(yaml.safe_dump({"fleets": [{"protocol": 1.6}]}))
    assert load_scenario(y).fleets[0].protocol == "1.6"  # an unquoted 1.6 is fine


async def test_timeline_runs_against_csms(csms: CsmsDouble) -> None:
    scen = parse_scenario(
        {
            "clock_scale": 60,
            "fleets": [{"id_pattern": "T-{n}", "count": 2, "protocol": "mixed", "meter_interval": 15}],
            "timeline": [
                {"at": 0.2, "action": "plug_in", "ev": "suv", "soc": 0.5},
                {"at": 0.3, "action": "authorize", "id_tag": "TAG"},
                {"at": 0.4, "charger": "T-2", "action": "faults", "quirks": ["energy_kwh"]},
                {"at": 1.2, "action": "unplug"},
            ],
        }
    )
    cps = build_fleet(scen.fleets, csms.url, clock_scale=scen.clock_scale, **FAST)
    try:
        for cp in cps:
            await cp.start()
        for cp in cps:
            await cp.wait_online(5)
        done: list[tuple[str, str, Exception | None]] = []
        await run_timeline(scen, {cp.id: cp for cp in cps}, lambda s, c, e: done.append((s.action, c, e)))
        assert all(e is None for _, _, e in done) and len(done) == 7
        for cp in cps:
            await cp.wait_outbox_empty(5)
        assert len(csms.payloads("StopTransaction")) == 1
        assert csms.payloads("TransactionEvent")[-1]["eventType"] == "Ended"
        assert cps[1].faults.quirks == {"energy_kwh"}
    finally:
        for cp in cps:
            await cp.stop()
