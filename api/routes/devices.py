"""Machines: anyone logged in reads them; admins provision, change, re-key and remove them.

The api writes the configuration row, then asks the bridge to ``sync_device`` so every board
shows the change (maintenance included) and the machine is locked or unlocked. Provisioning
creates the machine's broker account and role and returns its secret once; removal revokes
the account (the broker disconnects it) and has the bridge clear its retained topics.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from api import commands
from api.problems import ApiError, responses
from api.schemas import (
    DeviceCreate,
    DevicePublic,
    DeviceSecret,
    DeviceUpdate,
    ProvisionedDevice,
)
from api.state import AdminUser, CurrentUser, Db, State
from plaza import acl, floormap
from plaza.tables import Device, Reservation, User, is_active

log = logging.getLogger(__name__)
router = APIRouter(prefix="/devices", tags=["devices"])
BRIDGE_ERRORS = (502, 503, 504)


def public(row: Device) -> DevicePublic:
    """A machine without an agent is never offline (as on its board entry)."""
    out = DevicePublic.model_validate(row, from_attributes=True)
    return out if row.agent else out.model_copy(update={"online": True})


async def _get(session: Db, device_id: str) -> Device:
    row = await session.get(Device, device_id)
    if row is None:
        raise ApiError(404, "not_found", f"no machine {device_id!r}")
    return row


def _secret(state: State, device_id: str, password: str) -> DeviceSecret:
    return DeviceSecret(
        username=device_id,
        password=password,
        mqtt_host=state.settings.mqtt_host,
        mqtt_port=state.settings.mqtt_port,
    )


@router.get("", responses=responses(401), summary="All machines")
async def list_devices(_user: CurrentUser, session: Db) -> list[DevicePublic]:
    rows = (await session.exec(select(Device).order_by(col(Device.zone), col(Device.id)))).all()
    return [public(r) for r in rows]


@router.get("/{device_id}", responses=responses(401, 404), summary="One machine")
async def get_device(device_id: str, _user: CurrentUser, session: Db) -> DevicePublic:
    return public(await _get(session, device_id))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(401, 403, 409, 422, *BRIDGE_ERRORS),
    summary="Provision a machine; its broker secret is returned once",
)
async def create_device(body: DeviceCreate, _admin: AdminUser, state: State) -> ProvisionedDevice:
    row = Device(**body.model_dump())
    async with state.write() as session:
        if await session.get(Device, body.id) is not None:
            raise ApiError(409, "device_exists", f"machine {body.id!r} exists")
        if (await session.exec(select(User).where(User.username == body.id))).first():
            raise ApiError(409, "device_exists", f"{body.id!r} is a person's name")
    # The broker account first: if it belongs to someone else nothing is written, and a
    # failure here leaves no row that would make a retry a 409.
    password = commands.new_secret()
    await commands.provision_account(
        state, body.id, acl.device_role(state.topics, body.id), password, body.id
    )
    async with state.write() as session:
        session.add(row)
        try:
            await session.commit()
        except IntegrityError as exc:  # provisioned twice at once: the other one won
            raise ApiError(409, "device_exists", f"machine {body.id!r} exists") from exc
    try:
        await commands.sync_device(state, body.id)
    except ApiError as exc:  # the machine exists; its board entry follows with the bridge
        log.warning("machine %s provisioned, board not synced yet: %s", body.id, exc.detail)
    return ProvisionedDevice(device=public(row), credentials=_secret(state, body.id, password))


@router.patch(
    "/{device_id}",
    responses=responses(401, 403, 404, 422, *BRIDGE_ERRORS),
    summary="Change a machine (name, kind, zone, auto-approve, maintenance, place on the floor)",
)
async def update_device(
    device_id: str, body: DeviceUpdate, _admin: AdminUser, state: State
) -> DevicePublic:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if body.x is not None and body.y is not None:
        try:
            changes["x"], changes["y"] = floormap.position(body.x, body.y)
        except floormap.FloorError as exc:
            raise ApiError(422, exc.code, exc.message) from exc
    async with state.write() as session:
        row = await _get(session, device_id)
        for key, value in changes.items():
            setattr(row, key, value)
        session.add(row)
        await session.commit()
    await commands.sync_device(state, device_id)
    async with state.write() as session:  # the bridge may have moved status meanwhile
        return public(await _get(session, device_id))


@router.post(
    "/{device_id}/credentials",
    responses=responses(401, 403, 404, *BRIDGE_ERRORS),
    summary="Re-key a machine: a new broker secret, returned once",
)
async def rotate_credentials(
    device_id: str, _admin: AdminUser, state: State, session: Db
) -> DeviceSecret:
    await _get(session, device_id)
    password = commands.new_secret()
    await commands.provision_account(
        state, device_id, acl.device_role(state.topics, device_id), password, device_id
    )
    return _secret(state, device_id, password)


async def _active(session: Db, device_id: str) -> int:
    await session.commit()  # a fresh snapshot
    query = (
        select(func.count())
        .select_from(Reservation)
        .where(
            Reservation.device_id == device_id,
            is_active(Reservation.status),
        )
    )
    return (await session.exec(query)).one()


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 409, *BRIDGE_ERRORS),
    summary="Remove a machine: revoke its credentials and clear its retained topics",
)
async def delete_device(device_id: str, _admin: AdminUser, state: State, session: Db) -> Response:
    await _get(session, device_id)
    active = await _active(session, device_id)
    if active:
        raise ApiError(
            409,
            "device_has_reservations",
            f"machine {device_id!r} has {active} active reservations; cancel them first",
        )
    # The bridge first: it refuses new requests for the machine, stops writing it and clears
    # its retained topics (and whatever the machine's will publishes when the broker drops it
    # next). A booking accepted between the count above and that moment is found here, and
    # the machine is put back.
    await commands.remove_device(state, device_id)
    if await _active(session, device_id):
        await commands.sync_device(state, device_id)
        raise ApiError(409, "device_has_reservations", f"machine {device_id!r} was booked just now")
    await commands.revoke_accounts(state, [device_id], acl.device_role_name(device_id))
    async with state.write() as write:
        await write.exec(delete(Reservation).where(col(Reservation.device_id) == device_id))
        await write.exec(delete(Device).where(col(Device.id) == device_id))
        await write.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
