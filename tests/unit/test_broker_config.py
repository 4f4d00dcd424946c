"""venue.broker.render_config: tests and `plaza up` run broker-config/mosquitto.conf itself, with
only the machine-specific lines rewritten."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from plaza import acl
from plaza.dynsec import BrokerClient, hash_password
from plaza.topics import Topics
from venue.broker import (
    CONFIG_SOURCE,
    DYNSEC_FILE,
    BrokerError,
    DynsecKeeper,
    durable_write,
    last_good_path,
    parse_dynsec,
    render_config,
    write_dynsec,
)

pytestmark = pytest.mark.unit

SOURCE = CONFIG_SOURCE.read_text()
DATA = Path("/srv/plaza/data")
PLUGIN = "/opt/lib/mosquitto_dynamic_security.so"


def render(source: str = SOURCE, **kw: object) -> str:
    args: dict[str, object] = {
        "mqtt_port": 18831,
        "ws_port": 19001,
        "data_dir": DATA,
        "plugin_path": PLUGIN,
    }
    args.update(kw)
    return render_config(source, **args)  # type: ignore[arg-type]


def directives(config: str) -> list[str]:
    return [ln for ln in config.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def values(config: str, word: str) -> list[str]:
    return [ln.split(maxsplit=1)[1] for ln in directives(config) if ln.split()[0] == word]


def test_the_source_is_the_production_config_with_two_listeners() -> None:
    assert values(SOURCE, "listener") == ["1883", "9001"]


def test_the_mqtt_listener_gets_its_port_and_bind_address_and_websocket_only_its_port() -> None:
    config = render(bind="127.0.0.1")
    assert values(config, "listener") == ["18831 127.0.0.1", "19001"]
    assert values(config, "protocol") == ["mqtt", "websockets"], "protocols stay with listeners"


def test_without_a_bind_address_both_listeners_listen_on_every_interface() -> None:
    assert values(render(bind=None), "listener") == ["18831", "19001"]


def test_the_data_dir_and_plugin_path_are_replaced() -> None:
    config = render()
    assert values(config, "persistence_location") == [f"{DATA}/"]
    assert values(config, "plugin") == [PLUGIN]
    assert values(config, "plugin_opt_config_file") == [str(DATA / DYNSEC_FILE)]
    assert "/mosquitto/data" not in config
    assert "/usr/lib/mosquitto_dynamic_security.so" not in config


@pytest.mark.parametrize(
    "line",
    [
        "per_listener_settings false",
        "allow_anonymous false",
        "set_tcp_nodelay true",
        "persistence true",
        "autosave_interval 30",
        "persistent_client_expiration 7d",
        "max_packet_size 65536",
        "max_queued_messages 20000",
        "max_queued_bytes 33554432",
        "connection_messages true",
    ],
)
def test_every_security_and_latency_line_of_the_source_is_kept_as_written(line: str) -> None:
    assert line in SOURCE.splitlines(), "the production config changed; update this list"
    assert directives(render()).count(line) == 1


TLS_WORDS = {"certfile", "keyfile", "tls_version"}
CERT, KEY = Path("/venue/tls/server.crt"), Path("/venue/tls/server.key")
TLS_LINES = [[word] for word in TLS_WORDS]


@pytest.mark.parametrize("tls", [False, True])
def test_every_line_other_than_the_machine_specific_ones_is_kept_in_order(tls: bool) -> None:
    rewritten = {"listener", "persistence_location", "plugin", "plugin_opt_config_file"}
    rewritten |= {"certfile", "keyfile"} if tls else TLS_WORDS
    config = render(certfile=CERT, keyfile=KEY) if tls else render()
    keep = [ln for ln in SOURCE.splitlines() if not (ln.split() and ln.split()[0] in rewritten)]
    out = [ln for ln in config.splitlines() if not (ln.split() and ln.split()[0] in rewritten)]
    assert out == keep
    dropped = 0 if tls else sum(1 for ln in SOURCE.splitlines() if ln.split()[:1] in TLS_LINES)
    assert len(config.splitlines()) == len(SOURCE.splitlines()) - dropped


def test_with_tls_both_listeners_serve_tls_1_3_with_the_given_files() -> None:
    config = render(certfile=CERT, keyfile=KEY)
    assert values(config, "certfile") == [str(CERT), str(CERT)]
    assert values(config, "keyfile") == [str(KEY), str(KEY)]
    assert values(config, "tls_version") == ["tlsv1.3", "tlsv1.3"]
    lines = directives(config)
    ws = lines.index("listener 19001")
    assert lines[ws + 1 : ws + 5] == [
        "protocol websockets",
        f"certfile {CERT}",
        f"keyfile {KEY}",
        "tls_version tlsv1.3",
    ]


def test_without_tls_no_listener_has_a_tls_line() -> None:
    assert not [ln for ln in directives(render()) if ln.split()[0] in TLS_WORDS]


def test_dynsec_is_the_only_access_control_and_anonymous_access_stays_off() -> None:
    config = render()
    assert values(config, "allow_anonymous") == ["false"]
    assert values(config, "plugin") == [PLUGIN]
    assert values(config, "acl_file") == [], "acl_file beside dynsec breaks isolation"
    assert values(config, "password_file") == []


def test_a_log_file_replaces_the_stdout_log_destination() -> None:
    log = Path("/var/log/plaza/mosquitto.log")
    assert values(render(log_file=log), "log_dest") == [f"file {log}"]
    assert values(render(), "log_dest") == ["stdout"]


def test_user_root_is_added_only_when_asked() -> None:
    assert values(render(run_as_root=True), "user") == ["root"]
    assert values(render(), "user") == []


def test_commented_listener_lines_are_neither_counted_nor_rewritten() -> None:
    source = "# listener 1 example\n" + SOURCE
    config = render(source)
    assert config.splitlines()[0] == "# listener 1 example"
    assert values(config, "listener") == ["18831 127.0.0.1", "19001"]


def test_the_output_ends_with_a_newline() -> None:
    assert render().endswith("\n")


def without_listener(which: int) -> str:
    lines = SOURCE.splitlines()
    idx = [i for i, ln in enumerate(lines) if ln.startswith("listener ")][which]
    return "\n".join(lines[:idx] + lines[idx + 1 :])


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(without_listener(0), id="no-mqtt-listener"),
        pytest.param(without_listener(1), id="no-websocket-listener"),
        pytest.param(
            "\n".join(ln for ln in SOURCE.splitlines() if not ln.startswith("listener")), id="none"
        ),
        pytest.param(SOURCE + "\nlistener 8883\n", id="three-listeners"),
    ],
)
def test_a_config_without_exactly_two_listeners_is_refused(source: str) -> None:
    with pytest.raises(BrokerError, match="exactly two listeners"):
        render(source)


# -- the dynsec file -------------------------------------------------------------------------
T = Topics()


def accounts(*devices: str) -> tuple[list[BrokerClient], list[acl.Role]]:
    clients = [BrokerClient(d, f"pw-{d}", (acl.device_role_name(d),)) for d in devices]
    return clients, [acl.device_role(T, d) for d in devices]


def password_ok(entry: dict[str, object], password: str) -> bool:
    salt = base64.b64decode(str(entry["salt"]))
    return bool(hash_password(password, salt)["password"] == entry["password"])


def test_the_dynsec_file_is_written_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / DYNSEC_FILE
    write_dynsec(path, *accounts("pc-01"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert [c["username"] for c in doc["clients"]] == ["pc-01"]
    assert doc["defaultACLAccess"]["subscribe"] is False


def test_rewriting_a_world_readable_dynsec_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / DYNSEC_FILE
    write_dynsec(path, *accounts("pc-01"))
    os.chmod(path, 0o644)
    write_dynsec(path, *accounts("pc-01"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rewriting_the_dynsec_file_adds_new_accounts_and_keeps_existing_ones_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / DYNSEC_FILE
    write_dynsec(path, *accounts("pc-01"))
    # An account the api provisioned at run time, and a password changed since.
    doc = json.loads(path.read_text())
    doc["clients"].append({"username": "player9", "roles": [], **hash_password("pw9")})
    doc["clients"][0].update(hash_password("rotated"))
    path.write_text(json.dumps(doc))

    clients, roles = accounts("pc-01", "pc-02")
    clients[0] = BrokerClient("pc-01", "a-new-generated-password", clients[0].roles)
    write_dynsec(path, clients, roles)

    after = json.loads(path.read_text())
    by_name = {c["username"]: c for c in after["clients"]}
    assert list(by_name) == ["pc-01", "player9", "pc-02"]
    assert password_ok(by_name["pc-01"], "rotated"), "an existing password is never reset"
    assert password_ok(by_name["pc-02"], "pw-pc-02")
    assert [r["rolename"] for r in after["roles"]] == ["device-pc-01", "device-pc-02"]


def test_a_piped_broker_logs_to_stderr_which_mosquitto_does_not_buffer() -> None:
    assert values(render(log_stderr=True), "log_dest") == ["stderr"]


# -- a broken dynsec file: Mosquitto 2.0.11 rewrites it in place, a crash can cut it short ----
def runtime_account(path: Path, username: str, password: str) -> None:
    """What the api's createClient leaves in the file (the broker's own save)."""
    doc = json.loads(path.read_text())
    doc["clients"].append({"username": username, "roles": [], **hash_password(password)})
    path.write_text(json.dumps(doc, indent=1))


CUT_SHORT: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda raw: b"",
    "half-written": lambda raw: raw[: len(raw) // 2],
    "one byte short": lambda raw: raw.rstrip()[:-1],
}


@pytest.mark.parametrize("damage", list(CUT_SHORT))
def test_a_cut_short_dynsec_file_is_restored_from_its_last_good_copy_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / DYNSEC_FILE
    write_dynsec(path, *accounts("pc-01"))
    runtime_account(path, "pc-09", "provisioned-at-run-time")
    assert DynsecKeeper(path).snapshot(), "the broker's save is copied"
    raw = path.read_bytes()
    path.write_bytes(CUT_SHORT[damage](raw))

    write_dynsec(path, *accounts("pc-01", "pc-02"))

    by_name = {c["username"]: c for c in json.loads(path.read_text())["clients"]}
    assert list(by_name) == ["pc-01", "pc-09", "pc-02"]
    assert password_ok(by_name["pc-09"], "provisioned-at-run-time")
    assert (tmp_path / (DYNSEC_FILE + ".broken")).read_bytes() == CUT_SHORT[damage](raw)
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "probably stopped while saving it. Restored 2 broker accounts" in warning.message
    assert "dynamic-security.last-good.json" in warning.message
    assert last_good_path(path).read_bytes() == path.read_bytes(), "the new file is good"


def test_without_a_last_good_copy_the_code_accounts_are_written_and_the_loss_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / DYNSEC_FILE
    path.write_bytes(b"")
    write_dynsec(path, *accounts("pc-01"))
    assert [c["username"] for c in json.loads(path.read_text())["clients"]] == ["pc-01"]
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "there is no last-good copy" in error.message
    assert "POST /devices/{id}/credentials" in error.message


def test_the_keeper_copies_only_a_changed_file_that_parses(tmp_path: Path) -> None:
    path = tmp_path / DYNSEC_FILE
    write_dynsec(path, *accounts("pc-01"))
    keeper = DynsecKeeper(path)
    assert keeper.snapshot()
    assert not keeper.snapshot(), "unchanged: nothing to copy"
    good = last_good_path(path).read_bytes()
    for caught in (b"", path.read_bytes()[:100], b'{"clients": "x", "roles": []}', b"[]"):
        path.write_bytes(caught)  # the broker caught mid-save, or a foreign file
        assert not keeper.snapshot()
        assert last_good_path(path).read_bytes() == good
    write_dynsec(path, *accounts("pc-01", "pc-02"))
    runtime_account(path, "pc-09", "pw")
    assert keeper.snapshot()
    assert parse_dynsec(last_good_path(path).read_bytes()) == json.loads(path.read_text())
    assert stat.S_IMODE(last_good_path(path).stat().st_mode) == 0o600


def test_durable_write_leaves_no_temporary_file_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    durable_write(path, b"old")
    durable_write(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
