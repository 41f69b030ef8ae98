"""Checks that a study is whole: our rows agree with one another, the API's list and detail
agree, and Optuna's view (the mirror, read through Optuna's public API) matches ours."""

from __future__ import annotations

from typing import Any

import optuna
from sqlalchemy import text

from hpo import service
from hpo.storage import Database

TABLES = {
    "hpo_studies": "id",
    "hpo_trials": "id",
    "hpo_trial_runs": "id",
    "hpo_metrics": "id",
    "hpo_rungs": "run_id, rung",
    "hpo_optuna_studies": "study_id",
    "hpo_optuna_tombstones": "id",
}


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of our tables, to prove that a failed operation left nothing behind."""
    with db.engine.connect() as conn:
        return {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {pk}"))]
            for table, pk in TABLES.items()
        }


def _rows(db: Database, sql: str, **params: Any) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def assert_whole(db: Database, study: str) -> None:
    """Our own rows of ``study`` agree with one another, and list and detail agree."""
    found = _rows(
        db,
        "SELECT id, status, handed_out, size, inherited FROM hpo_studies WHERE name = :n",
        n=study,
    )
    assert len(found) == 1, f"study {study} is missing"
    study_id, status, handed_out, size, inherited = found[0]
    trials = _rows(
        db,
        "SELECT id, number, state, attempts, inherited_from FROM hpo_trials WHERE study_id = :s "
        "ORDER BY number",
        s=study_id,
    )
    # a fork's inherited trials come first, then the ones it handed out
    numbers = list(range(inherited + handed_out))
    assert [t.number for t in trials] == numbers, "trial numbers have gaps"
    live = 0
    for t in trials:
        runs = _rows(
            db,
            "SELECT id, attempt, state FROM hpo_trial_runs WHERE trial_id = :t ORDER BY attempt",
            t=t.id,
        )
        if t.number < inherited:  # copied from the parent at the fork: finished, never run here
            assert t.inherited_from is not None and t.state in ("completed", "pruned")
            assert t.attempts == 0 and runs == []
            continue
        assert t.inherited_from is None
        assert [r.attempt for r in runs] == list(range(1, t.attempts + 1))
        assert len(runs) == t.attempts
        assert runs[-1].state == t.state, f"trial {t.number}: {t.state} but run {runs[-1]}"
        assert all(r.state in ("failed", "cancelled") for r in runs[:-1])
        live += t.state in ("running", "pending")
    if status == "completed" and size is not None and handed_out >= size:
        assert live == 0, "a completed study has live trials"
    if status == "running" and size is not None and handed_out >= size:
        assert live > 0, "a study whose trials all ended is stuck in running"
    listed, count = service.list_trials(db, ref=study, limit=10**6)
    assert count == len(trials)
    for trial in listed:
        detail = service.get_trial(db, ref=study, number=trial.number)
        assert detail.model_dump(include=set(type(trial).model_fields)) == trial.model_dump()


def assert_mirrored(db: Database, study: str) -> None:
    """After a mirror pass, Optuna's view of every trial matches ours."""
    service.sync_optuna(db, wait=30)
    ours = _rows(
        db,
        "SELECT t.number, t.state, t.params, t.value, r.id AS latest_run_id, s.spec "
        "FROM hpo_trials t JOIN hpo_studies s ON s.id = t.study_id "
        "LEFT JOIN hpo_trial_runs r ON r.trial_id = t.id AND r.attempt = t.attempts "
        "WHERE s.name = :n ORDER BY t.number",
        n=study,
    )
    mirrored = optuna.load_study(study_name=study, storage=db.optuna_storage)
    theirs = mirrored.get_trials(deepcopy=False)
    assert [t.number for t in theirs] == [o.number for o in ours]
    for mine, other in zip(ours, theirs, strict=True):
        state = service.optuna_state(mine.state)
        assert other.state == state, f"trial {mine.number}: {mine.state} vs {other.state}"
        params = mine.params if isinstance(mine.params, dict) else _json(mine.params)
        assert other.params == params
        if mine.state in ("completed", "pruned"):
            assert other.value == mine.value
        else:
            assert other.value is None
        spec = mine.spec if isinstance(mine.spec, dict) else _json(mine.spec)
        metric = spec["objective"]["metric"]
        steps = {
            r.step: r.value
            for r in _rows(
                db,
                "SELECT step, value FROM hpo_metrics WHERE run_id = :r AND name = :m",
                r=mine.latest_run_id,
                m=metric,
            )
        }
        assert other.intermediate_values == (steps if state.is_finished() else {})
        assert other.user_attrs.get("hpo_state", mine.state) == mine.state


def _json(value: Any) -> Any:
    import json

    return json.loads(value)
