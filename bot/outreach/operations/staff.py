"""Staff accounts: list, add (or change a role), remove. Admins only."""

from __future__ import annotations

from dataclasses import dataclass

from bot.outreach import staff
from bot.outreach.operations import checks
from bot.outreach.operations.errors import NotFound
from bot.outreach.operations.request import Request
from bot.vocabulary.roles import ROLES

CHANNELS = ("telegram", "viber")
# The `staff` columns' sizes.
ADDRESS_LIMIT = 64
NAME_LIMIT = 128


@dataclass(frozen=True)
class Account:
    channel: str
    address: str


@dataclass(frozen=True)
class NewMember:
    channel: str
    address: str
    name: str
    role: str


@dataclass(frozen=True)
class Member:
    role: str
    channel: str
    address: str
    name: str


def _account(channel: str, address: str) -> Account:
    checks.among("channel", [channel], CHANNELS)
    return Account(channel, checks.text("address", address, ADDRESS_LIMIT))


async def listing(req: Request) -> list[Member]:
    req.permit("staff.list")
    return [Member(m.role, m.channel, m.address, m.name) for m in await staff.listing(req.session)]


async def add(req: Request, new: NewMember) -> Member:
    req.permit("staff.add")
    account = _account(new.channel, new.address)
    name = checks.text("name", new.name, NAME_LIMIT)
    checks.among("role", [new.role], ROLES)
    await staff.add(req.session, account.channel, account.address, name, new.role)
    return Member(new.role, account.channel, account.address, name)


async def remove(req: Request, account: Account) -> Account:
    req.permit("staff.remove")
    account = _account(account.channel, account.address)
    if not await staff.remove(req.session, account.channel, account.address):
        raise NotFound("staff member", f"{account.channel} {account.address}")
    return account
