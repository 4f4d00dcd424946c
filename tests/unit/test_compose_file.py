"""compose.yaml cannot run here (no Docker engine), so check that what it names exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from venue.cli import build_parser

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def interpolate(value: str) -> str:
    """Docker's ${VAR:-default} / ${VAR:?message} with no variables set, defaults applied."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_every_bind_mounted_file_exists_in_the_repo() -> None:
    mounts = [
        v.split(":")[0]
        for s in SERVICES.values()
        for v in s.get("volumes", [])
        if v.startswith("./")
    ]
    assert mounts, "mosquitto mounts broker-config/mosquitto.conf"
    for path in mounts:
        assert (REPO / path).is_file(), path


def test_every_built_image_has_a_dockerfile_whose_copied_paths_exist() -> None:
    built = [name for name, s in SERVICES.items() if "build" in s]
    assert set(built) >= {"bridge", "api", "sim", "init"}
    dockerfile = (REPO / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


@pytest.mark.parametrize("service", ["init", "bridge", "api", "sim"])
def test_every_service_command_is_a_valid_plaza_command(service: str) -> None:
    command = [interpolate(str(part)) for part in SERVICES[service]["command"]]
    args = build_parser().parse_args(command)
    assert args.command == command[0]


def test_published_ports_match_the_broker_listeners_and_the_api_port() -> None:
    conf = (REPO / "broker-config" / "mosquitto.conf").read_text()
    listeners = [int(line.split()[1]) for line in conf.splitlines() if line.startswith("listener")]
    broker_ports = [int(interpolate(p).split(":")[1]) for p in SERVICES["mosquitto"]["ports"]]
    assert broker_ports == listeners == [1883, 9001]
    assert [interpolate(p) for p in SERVICES["api"]["ports"]] == ["8000:8000"]
    assert SERVICES["api"]["environment"]["PLAZA_HTTP_PORT"] == "8000"


def test_services_wait_for_healthy_dependencies_and_secrets_are_required() -> None:
    assert SERVICES["bridge"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert SERVICES["bridge"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["postgres"]
    assert "healthcheck" in SERVICES["mosquitto"]
    assert SERVICES["sim"]["profiles"] == ["demo"]
    text = (REPO / "compose.yaml").read_text()
    for secret in ("PLAZA_DB_PASSWORD", "PLAZA_BRIDGE_PASSWORD", "PLAZA_API_PASSWORD"):
        assert f"${{{secret}:?" in text, f"{secret} must be required, not defaulted"


def test_every_long_running_service_is_restarted_and_the_one_shot_only_on_failure() -> None:
    for name, service in SERVICES.items():
        expected = "on-failure" if name == "init" else "unless-stopped"
        assert service.get("restart") == expected, name


def test_the_bridge_has_a_healthcheck_on_its_metrics_endpoint_and_the_sim_waits_for_it() -> None:
    check = " ".join(SERVICES["bridge"]["healthcheck"]["test"])
    assert "http://127.0.0.1:9102/metrics" in check
    assert "PLAZA_BRIDGE_METRICS_PORT" not in SERVICES["bridge"]["environment"], "default 9102"
    assert SERVICES["sim"]["depends_on"]["bridge"]["condition"] == "service_healthy"
