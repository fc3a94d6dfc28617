"""deploy/: the compose file and HAProxy's configuration agree with satwatt and with each other (there is
no Docker engine here to run them; tests/cluster runs the processes themselves)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from csms.settings import ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def replicas() -> dict[str, Any]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("satwatt-")}


def test_every_setting_the_compose_file_sets_is_a_satwatt_setting() -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, service in replicas().items():
        environment = service["environment"]
        assert set(environment) <= known, f"{name}: unknown settings {set(environment) - known}"
        assert environment["CSMS_NATS_URL"].startswith("nats://")
        assert environment["CSMS_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["CSMS_LIGHTNING_BACKEND"] == "lnd"  # one node shared by every replica


def test_every_replica_is_behind_haproxy_with_a_health_check() -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = dict(re.findall(r"^\s*server (\S+) (\S+):8180 check", config, re.MULTILINE))
    assert set(servers) == set(replicas()) and len(servers) >= 2
    assert "option httpchk GET /healthz" in config
    assert re.search(r"timeout tunnel\s+\d+h", config)  # websockets outlive the HTTP timeouts
    ports = compose()["services"]["haproxy"]["ports"]
    assert ports == ["8180:8180"]


def test_the_replicas_do_not_migrate_but_one_service_does_first() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["csms", "migrate"]
    for service in replicas().values():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"].get("CSMS_AUTO_MIGRATE") in (None, "false")
