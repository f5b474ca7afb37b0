"""Who among CSO staff may do what: the one table every front end consults.

Coordinators read and export; staff also answer, broadcast and manage events
and campaigns; admins also manage staff. Each key is one staff operation of
`bot/outreach/operations`; the chat's commands and the CLI name the operation
they lead to, and the operation itself checks the role here before it acts, so
no front end holds a rule of its own.
"""

from __future__ import annotations

ROLES = ("coordinator", "staff", "admin")

_EVERY_ROLE = frozenset(ROLES)
_STAFF = frozenset({"staff", "admin"})
_ADMIN = frozenset({"admin"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "stats": _EVERY_ROLE,
    "export": _EVERY_ROLE,
    # Coordinators may see the events; only staff and admins change them.
    "event.list": _EVERY_ROLE,
    "event.load": _STAFF,
    "event.create": _STAFF,
    "event.move": _STAFF,
    "event.cancel": _STAFF,
    "broadcast.preview": _STAFF,
    "broadcast.create": _STAFF,
    "broadcast.progress": _STAFF,
    "broadcast.cancel": _STAFF,
    "broadcast.list": _STAFF,
    "campaign.list": _STAFF,
    "campaign.create": _STAFF,
    "campaign.update": _STAFF,
    "report.status": _STAFF,
    "question.load": _STAFF,
    "question.answer": _STAFF,
    "question.promote": _STAFF,
    "staff.list": _ADMIN,
    "staff.add": _ADMIN,
    "staff.remove": _ADMIN,
}


def can(role: str | None, operation: str) -> bool:
    """Whether `role` (None: a resident, no staff role) may run `operation`."""
    return role is not None and role in PERMISSIONS[operation]
