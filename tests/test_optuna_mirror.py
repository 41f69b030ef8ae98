"""Optuna's tables are a mirror derived from ours: ``optuna.load_study`` sees every trial as we
do (params, state, value, intermediate values), after retries, pruning, failures and a
cancellation; a mirror pass that dies anywhere is finished by the next one; deleted studies
leave no Optuna study behind."""

from __future__ import annotations

import threading
from typing import Any

import optuna
import pytest

from hpo import service
from hpo.spec import parse_spec
from hpo.storage import Database
from tests._consistency import assert_mirrored, assert_whole
from tests.conftest import make_spec

ASHA = {"name": "asha", "seed": 3, "grace_period": 1, "reduction_factor": 3}


@pytest.fixture
def db(db_url: str):
    database = Database(db_url)
    yield database
    database.dispose()


def _run_a_study(db: Database, name: str) -> None:
    """An ASHA study with every kind of ending: completed, pruned, failed, retried, and
    cancelled while trials still ran or waited for a retry."""
    spec = make_spec(name, algorithm=ASHA, budget={"max_epochs": 9, "max_retries": 1})
    service.create_study(db, spec=parse_spec(spec))
    asked = [service.ask(db, ref=name) for _ in range(8)]

    def report(trial: Any, step: int, acc: float) -> bool:
        return service.report(
            db, ref=name, number=trial.number, token=trial.token, step=step, metrics={"acc": acc}
        )

    alive = [t for i, t in enumerate(asked) if not report(t, 1, 0.1 * (i % 5))]
    survivors = [t for t in alive if not report(t, 2, 0.5)]
    assert len(survivors) >= 4 and len(survivors) < len(asked)
    service.complete(
        db, ref=name, number=survivors[0].number, token=survivors[0].token, metrics={"acc": 0.9}
    )
    service.fail(
        db,
        ref=name,
        number=survivors[1].number,
        token=survivors[1].token,
        reason="Traceback: ValueError",
        kind="exception",
    )
    service.fail(
        db,
        ref=name,
        number=survivors[2].number,
        token=survivors[2].token,
        reason="worker died",
        kind="crash",
    )
    retry = service.ask(db, ref=name)
    assert retry.attempt == 2
    report(retry, 1, 0.95)
    service.complete(db, ref=name, number=retry.number, token=retry.token, metrics={"acc": 0.97})
    if len(survivors) > 3:
        service.fail(
            db,
            ref=name,
            number=survivors[3].number,
            token=survivors[3].token,
            reason="worker died",
            kind="crash",
        )  # left pending: cancelled below
    service.cancel_study(db, ref=name)


def test_optuna_sees_every_trial_as_we_do(db, db_url):
    _run_a_study(db, "mirrored")
    assert_whole(db, "mirrored")
    assert_mirrored(db, "mirrored")
    study = optuna.load_study(study_name="mirrored", storage=db_url)  # a plain URL works
    states = {t.state for t in study.trials}
    assert {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    } <= states
    ours = service.best_trial(db, ref="mirrored")
    assert (study.best_trial.number, study.best_value) == (ours.number, ours.value)
    assert study.best_trial.params == ours.params
    assert study.user_attrs["hpo_spec"]["name"] == "mirrored"
    cancelled = [t for t in study.trials if t.user_attrs.get("hpo_state") == "cancelled"]
    assert cancelled and all(t.system_attrs["fail_reason"] for t in cancelled)


class Flaky:
    """Optuna's storage, failing its ``fail_at``-th write."""

    WRITES = (
        "create_new_study",
        "delete_study",
        "set_study_user_attr",
        "set_study_system_attr",
        "create_new_trial",
        "set_trial_state_values",
        "set_trial_intermediate_value",
        "set_trial_user_attr",
        "set_trial_system_attr",
    )

    def __init__(self, storage: Any) -> None:
        self.storage, self.count, self.fail_at = storage, 0, None
        self.originals = {name: getattr(storage, name) for name in self.WRITES}
        for name, original in self.originals.items():
            setattr(storage, name, self._wrap(original))

    def _wrap(self, original: Any) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            if self.count == self.fail_at:
                raise RuntimeError(f"injected at Optuna write {self.count}")
            return original(*args, **kwargs)

        return write

    def restore(self) -> None:
        for name, original in self.originals.items():
            setattr(self.storage, name, original)


def test_a_mirror_pass_that_dies_anywhere_is_finished_by_the_next(db):
    _run_a_study(db, "count")
    flaky = Flaky(db.optuna_storage)
    try:
        service.sync_optuna(db)
        writes = flaky.count
        assert writes >= 10
        for fail_at in range(1, writes + 1, max(1, writes // 12)):
            name = f"flaky-{fail_at}"
            _run_a_study(db, name)
            flaky.count, flaky.fail_at = 0, fail_at
            with pytest.raises(RuntimeError, match="injected"):
                service.sync_optuna(db)
            flaky.fail_at = None
            assert_mirrored(db, name)
    finally:
        flaky.restore()


def test_two_mirror_passes_at_once_write_each_trial_once(db_url):
    one, two = Database(db_url), Database(db_url)
    try:
        _run_a_study(one, "both")
        errors: list[BaseException] = []

        def sync(handle: Database) -> None:
            try:
                service.sync_optuna(handle, wait=30)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=sync, args=(h,)) for h in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert_mirrored(one, "both")
    finally:
        one.dispose()
        two.dispose()


def test_a_deleted_study_leaves_no_optuna_study_and_its_name_is_free_again(db):
    _run_a_study(db, "gone")
    service.sync_optuna(db)
    service.delete_study(db, ref="gone")
    service.sync_optuna(db)
    with pytest.raises(KeyError):
        db.optuna_storage.get_study_id_from_name("gone")
    _run_a_study(db, "gone")
    assert_mirrored(db, "gone")


def test_a_deleted_study_mirrored_meanwhile_is_swept(db):
    """A controller that died mid-delete can leave an Optuna study behind: a sweep finds it."""
    storage = db.optuna_storage
    orphan = storage.create_new_study(
        directions=[optuna.study.StudyDirection.MAXIMIZE], study_name="orphan"
    )
    storage.set_study_system_attr(orphan, "hpo_study_id", 999_999)
    service.sync_optuna(db)
    assert storage.get_study_id_from_name("orphan") == orphan  # only a sweep removes it
    service.sync_optuna(db, sweep=True)
    with pytest.raises(KeyError):
        storage.get_study_id_from_name("orphan")


def test_a_study_name_optuna_already_uses_is_refused(api, db_url):
    optuna.create_study(study_name="theirs", storage=db_url)
    resp = api.post("/api/v1/studies", json=make_spec("theirs"))
    assert resp.status_code == 409 and "created with Optuna" in resp.json()["detail"]
