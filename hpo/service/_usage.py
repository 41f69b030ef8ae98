"""Reading what a study's attempts have spent: one aggregate over its run records.

Epochs are the steps every attempt reported (``last_step``), retries included; device time
is the wall time of every attempt a worker took (``started_at`` to ``finished_at``, or now for
one still running), to be multiplied by the devices one attempt holds. A retry still waiting
for a worker (no token yet) holds nothing and counts no time. The query reads the study's
runs through the ``(study_id, state)`` index, once per ask, not once per trial.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Select, bindparam, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..budget import ComputeUsage, devices_held
from ..spec import StudySpec
from ..storage import UTCDateTime, runs
from ..vocabulary import LIVE_TRIAL_STATES, TrialState


def _seconds(dialect: str, moment: ColumnElement[Any]) -> ColumnElement[float]:
    """Seconds since an epoch of a timestamp, in the dialect's own arithmetic."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", moment), Float)
    return func.julianday(moment) * 86400.0


def _usage(dialect: str, *, recorded: bool) -> Select[Any]:
    now = bindparam("b_now", type_=UTCDateTime())
    end = func.coalesce(runs.c.finished_at, runs.c.heartbeat_at if recorded else now)
    wall = _seconds(dialect, end) - _seconds(dialect, runs.c.started_at)
    live = runs.c.state.in_([str(s) for s in LIVE_TRIAL_STATES])
    steps = func.coalesce(runs.c.last_step, 0)
    return select(
        func.coalesce(func.sum(steps), 0),
        func.coalesce(func.sum(case((runs.c.token_hash != "", wall), else_=0.0)), 0.0),
        func.coalesce(func.sum(case((live, 1), else_=0)), 0),
        func.coalesce(func.sum(case((live, steps), else_=0)), 0),
        func.coalesce(func.sum(case((runs.c.state == str(TrialState.PENDING), 1), else_=0)), 0),
    ).where(runs.c.study_id == bindparam("b_study"))


_USAGE = {
    (dialect, recorded): _usage(dialect, recorded=recorded)
    for dialect in ("postgresql", "sqlite")
    for recorded in (False, True)
}


def compute_usage(
    session: Session, *, study_id: int, spec: StudySpec, now: datetime, recorded: bool = False
) -> ComputeUsage:
    """What study ``study_id``'s attempts have spent up to ``now`` (one query).

    With ``recorded``, a running attempt counts up to its last heartbeat or report instead:
    what the records say, the same on every read until a worker is heard from again (the
    study's public view); deciding an ask counts up to now.
    """
    conn = session.connection()
    statement = _USAGE[conn.dialect.name, recorded]
    row = conn.execute(statement, {"b_study": study_id, "b_now": now}).one()
    epochs, seconds, in_flight, in_flight_epochs, waiting = row
    return ComputeUsage(
        epochs=int(epochs),
        device_seconds=max(float(seconds), 0.0) * devices_held(spec),
        in_flight=int(in_flight),
        in_flight_epochs=int(in_flight_epochs),
        waiting=int(waiting),
    )


__all__ = ["compute_usage"]
