"""Staff accounts: who holds which role (the roles themselves are in `bot.vocabulary.roles`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.vocabulary.roles import ROLES
from storage.models import StaffMember


async def role_of(session: AsyncSession, channel: str, address: str) -> str | None:
    return await session.scalar(
        select(StaffMember.role).where(
            StaffMember.channel == channel, StaffMember.address == address
        )
    )


async def add(session: AsyncSession, channel: str, address: str, name: str, role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    found = await session.scalar(
        select(StaffMember).where(StaffMember.channel == channel, StaffMember.address == address)
    )
    if found is None:
        session.add(StaffMember(channel=channel, address=address, name=name, role=role))
    else:
        found.name, found.role = name, role


async def listing(session: AsyncSession) -> list[StaffMember]:
    return list((await session.execute(select(StaffMember).order_by(StaffMember.id))).scalars())


async def remove(session: AsyncSession, channel: str, address: str) -> bool:
    found = await session.scalar(
        select(StaffMember).where(StaffMember.channel == channel, StaffMember.address == address)
    )
    if found is None:
        return False
    await session.delete(found)
    return True
