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
        if v.startswith("./") and v.split(":")[0] != "./backups"  # made by the backup run
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


@pytest.mark.parametrize("service", ["init", "bridge", "api", "sim", "backup"])
def test_every_service_command_is_a_valid_plaza_command(service: str) -> None:
    command = [interpolate(str(part)) for part in SERVICES[service]["command"]]
    args = build_parser().parse_args(command)
    assert args.command == command[0]


def test_published_ports_are_the_tls_ones_and_the_proxy_reaches_the_internal_listeners() -> None:
    conf = (REPO / "broker-config" / "mosquitto.conf").read_text()
    listeners = [int(line.split()[1]) for line in conf.splitlines() if line.startswith("listener")]
    assert listeners == [1883, 9001]
    # MQTT over TLS is published by the broker; browsers reach WebSocket and HTTP via nginx
    assert [interpolate(p) for p in SERVICES["mosquitto"]["ports"]] == ["1883:1883"]
    assert [interpolate(p) for p in SERVICES["nginx"]["ports"]] == ["9001:9001", "8000:8000"]
    assert "ports" not in SERVICES["api"]
    nginx = (REPO / "broker-config" / "nginx.conf").read_text().split()
    listens = [nginx[i + 1] for i, word in enumerate(nginx) if word == "listen"]
    upstreams = [nginx[i + 1].rstrip(";") for i, word in enumerate(nginx) if word == "proxy_pass"]
    assert listens == ["9001", "8000"]
    assert upstreams == ["https://mosquitto:9001", "http://api:8000"]
    assert SERVICES["api"]["environment"]["PLAZA_HTTP_PORT"] == "8000"


def test_tls_is_on_by_default_for_every_service_and_the_certificates_are_shared() -> None:
    for name in ("bridge", "api", "sim"):
        env = SERVICES[name]["environment"]
        assert env["PLAZA_MQTT_TLS"] == "true", name
        assert env["PLAZA_TLS_CA"] == "/tls/ca.crt", name
        assert "tls:/tls:ro" in SERVICES[name]["volumes"], name
    assert SERVICES["api"]["environment"]["PLAZA_PUBLIC_TLS"] == "true"
    assert interpolate(SERVICES["api"]["environment"]["PLAZA_PUBLIC_WS_URL"]).startswith("wss://")
    init = [interpolate(str(part)) for part in SERVICES["init"]["command"]]
    assert "--tls" in init
    assert init[init.index("--tls-dir") + 1] == "/tls"
    assert "mosquitto" in init, "the services verify the broker by its service name"
    assert "tls:/mosquitto/certs:ro" in SERVICES["mosquitto"]["volumes"]
    assert "tls:/etc/plaza-tls:ro" in SERVICES["nginx"]["volumes"]
    conf = (REPO / "broker-config" / "mosquitto.conf").read_text()
    assert conf.count("certfile /mosquitto/certs/server.crt") == 2
    nginx = (REPO / "broker-config" / "nginx.conf").read_text()
    assert "ssl_certificate /etc/plaza-tls/public.crt;" in nginx
    assert "ssl_protocols TLSv1.3;" in nginx


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
    one_shot = {"init": "on-failure", "backup": "no"}  # backup: run by hand or a timer
    for name, service in SERVICES.items():
        assert service.get("restart") == one_shot.get(name, "unless-stopped"), name


def test_the_bridge_has_a_healthcheck_on_its_metrics_endpoint_and_the_sim_waits_for_it() -> None:
    check = " ".join(SERVICES["bridge"]["healthcheck"]["test"])
    assert "http://127.0.0.1:9102/metrics" in check
    assert "PLAZA_BRIDGE_METRICS_PORT" not in SERVICES["bridge"]["environment"], "default 9102"
    assert SERVICES["sim"]["depends_on"]["bridge"]["condition"] == "service_healthy"


def test_the_backup_service_mounts_what_plaza_backup_reads_where_it_reads_it() -> None:
    from venue.backup import DYNSEC

    backup = SERVICES["backup"]
    command = backup["command"]
    data = command[1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in backup["volumes"]}
    # the data volume holds secrets.json and devices.json (written by init)
    assert mounts[data] == "plaza-data"
    # the broker's account file lives in the broker's volume; mounted at DIR/broker
    assert f"{data}/{DYNSEC}".startswith(f"{data}/broker/")
    assert mounts[f"{data}/broker"] == "broker-data"
    assert "--dynsec-file" in SERVICES["init"]["command"]
    init_dynsec = SERVICES["init"]["command"][
        SERVICES["init"]["command"].index("--dynsec-file") + 1
    ]
    init_mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["init"]["volumes"]}
    assert init_mounts[init_dynsec.rsplit("/", 1)[0]] == "broker-data"
    assert backup["environment"]["PLAZA_DATABASE_URL"].startswith("postgresql")
    # pg_dump is in the image
    assert "postgresql-client" in (REPO / "Dockerfile").read_text()
