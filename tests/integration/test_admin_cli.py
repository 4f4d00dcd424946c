"""`plaza admin create NAME`: an admin account in the database, as an operator makes one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pwdlib import PasswordHash
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from plaza.db import make_engine
from plaza.tables import User

pytestmark = pytest.mark.integration


def plaza_admin(tmp_path: Path, name: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PLAZA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'plaza.db'}",
        "PLAZA_NEW_ADMIN_PASSWORD": password,
    }
    return subprocess.run(
        [sys.executable, "-m", "venue.cli", "admin", "create", name, "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def account(tmp_path: Path, name: str) -> User | None:
    async def go() -> User | None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'plaza.db'}")
        try:
            async with AsyncSession(engine) as session:
                return (await session.exec(select(User).where(User.username == name))).first()
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_an_operator_creates_an_admin_and_can_reset_its_password(tmp_path: Path) -> None:
    made = plaza_admin(tmp_path, "boss", "first-password-1")
    assert made.returncode == 0, made.stderr
    assert "admin boss created" in made.stdout
    user = account(tmp_path, "boss")
    assert user is not None
    assert user.role == "admin"
    assert PasswordHash.recommended().verify("first-password-1", user.password_hash)
    again = plaza_admin(tmp_path, "boss", "second-password-2")
    assert again.returncode == 0, again.stderr
    assert "updated" in again.stdout
    user = account(tmp_path, "boss")
    assert user is not None
    assert PasswordHash.recommended().verify("second-password-2", user.password_hash)


def test_a_short_password_or_a_bad_name_is_refused(tmp_path: Path) -> None:
    short = plaza_admin(tmp_path, "boss", "short")
    assert short.returncode == 2
    assert "at least 8 characters" in short.stderr
    bad = plaza_admin(tmp_path, "Bad Name", "long-enough-pw")
    assert bad.returncode == 2
    assert "invalid user name 'Bad Name'" in bad.stderr
    assert not (tmp_path / "plaza.db").exists(), "nothing was written"
