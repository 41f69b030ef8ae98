"""Who may do what: the access rules as pure functions over a :class:`Principal`.

The API resolves a caller to a principal (an API key, a dashboard session made with one, or
the anonymous admin of a controller with access control off) and asks :func:`check` before
it acts. The rules, one role each (:class:`hpo.vocabulary.Role`):

=========  =================================================================================
admin      everything, API keys included
member     create studies; cancel and delete the studies it created; read everything; run
           the trial protocol on its own studies (a script of its own as the worker)
viewer     read everything
worker     the trial protocol, reading the studies it may run (the dispatcher finds its work
           in the study list) and holding them to dispatch (leases); a worker key may be
           limited to study name patterns
=========  =================================================================================
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ._errors import Forbidden
from .vocabulary import Role

__all__ = ["ANONYMOUS", "Action", "Principal", "check", "may", "role_may"]


class Action(str, Enum):
    """What a request does, as far as access goes."""

    READ = "read"  # trials, figures, pages, presets: everything but the keys
    READ_STUDY = "read a study"  # a study's record (list, detail): what a worker needs
    CREATE = "create studies"
    MANAGE = "cancel or delete a study"
    PROTOCOL = "run trials"  # ask, report, heartbeat, complete, fail
    DISPATCH = "hold studies to dispatch"  # a dispatcher's leases
    KEYS = "manage API keys"


_ALLOWED: dict[Action, frozenset[Role]] = {
    Action.READ: frozenset({Role.ADMIN, Role.MEMBER, Role.VIEWER}),
    Action.READ_STUDY: frozenset(Role),
    Action.CREATE: frozenset({Role.ADMIN, Role.MEMBER}),
    Action.MANAGE: frozenset({Role.ADMIN, Role.MEMBER}),
    Action.PROTOCOL: frozenset({Role.ADMIN, Role.MEMBER, Role.WORKER}),
    Action.DISPATCH: frozenset({Role.ADMIN, Role.WORKER}),
    Action.KEYS: frozenset({Role.ADMIN}),
}


@dataclass(frozen=True)
class Principal:
    """A caller as the rules see it.

    Attributes:
        name: the API key's name; ``None`` for the anonymous caller of a controller with
            access control off.
        role: what the key may do.
        key_id: the key's row, for sessions.
        studies: for a worker key, the study name patterns it may run (``None``: all).
    """

    name: str | None
    role: Role
    key_id: int | None = None
    studies: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return "the anonymous caller" if self.name is None else f"key {self.name!r}"

    @property
    def study_bound(self) -> bool:
        """Whether what it may do depends on the study (a member's own, a worker key's
        patterns): only then must a study's name and owner be looked up."""
        return self.role is Role.MEMBER or (self.role is Role.WORKER and self.studies is not None)

    def covers(self, study: str) -> bool:
        """Whether a worker key's study patterns include ``study``."""
        return self.studies is None or any(fnmatch.fnmatchcase(study, p) for p in self.studies)


#: everyone, when access control is off (no keys yet on a loopback address, or
#: ``--insecure-no-auth``)
ANONYMOUS = Principal(name=None, role=Role.ADMIN)


def role_may(role: Role, action: Action) -> bool:
    """Whether ``role`` may do ``action`` on at least some studies."""
    return role in _ALLOWED[action]


def may(
    principal: Principal, action: Action, *, study: str | None = None, owner: str | None = None
) -> bool:
    """Whether ``principal`` may do ``action`` (on ``study``, created by key ``owner``)."""
    role = principal.role
    if role not in _ALLOWED[action]:
        return False
    if role is Role.ADMIN:
        return True
    if role is Role.MEMBER and action in (Action.MANAGE, Action.PROTOCOL):
        return owner is not None and owner == principal.name
    if role is Role.WORKER and study is not None:
        return principal.covers(study)
    return True


def check(
    principal: Principal, action: Action, *, study: str | None = None, owner: str | None = None
) -> None:
    """Raise :class:`hpo.Forbidden`, saying what would be allowed, unless :func:`may`."""
    if may(principal, action, study=study, owner=owner):
        return
    role = principal.role
    if role in _ALLOWED[action] and role is Role.MEMBER:
        raise Forbidden(
            f"{principal.label} (role member) may {action.value} only on the studies it "
            f"created; study {study!r} was created by "
            f"{'no key' if owner is None else repr(owner)}. Ask its owner or an admin"
        )
    if role in _ALLOWED[action] and role is Role.WORKER:
        raise Forbidden(
            f"{principal.label} (role worker) may run only the studies matching "
            f"{', '.join(principal.studies or ())}; not {study!r}"
        )
    raise Forbidden(
        f"{principal.label} has role {role.value}, which may not {action.value}; that needs "
        f"role {_roles(_ALLOWED[action])}"
    )


def _roles(roles: Iterable[Role]) -> str:
    names = [r.value for r in Role if r in set(roles)]
    return " or ".join(names)
