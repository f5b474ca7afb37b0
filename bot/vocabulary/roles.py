"""Who among CSO staff may do what: the one table every front end consults.

Coordinators read and export; staff also answer, broadcast and manage events
and campaigns; admins also manage staff.
"""

from __future__ import annotations

ROLES = ("coordinator", "staff", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "export": frozenset(ROLES),
    "answer": frozenset({"staff", "admin"}),
    "broadcast": frozenset({"staff", "admin"}),
    "events": frozenset({"staff", "admin"}),
    "campaigns": frozenset({"staff", "admin"}),
    "manage_staff": frozenset({"admin"}),
}


def can(role: str | None, action: str) -> bool:
    return role is not None and role in PERMISSIONS[action]
