"""The Optuna mirror: Optuna's tables, derived from ours, so that ``optuna.load_study`` and
``optuna.visualization`` work on our studies.

Our tables are the truth and every operation commits there in one transaction; the mirror
follows after the commit, through Optuna's public storage API only:

- a study gets an Optuna study of the same name and direction (system attribute
  ``hpo_study_id`` says whose mirror it is);
- every trial gets an Optuna trial with the same number, created in number order: running
  trials with their parameters, finished ones whole (state, value, intermediate values of
  the attempt that finished, ``fail_reason``, and ``hpo_state``/``hpo_attempts`` attributes);
  a finished trial is written once and never changes again;
- a deleted study's Optuna study is deleted (``hpo_optuna_tombstones`` remembers it).

``hpo_trials.mirrored`` records what was written, so a pass only looks at trials that changed.
A pass may stop at any point (a crash, a database error) and the next one finishes the job:
Optuna's trial count says which trials exist, and a trial already finished in Optuna is never
written again. Passes from several controllers take turns per study (on
PostgreSQL and SQLite alike: a pass claims a study for a while in ``hpo_optuna_studies``).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from .. import algorithms
from ..spec import StudySpec
from ..storage import (
    Database,
    MetricRow,
    OptunaStudyRow,
    OptunaTombstone,
    RunRow,
    StudyRow,
    TrialRow,
    latest_attempt,
    utcnow,
)
from ..storage import trials as trials_table
from ..vocabulary import TrialState
from ._common import spec_of
from ._lifecycle import transact

log = logging.getLogger("hpo.mirror")
#: seconds a pass holds its claim on a study before it must renew it
CLAIM_S = 120
_OWNER = "hpo_study_id"
_MARK_EVERY = 100
_OPTUNA_STATE = {
    TrialState.COMPLETED: optuna.trial.TrialState.COMPLETE,
    TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
    TrialState.FAILED: optuna.trial.TrialState.FAIL,
    TrialState.CANCELLED: optuna.trial.TrialState.FAIL,
    TrialState.RUNNING: optuna.trial.TrialState.RUNNING,
    TrialState.PENDING: optuna.trial.TrialState.RUNNING,
}


def optuna_state(state: str) -> optuna.trial.TrialState:
    """The Optuna state that mirrors one of ours (cancelled trials fail in Optuna)."""
    return _OPTUNA_STATE[TrialState(state)]


@dataclass
class _Trial:
    id: int
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None = None
    failure_kind: str | None = None
    final_metrics: dict[str, Any] | None = None
    #: a fork's trial copied from its parent: the number it has there
    inherited_from: int | None = None
    intermediate: dict[int, float] = field(default_factory=dict)


def sync_optuna(
    db: Database,
    *,
    sweep: bool = False,
    wait: float = 0.0,
    hold_running: float = 0.0,
    limit: int | None = None,
) -> int:
    """Write to Optuna's tables what ours hold and they do not yet; returns how many studies
    and trials were written.

    Args:
        sweep: also remove Optuna studies that mirror a study no longer in our tables (left
            by a controller that died mid-delete).
        wait: when another pass (of this or another controller) holds a study, wait up to
            this many seconds for it and go on, so that on return the mirror is complete
            (as of the call); by default such a study is left to that pass.
        hold_running: leave a running trial out of Optuna's tables until it has run this
            many seconds (and the trials after it, which must follow it in number order).
            Most trials that early stopping ends end within seconds: held back, each is
            written once, whole, instead of created and then finished, which halves what the
            mirror costs the controller when trials churn.
        limit: write at most about this many trials in this call (a background pass keeps
            each of its turns short); by default, all.
    """
    deadline = time.monotonic() + wait
    written = 0
    while True:
        with db.mirror_lock:
            written += _bury(db, sweep=sweep)
            for study_id in transact(db, _dirty_studies):
                left = None if limit is None else limit - written
                if left is not None and left <= 0:
                    return written
                written += _sync_study(db, study_id, hold_running, left)
        if wait <= 0 or not transact(db, _dirty_studies) or time.monotonic() > deadline:
            return written
        time.sleep(0.05)


def _dirty_studies(session: Session) -> list[int]:
    unmirrored = or_(TrialRow.mirrored.is_(None), TrialRow.mirrored != TrialRow.state)
    trials = select(TrialRow.study_id).where(unmirrored).distinct()
    studies = select(OptunaStudyRow.study_id).where(OptunaStudyRow.optuna_study_id.is_(None))
    return sorted(set(session.scalars(trials)) | set(session.scalars(studies)))


def _sync_study(db: Database, study_id: int, hold_running: float, limit: int | None) -> int:
    me = secrets.token_hex(8)
    if not transact(db, partial(_claim, study_id=study_id, me=me), write=True):
        return 0  # another pass is mirroring this study right now
    try:
        return _sync_claimed(db, study_id, me, hold_running, limit)
    finally:
        transact(db, partial(_release, study_id=study_id, me=me), write=True)


def _claim(session: Session, *, study_id: int, me: str) -> bool:
    """Claim the study for ``CLAIM_S`` seconds (or renew this pass's claim)."""
    now = utcnow()
    claimed = session.execute(
        update(OptunaStudyRow)
        .where(
            OptunaStudyRow.study_id == study_id,
            or_(
                OptunaStudyRow.claimed_until.is_(None),
                OptunaStudyRow.claimed_until < now,
                OptunaStudyRow.claimed_by == me,
            ),
        )
        .values(claimed_by=me, claimed_until=now + timedelta(seconds=CLAIM_S))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(claimed, "rowcount", 0))


def _release(session: Session, *, study_id: int, me: str) -> None:
    session.execute(
        update(OptunaStudyRow)
        .where(OptunaStudyRow.study_id == study_id, OptunaStudyRow.claimed_by == me)
        .values(claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


def _sync_claimed(
    db: Database, study_id: int, me: str, hold_running: float, limit: int | None
) -> int:
    found = transact(db, lambda s: _study(db, s, study_id))
    if found is None:
        return 0
    row, spec, optuna_id = found
    storage = db.optuna_storage
    written = 0
    if optuna_id is None:
        optuna_id = _create_study(storage, row, spec)
        if optuna_id is None:
            return 0
        transact(db, lambda s: _record_study(s, study_id, optuna_id), write=True)
        written += 1
    try:
        count = storage.get_n_trials(optuna_id)
    except KeyError:  # someone deleted the mirror's Optuna study: write it again
        log.warning("the Optuna mirror of study %s vanished; writing it again", row.name)
        transact(db, lambda s: _forget_study(s, study_id), write=True)
        return written
    trials = transact(db, lambda s: _unmirrored(s, study_id, spec.objective.metric, limit))
    dists = algorithms.distributions(spec.space, grid=algorithms.in_force(spec).name == "grid")
    done: list[tuple[int, str]] = []
    young = utcnow() - timedelta(seconds=hold_running)
    try:
        for trial in trials:
            if (
                trial.number == count
                and not optuna_state(trial.state).is_finished()
                and trial.started_at > young
            ):
                break  # created once it has run a while, or whole once it ended
            if trial.number > count:
                log.error(
                    "the Optuna mirror of study %s lacks trials %d to %d; writing them again",
                    row.name,
                    count,
                    trial.number - 1,
                )
                transact(db, partial(_forget_from, study_id=study_id, number=count), write=True)
                break
            if trial.number == count:
                storage.create_new_trial(optuna_id, template_trial=_template(trial, dists))
                count += 1
            else:
                _finish(storage, optuna_id, trial)
            done.append((trial.id, trial.state))
            if len(done) >= _MARK_EVERY:
                transact(db, partial(_mark, done=list(done)), write=True)
                transact(db, partial(_claim, study_id=study_id, me=me), write=True)
                written, done = written + len(done), []
    finally:
        if done:
            transact(db, partial(_mark, done=done), write=True)
    return written + len(done)


def _study(db: Database, session: Session, study_id: int) -> tuple[Any, StudySpec, Any] | None:
    row = session.execute(
        select(StudyRow, OptunaStudyRow.optuna_study_id)
        .join(OptunaStudyRow, OptunaStudyRow.study_id == StudyRow.id)
        .where(StudyRow.id == study_id)
    ).first()
    if row is None:
        return None
    study, optuna_id = row
    return study, spec_of(db, study), optuna_id


def _create_study(storage: Any, study: StudyRow, spec: StudySpec) -> int | None:
    """The Optuna study mirroring ``study``: adopted when a pass that died left it, else new."""
    try:
        existing = storage.get_study_id_from_name(study.name)
    except KeyError:
        existing = None
    if existing is not None:
        owner = storage.get_study_system_attrs(existing).get(_OWNER)
        if owner == study.id or (owner is None and storage.get_n_trials(existing) == 0):
            storage.set_study_system_attr(existing, _OWNER, study.id)
            return int(existing)
        if owner is None:
            log.error(
                "study %s cannot be mirrored: Optuna's tables hold a study of that name that "
                "hpo did not create; rename one of them",
                study.name,
            )
            return None
        storage.delete_study(existing)  # the mirror of a deleted study of the same name
    direction = (
        StudyDirection.MAXIMIZE
        if spec.objective.direction == "maximize"
        else StudyDirection.MINIMIZE
    )
    optuna_id = storage.create_new_study(directions=[direction], study_name=study.name)
    storage.set_study_system_attr(optuna_id, _OWNER, study.id)
    storage.set_study_user_attr(optuna_id, "hpo_spec", spec.model_dump(mode="json"))
    return int(optuna_id)


def _record_study(session: Session, study_id: int, optuna_id: int | None) -> None:
    session.execute(
        update(OptunaStudyRow)
        .where(OptunaStudyRow.study_id == study_id)
        .values(optuna_study_id=optuna_id)
    )


def _unmirrored(session: Session, study_id: int, objective: str, limit: int | None) -> list[_Trial]:
    """The first ``limit`` trials (in number order) that the mirror has not written as they
    are now, with the objective per step of those that ended."""
    rows = session.execute(
        select(
            TrialRow.id,
            TrialRow.number,
            TrialRow.state,
            TrialRow.params,
            TrialRow.value,
            TrialRow.attempts,
            TrialRow.started_at,
            TrialRow.finished_at,
            RunRow.id.label("run_id"),
            RunRow.error,
            RunRow.failure_kind,
            RunRow.final_metrics,
            TrialRow.inherited_from,
        )
        .join(RunRow, latest_attempt(), isouter=True)
        .where(
            TrialRow.study_id == study_id,
            or_(TrialRow.mirrored.is_(None), TrialRow.mirrored != TrialRow.state),
        )
        .order_by(TrialRow.number)
        .limit(limit)
    ).all()
    trials = [
        _Trial(
            id=r.id,
            number=r.number,
            state=r.state,
            params=r.params,
            value=r.value,
            attempts=r.attempts,
            started_at=r.started_at,
            finished_at=r.finished_at,
            error=r.error,
            failure_kind=r.failure_kind,
            final_metrics=r.final_metrics,
            inherited_from=r.inherited_from,
        )
        for r in rows
    ]
    finished = {
        r.run_id: t
        for r, t in zip(rows, trials, strict=True)
        if optuna_state(t.state).is_finished()
    }
    if finished:
        for run_id, step, value in session.execute(
            select(MetricRow.run_id, MetricRow.step, MetricRow.value).where(
                MetricRow.run_id.in_(list(finished)), MetricRow.name == objective
            )
        ):
            finished[run_id].intermediate[step] = value
    return trials


def _attrs(trial: _Trial) -> tuple[dict[str, Any], dict[str, Any]]:
    user: dict[str, Any] = {"hpo_state": trial.state}
    if trial.attempts > 1:
        user["hpo_attempts"] = trial.attempts
    if trial.inherited_from is not None:
        user["hpo_inherited_from"] = trial.inherited_from
    system: dict[str, Any] = {}
    if trial.final_metrics is not None and trial.state == TrialState.COMPLETED:
        user["metrics"] = trial.final_metrics
    if trial.state in (TrialState.FAILED, TrialState.CANCELLED):
        user["hpo_failure_kind"] = trial.failure_kind
        system["fail_reason"] = trial.error or trial.state
    return user, system


def _local(moment: datetime | None) -> datetime | None:
    """Optuna keeps naive local times."""
    return moment.astimezone().replace(tzinfo=None) if moment is not None else None


def _value(trial: _Trial) -> float | None:
    if trial.state in (TrialState.COMPLETED, TrialState.PRUNED):
        return trial.value
    return None


def _template(trial: _Trial, dists: dict[str, Any]) -> FrozenTrial:
    state = optuna_state(trial.state)
    user, system = _attrs(trial) if state.is_finished() else ({}, {})
    return FrozenTrial(
        number=trial.number,
        state=state,
        value=_value(trial) if state.is_finished() else None,
        datetime_start=_local(trial.started_at),
        datetime_complete=_local(trial.finished_at) if state.is_finished() else None,
        params=trial.params,
        distributions={name: dists[name] for name in trial.params},
        user_attrs=user,
        system_attrs=system,
        intermediate_values=dict(trial.intermediate) if state.is_finished() else {},
        trial_id=0,
    )


def _finish(storage: Any, optuna_id: int, trial: _Trial) -> None:
    """Bring a running Optuna trial to its final state (a no-op while it still runs, and
    once Optuna already has it finished)."""
    state = optuna_state(trial.state)
    if not state.is_finished():
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(optuna_id, trial.number)
    if storage.get_trial(trial_id).state.is_finished():
        return
    for step, reported in sorted(trial.intermediate.items()):
        storage.set_trial_intermediate_value(trial_id, step, reported)
    user, system = _attrs(trial)
    for key, val in user.items():
        storage.set_trial_user_attr(trial_id, key, val)
    for key, val in system.items():
        storage.set_trial_system_attr(trial_id, key, val)
    value = _value(trial)
    storage.set_trial_state_values(trial_id, state, None if value is None else [value])


def _mark(session: Session, *, done: list[tuple[int, str]]) -> None:
    session.connection().execute(
        update(trials_table)
        .where(trials_table.c.id == bindparam("b_trial"))
        .values(mirrored=bindparam("b_state")),
        [{"b_trial": trial_id, "b_state": state} for trial_id, state in done],
    )


def _forget_from(session: Session, *, study_id: int, number: int) -> None:
    session.execute(
        update(TrialRow)
        .where(TrialRow.study_id == study_id, TrialRow.number >= number)
        .values(mirrored=None)
    )


def _drop_tombstone(session: Session, *, tomb_id: int) -> None:
    session.execute(delete(OptunaTombstone).where(OptunaTombstone.id == tomb_id))


def _forget_study(session: Session, study_id: int) -> None:
    _record_study(session, study_id, None)
    _forget_from(session, study_id=study_id, number=0)


def _bury(db: Database, *, sweep: bool) -> int:
    """Delete the Optuna studies of deleted studies."""
    storage = db.optuna_storage
    tombs = transact(
        db, lambda s: [(t.id, t.study_id, t.name) for t in s.scalars(select(OptunaTombstone))]
    )
    buried = 0
    for tomb_id, study_id, name in tombs:
        try:
            optuna_id = storage.get_study_id_from_name(name)
            if storage.get_study_system_attrs(optuna_id).get(_OWNER) == study_id:
                storage.delete_study(optuna_id)
                buried += 1
        except KeyError:
            pass  # never mirrored, or already gone
        transact(db, partial(_drop_tombstone, tomb_id=tomb_id), write=True)
    if sweep:
        buried += _sweep_orphans(db, storage)
    return buried


def _sweep_orphans(db: Database, storage: Any) -> int:
    # Optuna's list first: a study created after it was read is not in it, so it cannot be
    # taken for an orphan
    mirrors = [s for s in storage.get_all_studies() if s.system_attrs.get(_OWNER) is not None]
    ours = set(transact(db, lambda s: list(s.scalars(select(StudyRow.id)))))
    orphans = [
        storage.get_study_id_from_name(s.study_name)
        for s in mirrors
        if s.system_attrs[_OWNER] not in ours
    ]
    for optuna_id in orphans:
        storage.delete_study(optuna_id)
    return len(orphans)


__all__ = ["optuna_state", "sync_optuna"]
