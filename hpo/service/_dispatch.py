"""Which dispatcher runs which study: leases in the database, shared out among dispatchers.

Several controllers (each with its dispatcher) may share one database and one Ray cluster.
Each running study is held by at most one dispatcher at a time, through a lease it renews on
every pass; only the holder asks for the study's trials, so two dispatchers never fill one
study at once and a study's ``parallelism`` holds. The running studies are shared out: each
dispatcher seen within the lease's time holds at most its share (the running studies divided
by the dispatchers, rounded up), gives back what is over it, and takes studies that nobody
holds or whose lease ran out. A controller that is killed stops renewing; its studies pass to
the others when their leases run out, and its trials in flight, which die with it, are
retried by the reaper like any lost worker.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..schemas import DispatchPublic, LeaseGrant
from ..storage import Database, DispatcherRow, DispatchRow, StudyRow, utcnow
from ..vocabulary import StudyStatus
from ._lifecycle import transact

#: a dispatcher not seen for this many lease times is forgotten
_FORGET_AFTER = 10


def claim_studies(
    db: Database,
    *,
    holder: str,
    studies: Collection[str],
    waiting: Mapping[str, str] | None = None,
    ttl_seconds: float = 15.0,
    now: datetime | None = None,
) -> LeaseGrant:
    """Renew ``holder``'s leases and take its share of the running studies among ``studies``
    (the ones it can run), in one transaction; record why its studies' trials wait."""
    waiting = dict(waiting or {})
    wanted = set(studies)

    def claim(session: Session) -> LeaseGrant:
        at = now or utcnow()
        until = at + timedelta(seconds=ttl_seconds)
        dispatchers = _seen(session, holder, at, ttl_seconds)
        running = session.execute(
            select(StudyRow.id, StudyRow.name)
            .where(StudyRow.status == StudyStatus.RUNNING)
            .order_by(StudyRow.id)
        ).all()
        share = math.ceil(len(running) / dispatchers) if running else 0
        names = {study_id: name for study_id, name in running}
        leases = {
            row.study_id: row
            for row in session.scalars(
                select(DispatchRow).where(DispatchRow.study_id.in_(names)).with_for_update()
            )
        }
        # leases of studies that ended, or that this dispatcher can no longer run: let go
        session.execute(
            delete(DispatchRow).where(
                DispatchRow.holder == holder,
                DispatchRow.study_id.not_in([i for i, n in running if n in wanted]),
            )
        )
        mine = [i for i, row in leases.items() if row.holder == holder and names[i] in wanted]
        mine.sort()
        for study_id in mine[share:]:  # over its share: another dispatcher takes these
            session.delete(leases.pop(study_id))
        held = mine[:share]
        free = [
            i
            for i, name in running
            if name in wanted and (i not in leases or leases[i].until <= at) and i not in held
        ]
        for study_id in free[: max(share - len(held), 0)]:
            if _take(session, leases.get(study_id), study_id, holder, until):
                held.append(study_id)
        for study_id in held:
            row = session.get(DispatchRow, study_id)
            if row is None:
                continue
            reason = waiting.get(names[study_id])
            if row.until - at < timedelta(seconds=ttl_seconds * 2 / 3):
                row.until = until
            if row.waiting != reason:
                row.waiting = reason
        return LeaseGrant(
            holder=holder,
            studies=[names[i] for i in sorted(held)],
            until=until,
            dispatchers=dispatchers,
        )

    return transact(db, claim, write=True)


def release_studies(db: Database, *, holder: str) -> int:
    """Give back every lease of ``holder`` (a dispatcher that stops): the others take its
    studies at their next pass instead of when the leases run out. Returns how many."""

    def release(session: Session) -> int:
        released = session.execute(delete(DispatchRow).where(DispatchRow.holder == holder))
        session.execute(delete(DispatcherRow).where(DispatcherRow.holder == holder))
        return int(released.rowcount or 0)  # type: ignore[attr-defined]

    return transact(db, release, write=True)


def dispatch_of(
    session: Session, study_ids: Sequence[int], now: datetime
) -> dict[int, DispatchPublic]:
    """Who holds each study's lease, for the studies whose lease holds now, and why its
    trials wait: one query, whatever the number of studies."""
    if not study_ids:
        return {}
    rows = session.scalars(
        select(DispatchRow).where(
            DispatchRow.study_id.in_(list(study_ids)), DispatchRow.until > now
        )
    ).all()
    return {
        row.study_id: DispatchPublic(holder=row.holder, until=row.until, waiting=row.waiting)
        for row in rows
    }


def _seen(session: Session, holder: str, at: datetime, ttl_seconds: float) -> int:
    """Note that ``holder`` is alive; how many dispatchers were seen within the lease's time."""
    row = session.get(DispatcherRow, holder)
    if row is not None:
        row.seen_at = at
    else:
        try:
            with session.begin_nested():  # the same holder's claim sent twice at once
                session.add(DispatcherRow(holder=holder, seen_at=at))
                session.flush()
        except IntegrityError:
            pass  # the other claim noted it a moment ago
    forget = at - timedelta(seconds=ttl_seconds * _FORGET_AFTER)
    session.execute(delete(DispatcherRow).where(DispatcherRow.seen_at < forget))
    session.flush()
    recent = at - timedelta(seconds=ttl_seconds)
    count = session.scalar(
        select(func.count()).select_from(DispatcherRow).where(DispatcherRow.seen_at >= recent)
    )
    return max(int(count or 0), 1)


def _take(
    session: Session,
    lease: DispatchRow | None,
    study_id: int,
    holder: str,
    until: datetime,
) -> bool:
    """Take a study nobody holds (or whose lease ran out); False if another dispatcher took
    it in the meantime."""
    if lease is not None:
        lease.holder, lease.until, lease.waiting = holder, until, None
        return True
    try:
        with session.begin_nested():  # a concurrent claim may insert the same study first
            session.add(DispatchRow(study_id=study_id, holder=holder, until=until))
            session.flush()
    except IntegrityError:
        return False
    return True


__all__ = ["claim_studies", "dispatch_of", "release_studies"]
