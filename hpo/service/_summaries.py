"""Every trial of a study in one pass of plain SQL, for the trial list and the dashboard.

Reading a study through Optuna's storage builds a full ``FrozenTrial`` (every param, value,
attribute and intermediate value) per trial: about ten seconds for 10,000 trials here. The list
and the views need a row per trial, so this reads Optuna's ``trials``, ``trial_params`` and
``trial_values`` tables and our run records directly (three queries), and keeps the result for
a finished study until it changes, and for a running one for a second.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from optuna.distributions import BaseDistribution, json_to_distribution
from sqlalchemy import Integer, String, text

from .. import algorithms
from ..schemas import TrialPublic
from ..storage import Database, StudyRow, UTCDateTime
from ._common import spec_of, trial_state

_RUNNING_TTL_S = 1.0
_cache: dict[tuple[int, int], tuple[Any, float, list[TrialPublic]]] = {}
_lock = threading.Lock()
# one reader per study at a time: a page asks for six views at once, and they all need this
_study_locks: dict[tuple[int, int], threading.Lock] = defaultdict(threading.Lock)

_TRIALS = text(
    "SELECT t.trial_id, t.number, t.state, v.value FROM trials t "
    "LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
    "WHERE t.study_id = :study ORDER BY t.number"
)
_PARAMS = text(
    "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p "
    "JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = :study"
)
_RUNS = text(
    "SELECT trial_number, state, last_step, started_at, finished_at FROM hpo_trial_runs "
    "WHERE study_id = :study ORDER BY trial_number, attempt"
).columns(  # typed like the ORM's columns, so timestamps come back zoned on SQLite too
    trial_number=Integer(),
    state=String(),
    last_step=Integer(),
    started_at=UTCDateTime(),
    finished_at=UTCDateTime(),
)


def trial_summaries(db: Database, row: StudyRow) -> list[TrialPublic]:
    """Every trial of the study (in number order), as the trial list shows them."""
    key = (id(db), row.id)
    version = (row.updated_at, row.handed_out)
    with _lock:
        study_lock = _study_locks[key]
    with study_lock:
        with _lock:
            cached = _cache.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] == version:
            if row.status != "running" or now - cached[1] < _RUNNING_TTL_S:
                return cached[2]
        trials = _read(db, row)
        with _lock:
            _cache[key] = (version, time.monotonic(), trials)
        return trials


def _read(db: Database, row: StudyRow) -> list[TrialPublic]:
    space = spec_of(row).space
    with db.engine.connect() as conn:
        trials = conn.execute(_TRIALS, {"study": row.optuna_study_id}).all()
        param_rows = conn.execute(_PARAMS, {"study": row.optuna_study_id}).all()
        run_rows = conn.execute(_RUNS, {"study": row.id}).all()
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    distributions: dict[str, BaseDistribution] = {}
    for trial_id, name, internal, dist_json in param_rows:
        dist = distributions.get(dist_json) or distributions.setdefault(
            dist_json, json_to_distribution(dist_json)
        )
        params[trial_id][name] = dist.to_external_repr(internal)
    runs: dict[int, list[Any]] = defaultdict(list)
    for run in run_rows:
        runs[run.trial_number].append(run)
    out = []
    for trial_id, number, state, value in trials:
        attempts = runs.get(number, [])
        latest = attempts[-1] if attempts else None
        shown = trial_state(str(state).split(".")[-1], latest.state if latest else None)
        out.append(
            TrialPublic.model_construct(
                number=number,
                state=shown,
                params=algorithms.clean_params(space, params.get(trial_id, {})),
                value=value if shown == "completed" else None,
                last_step=latest.last_step if latest else None,
                attempts=len(attempts) or 1,
                started_at=attempts[0].started_at if attempts else None,
                finished_at=latest.finished_at if latest else None,
            )
        )
    return out
