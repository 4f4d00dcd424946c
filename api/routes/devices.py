"""Machines: anyone logged in reads them; admins provision, change, re-key and remove them.

The api writes the configuration row, then asks the bridge to ``sync_device`` so every board
shows the change (maintenance included) and the machine is locked or unlocked. Provisioning
creates the machine's broker account and role and returns its secret once; removal revokes
the account (the broker disconnects it) and has the bridge clear its retained topics.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import delete
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
from plaza import acl, rules
from plaza.tables import Device, Reservation

router = APIRouter(prefix="/devices", tags=["devices"])
BRIDGE_ERRORS = (502, 503, 504)


def public(row: Device) -> DevicePublic:
    return DevicePublic.model_validate(row, from_attributes=True)


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
        session.add(row)
        await session.commit()
    password = commands.new_secret()
    await commands.provision_account(
        state, body.id, acl.device_role(state.topics, body.id), password
    )
    await commands.sync_device(state, body.id)
    return ProvisionedDevice(device=public(row), credentials=_secret(state, body.id, password))


@router.patch(
    "/{device_id}",
    responses=responses(401, 403, 404, 422, *BRIDGE_ERRORS),
    summary="Change a machine (name, kind, zone, auto-approve, maintenance)",
)
async def update_device(
    device_id: str, body: DeviceUpdate, _admin: AdminUser, state: State
) -> DevicePublic:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
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
        state, device_id, acl.device_role(state.topics, device_id), password
    )
    return _secret(state, device_id, password)


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 409, *BRIDGE_ERRORS),
    summary="Remove a machine: revoke its credentials and clear its retained topics",
)
async def delete_device(device_id: str, _admin: AdminUser, state: State, session: Db) -> Response:
    await _get(session, device_id)
    active = (
        await session.exec(
            select(func.count())
            .select_from(Reservation)
            .where(
                Reservation.device_id == device_id,
                col(Reservation.status).in_([s.value for s in rules.ACTIVE]),
            )
        )
    ).one()
    if active:
        raise ApiError(
            409,
            "device_has_reservations",
            f"machine {device_id!r} has {active} active reservations; cancel them first",
        )
    # The bridge first: it stops writing the machine and clears its retained topics, and it
    # clears again whatever the machine's will publishes when the broker drops it next.
    await commands.remove_device(state, device_id)
    await commands.revoke_account(state, device_id, acl.device_role_name(device_id))
    async with state.write() as write:
        await write.exec(delete(Reservation).where(col(Reservation.device_id) == device_id))
        await write.exec(delete(Device).where(col(Device.id) == device_id))
        await write.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
