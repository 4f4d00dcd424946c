"""venue.accounts (demo fleet, generated secrets) and plaza_sim.epochs (connection epochs)."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from plaza.settings import Settings
from plaza.topics import Topics, valid_id
from plaza_sim.epochs import EpochStore
from venue.accounts import (
    API_USER,
    BRIDGE_USER,
    DEMO_PLAYERS,
    OBSERVER_CLIENT_ID,
    OBSERVER_USER,
    VenueSecrets,
    demo_fleet,
)

pytestmark = pytest.mark.unit

ZONES = {"pc": "pc-zone", "console": "console-corner", "racing": "sim-bay", "vr": "sim-bay"}
NAMES = {"pc": "PC", "console": "Console", "racing": "Racing rig", "vr": "VR booth"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- demo fleet ------------------------------------------------------------------------------
SIZES = range(1, 201)


def test_a_demo_fleet_of_n_has_n_unique_ids_that_are_valid_topic_levels() -> None:
    for n in SIZES:
        ids = [d.id for d in demo_fleet(n)]
        assert len(ids) == n, n
        assert len(set(ids)) == n, n
        for ident in ids:
            assert valid_id(ident, "device id") == ident


def test_a_demo_fleet_has_plausible_kinds_zones_and_names() -> None:
    for n in SIZES:
        fleet = demo_fleet(n)
        kinds = Counter(d.kind for d in fleet)
        assert set(kinds) <= set(ZONES), n
        assert kinds["pc"] == max(kinds.values()), f"a PC-bang is mostly PCs ({n}: {kinds})"
        for d in fleet:
            assert d.zone == ZONES[d.kind], d
            assert d.id.startswith(f"{d.kind}-"), d
            assert d.name == f"{NAMES[d.kind]} {int(d.id.rsplit('-', 1)[1])}", d
        for kind, count in kinds.items():
            numbers = sorted(int(d.id.rsplit("-", 1)[1]) for d in fleet if d.kind == kind)
            assert numbers == list(range(1, count + 1)), f"{n}: {kind} numbered 1..{count}"


def test_a_demo_fleet_of_ten_follows_the_venue_mix() -> None:
    kinds = Counter(d.kind for d in demo_fleet(10))
    assert kinds == {"pc": 6, "console": 2, "racing": 1, "vr": 1}


def test_ids_are_zero_padded_so_they_sort_in_machine_order() -> None:
    assert [d.id for d in demo_fleet(3)] == ["pc-01", "pc-02", "console-01"]
    assert demo_fleet(100)[0].id == "pc-001"
    pcs = [d.id for d in demo_fleet(200) if d.kind == "pc"]
    assert pcs == sorted(pcs)


def test_the_demo_fleet_is_deterministic() -> None:
    assert demo_fleet(37) == demo_fleet(37)


# -- secrets ---------------------------------------------------------------------------------
def test_venue_secrets_survive_a_save_and_load_round_trip(tmp_path: Path) -> None:
    secrets = VenueSecrets()
    secrets.ensure_devices(["pc-01", "vr-01"])
    path = tmp_path / "venue" / "secrets.json"
    secrets.save(path)
    assert VenueSecrets.load(path) == secrets
    assert VenueSecrets.load_or_create(path) == secrets


def test_saved_secrets_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    VenueSecrets().save(path)
    assert mode(path) == 0o600
    assert not list(tmp_path.glob("*.tmp")), "the temporary file is renamed, not left behind"


def test_saving_over_existing_secrets_keeps_them_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    VenueSecrets().save(path)
    assert mode(path) == 0o600


def test_a_leftover_world_readable_temp_file_does_not_make_secrets_world_readable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets.json"
    leftover = tmp_path / "secrets.json.tmp"
    leftover.write_text("partial")
    os.chmod(leftover, 0o644)
    VenueSecrets().save(path)
    assert mode(path) == 0o600


def test_fresh_secrets_are_random_and_long_enough() -> None:
    one, two = VenueSecrets(), VenueSecrets()
    passwords = [one.bridge, one.api, one.observer, one.admin, *one.players.values()]
    assert len(set(passwords)) == len(passwords)
    assert all(len(p) >= 20 for p in passwords)
    assert one.bridge != two.bridge
    assert set(one.players) == set(DEMO_PLAYERS)


def test_ensure_devices_adds_missing_machines_and_keeps_existing_passwords() -> None:
    secrets = VenueSecrets()
    secrets.ensure_devices(["pc-01"])
    first = secrets.devices["pc-01"]
    secrets.ensure_devices(["pc-01", "pc-02"])
    assert secrets.devices["pc-01"] == first
    assert set(secrets.devices) == {"pc-01", "pc-02"}
    assert secrets.devices["pc-02"] != first


def test_every_broker_account_is_bound_to_a_client_id_of_its_own() -> None:
    secrets = VenueSecrets()
    secrets.ensure_devices(["pc-01", "console-01"])
    settings = Settings(bridge_id="plaza-bridge-2", api_id="plaza-api-2")
    ids = {c.username: c.client_id for c in secrets.broker_clients(settings)}
    assert ids[BRIDGE_USER] == "plaza-bridge-2"
    assert ids[f"{BRIDGE_USER}-intake"] == "plaza-bridge-2-intake"
    assert ids[API_USER] == "plaza-api-2"
    assert ids[OBSERVER_USER] == OBSERVER_CLIENT_ID
    assert ids["pc-01"] == "pc-01"
    assert ids["player1"] == "player1"
    assert None not in ids.values()
    assert len(set(ids.values())) == len(ids)
    # credentials.json tells people and tools the id their account is bound to
    creds = secrets.credentials()
    assert creds["observer"] == {
        "username": OBSERVER_USER,
        "password": secrets.observer,
        "client_id": OBSERVER_CLIENT_ID,
    }
    assert {
        "username": "player1",
        "password": secrets.players["player1"],
        "client_id": "player1",
    } in creds["players"]


def test_a_service_client_id_outside_the_reserved_prefix_is_refused() -> None:
    with pytest.raises(ValidationError, match="must start with 'plaza-'"):
        Settings(bridge_id="pc-01")
    with pytest.raises(ValidationError, match="must start with 'plaza-'"):
        Settings(api_id="web-x-abcd")


def test_every_broker_account_has_a_role_and_every_role_an_account() -> None:
    secrets = VenueSecrets()
    secrets.ensure_devices(["pc-01", "console-01"])
    clients = secrets.broker_clients(Settings())
    roles = {r.name for r in secrets.roles(Topics())}
    used = {role for c in clients for role in c.roles}
    assert used == roles
    names = [c.username for c in clients]
    assert len(names) == len(set(names))
    intake = f"{BRIDGE_USER}-intake"  # the bridge's second connection (requests only)
    assert {
        BRIDGE_USER,
        intake,
        API_USER,
        OBSERVER_USER,
        "pc-01",
        "console-01",
        *DEMO_PLAYERS,
    } == set(names)
    by_name = {c.username: c for c in clients}
    assert by_name["pc-01"].roles == ("device-pc-01",)
    assert by_name["pc-01"].password == secrets.devices["pc-01"]
    assert by_name["player1"].roles == ("player-player1",)


# -- epochs ----------------------------------------------------------------------------------
def test_an_unknown_machine_is_at_epoch_zero_and_its_first_connection_gets_epoch_one(
    tmp_path: Path,
) -> None:
    store = EpochStore(tmp_path / "epochs.json")
    assert store.current("pc-01") == 0
    assert store.bump("pc-01") == 1
    assert store.current("pc-01") == 1


def test_epochs_are_persisted_and_bump_keeps_increasing_across_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "sim" / "epochs.json"
    store = EpochStore(path)
    assert [store.bump("pc-01") for _ in range(3)] == [1, 2, 3]
    store.bump("vr-01")
    assert json.loads(path.read_text()) == {"pc-01": 3, "vr-01": 1}

    reloaded = EpochStore(path)
    assert (reloaded.current("pc-01"), reloaded.current("vr-01")) == (3, 1)
    assert reloaded.bump("pc-01") == 4
    assert EpochStore(path).bump("pc-01") == 5
    assert not list(path.parent.glob("*.tmp"))


@given(script=st.lists(st.tuples(st.sampled_from(["pc-01", "pc-02"]), st.booleans()), max_size=30))
def test_bump_is_strictly_increasing_per_machine_whatever_the_reloads(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[str, bool]]
) -> None:
    path = tmp_path_factory.mktemp("epochs") / "epochs.json"
    store = EpochStore(path)
    last: dict[str, int] = {}
    for device, reload in script:
        if reload:
            store = EpochStore(path)
        epoch = store.bump(device)
        assert epoch > last.get(device, 0)
        last[device] = epoch


def test_an_epoch_store_without_a_path_counts_in_memory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = EpochStore(None)
    assert [store.bump("pc-01"), store.bump("pc-01")] == [1, 2]
    assert list(tmp_path.iterdir()) == []
