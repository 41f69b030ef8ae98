"""Every operation commits all of its writes or none, on both databases.

A fault is injected before every write an operation sends (each INSERT, UPDATE and DELETE,
and its COMMIT): the operation fails, every one of our tables is exactly as it was, the same
operation then succeeds, the trial can still be completed or retried, and Optuna's view (the
mirror) matches ours. A further test kills the process between two writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from hpo import service
from hpo.spec import parse_spec
from hpo.storage import Database, utcnow
from tests._consistency import assert_mirrored, assert_whole, snapshot
from tests.conftest import make_spec


class Fault(Exception):
    """The injected failure."""


class Injector:
    """Counts the writes our engine sends and raises :class:`Fault` before the ``fail_at``-th."""

    def __init__(self, db: Database) -> None:
        self.fail_at: int | None = None
        self.count = 0
        event.listen(db.engine, "before_cursor_execute", self._statement)
        event.listen(db.engine, "commit", self._commit)

    def arm(self, fail_at: int | None) -> None:
        self.fail_at, self.count = fail_at, 0

    def _statement(self, _conn, _cursor, statement: str, *_: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._tick()

    def _commit(self, conn) -> None:
        if conn.get_execution_options().get("hpo_write"):  # a read's commit writes nothing
            self._tick()

    def _tick(self) -> None:
        self.count += 1
        if self.fail_at == self.count:
            raise Fault(f"injected before write {self.count}")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@dataclass
class Ctx:
    study: str
    trials: dict[int, Any] = field(default_factory=dict)
    parent: str = ""  # the study a fork is made from


def _spec(name: str, **overrides: Any):
    return parse_spec(make_spec(name, **overrides))


def _ask(db: Database, ctx: Ctx) -> Any:
    trial = service.ask(db, ref=ctx.study)
    ctx.trials[trial.number] = trial
    return trial


def _report(db: Database, ctx: Ctx, number: int, step: int, acc: float) -> bool:
    trial = ctx.trials[number]
    return service.report(
        db, ref=ctx.study, number=number, token=trial.token, step=step, metrics={"acc": acc}
    )


def _complete(db: Database, ctx: Ctx, number: int, acc: float = 0.5) -> Any:
    trial = ctx.trials[number]
    return service.complete(
        db, ref=ctx.study, number=number, token=trial.token, metrics={"acc": acc}
    )


def _fail(db: Database, ctx: Ctx, number: int, kind: str = "reported") -> Any:
    trial = ctx.trials[number]
    return service.fail(
        db, ref=ctx.study, number=number, token=trial.token, reason="boom", kind=kind
    )


# -- the operations: (set up, run, finish what is left) --------------------------------------


def setup_study(db: Database, ctx: Ctx, **overrides: Any) -> None:
    service.create_study(db, spec=_spec(ctx.study, **overrides))


def setup_running(db: Database, ctx: Ctx, **overrides: Any) -> None:
    setup_study(db, ctx, **overrides)
    _ask(db, ctx)


def setup_pending(db: Database, ctx: Ctx) -> None:
    setup_running(db, ctx)
    _report(db, ctx, 0, 1, 0.3)
    _fail(db, ctx, 0, kind="crash")


ASHA = {"name": "asha", "seed": 0, "grace_period": 1, "reduction_factor": 3}


def setup_prunable(db: Database, ctx: Ctx, size: int = 20) -> None:
    setup_study(db, ctx, algorithm=ASHA, budget={"max_trials": size, "max_epochs": 9})
    for _ in range(3):
        _ask(db, ctx)
    for number in (0, 1):
        _report(db, ctx, number, 1, 0.9)  # two good values at the first rung


def finish_all(db: Database, ctx: Ctx) -> None:
    """Complete every trial still live (asking for retries waiting for a worker)."""
    study = service.get_study(db, ref=ctx.study)
    while study.status == "running" and study.trial_counts["pending"]:
        _ask(db, ctx)
        study = service.get_study(db, ref=ctx.study)
    for trial in service.list_trials(db, ref=ctx.study, state="running", limit=1000)[0]:
        _complete(db, ctx, trial.number, 0.4)


@dataclass
class Op:
    setup: Callable[[Database, Ctx], None]
    run: Callable[[Database, Ctx], Any]
    check: Callable[[Database, Ctx], None] = lambda db, ctx: None


def _reap_later(seconds: float) -> Callable[[Database, Ctx], Any]:
    return lambda db, ctx: service.reap(
        db, heartbeat_timeout=30, now=utcnow() + timedelta(seconds=seconds)
    )


def _heard_from(db: Database, ctx: Ctx) -> None:
    setup_running(db, ctx)
    trial = ctx.trials[0]
    service.heartbeat(db, ref=ctx.study, number=0, token=trial.token, worker="w:1")


def _state(db: Database, ctx: Ctx, number: int) -> str:
    return str(service.get_trial(db, ref=ctx.study, number=number).state)


def _status(db: Database, ctx: Ctx) -> str:
    return str(service.get_study(db, ref=ctx.study).status)


OOM = {
    "search_space": {"batch_size": {"type": "categorical", "choices": [32]}},
    "resources": {"on_oom": "accumulate", "min_batch_size": 8},
}


def setup_oom(db: Database, ctx: Ctx) -> None:
    setup_running(db, ctx, **OOM)
    _report(db, ctx, 0, 1, 0.3)


def _halved(db: Database, ctx: Ctx) -> None:
    trial = _ask(db, ctx)  # the retry, at half the batch and twice the accumulation
    assert trial.number == 0 and trial.params["batch_size"] == 16, trial.params
    assert trial.params["gradient_accumulation_steps"] == 2, trial.params


def setup_parent(db: Database, ctx: Ctx) -> None:
    parent = Ctx(f"{ctx.study}-parent")
    setup_study(db, parent)
    for number in range(3):
        _ask(db, parent)
        _complete(db, parent, number, 0.1 * number)
    ctx.parent = parent.study


def _fork(db: Database, ctx: Ctx) -> Any:
    return service.fork_study(db, parent=ctx.parent, spec=_spec(ctx.study))


def _forked(db: Database, ctx: Ctx) -> None:
    study = service.get_study(db, ref=ctx.study)
    assert study.trial_counts["completed"] == 3, study.trial_counts
    _ask(db, ctx)


OPS: dict[str, Op] = {
    "create": Op(lambda db, ctx: None, setup_study, lambda db, ctx: _ask(db, ctx)),
    "ask": Op(setup_study, _ask),
    "ask hands out a retry": Op(setup_pending, _ask, lambda db, ctx: _report(db, ctx, 0, 1, 0.6)),
    "report": Op(setup_running, lambda db, ctx: _report(db, ctx, 0, 1, 0.5)),
    "report that prunes": Op(
        setup_prunable,
        lambda db, ctx: _report(db, ctx, 2, 1, 0.1),
        lambda db, ctx: _state(db, ctx, 2) == "pruned" or pytest.fail("not pruned"),
    ),
    "report that prunes the last trial": Op(
        lambda db, ctx: (setup_prunable(db, ctx, size=3), _complete(db, ctx, 0), _fail(db, ctx, 1)),
        lambda db, ctx: _report(db, ctx, 2, 1, 0.1),
        lambda db, ctx: _status(db, ctx) == "completed" or pytest.fail("study not completed"),
    ),
    "heartbeat": Op(
        setup_running,
        lambda db, ctx: service.heartbeat(
            db, ref=ctx.study, number=0, token=ctx.trials[0].token, worker="w:2", gpus="0"
        ),
    ),
    "complete": Op(setup_running, lambda db, ctx: _complete(db, ctx, 0)),
    "complete the last trial": Op(
        lambda db, ctx: setup_running(db, ctx, budget={"max_trials": 1}),
        lambda db, ctx: _complete(db, ctx, 0),
        lambda db, ctx: _status(db, ctx) == "completed" or pytest.fail("study not completed"),
    ),
    "complete the last trial an epoch budget holds": Op(
        lambda db, ctx: (
            setup_running(db, ctx, budget={"max_epochs": 5, "max_total_epochs": 5}),
            _report(db, ctx, 0, 5, 0.5),
        ),
        lambda db, ctx: _complete(db, ctx, 0),
        lambda db, ctx: _status(db, ctx) == "completed" or pytest.fail("study not completed"),
    ),
    "fail": Op(setup_running, lambda db, ctx: _fail(db, ctx, 0)),
    "fail and retry": Op(
        lambda db, ctx: (setup_running(db, ctx), _report(db, ctx, 0, 1, 0.3)),
        lambda db, ctx: _fail(db, ctx, 0, kind="crash"),
        lambda db, ctx: _state(db, ctx, 0) == "pending" or pytest.fail("not retried"),
    ),
    "fail out of memory, retried at half the batch": Op(
        setup_oom, lambda db, ctx: _fail(db, ctx, 0, kind="oom"), _halved
    ),
    "fork": Op(setup_parent, _fork, _forked),
    "cancel": Op(
        lambda db, ctx: (setup_pending(db, ctx), _ask(db, ctx), _ask(db, ctx)),
        lambda db, ctx: service.cancel_study(db, ref=ctx.study),
        lambda db, ctx: _status(db, ctx) == "cancelled" or pytest.fail("not cancelled"),
    ),
    "delete": Op(
        lambda db, ctx: (setup_prunable(db, ctx), _report(db, ctx, 2, 1, 0.1)),
        lambda db, ctx: service.delete_study(db, ref=ctx.study),
    ),
    "reap a silent trial": Op(
        _heard_from,
        _reap_later(31),
        lambda db, ctx: _state(db, ctx, 0) == "pending" or pytest.fail("not retried"),
    ),
    "reap a study out of time": Op(
        lambda db, ctx: setup_running(db, ctx, budget={"max_wall_seconds": 60}),
        _reap_later(61),
        lambda db, ctx: _status(db, ctx) == "completed" or pytest.fail("not completed"),
    ),
}


def _writes(db: Database, injector: Injector, name: str, op: Op) -> int:
    ctx = Ctx(f"{_slug(name)}-count")
    op.setup(db, ctx)
    injector.arm(None)
    op.run(db, ctx)
    return injector.count


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name)


@pytest.mark.parametrize("name", list(OPS))
def test_a_fault_before_any_write_leaves_nothing_half_written(db, name):
    op = OPS[name]
    injector = Injector(db)
    writes = _writes(db, injector, name, op)
    assert writes >= 2, f"{name} should write (and commit) something"
    for fail_at in range(1, writes + 1):
        ctx = Ctx(f"{_slug(name)}-{fail_at}")
        op.setup(db, ctx)
        before = snapshot(db)
        injector.arm(fail_at)
        with pytest.raises(Fault):
            op.run(db, ctx)
        injector.arm(None)
        assert snapshot(db) == before, f"{name}: write {fail_at} of {writes} left rows behind"
        op.run(db, ctx)  # the same operation now goes through
        if name == "delete":
            with pytest.raises(Exception, match="no study"):
                service.get_study(db, ref=ctx.study)
            continue
        op.check(db, ctx)
        finish_all(db, ctx)
        assert_whole(db, ctx.study)
        assert_mirrored(db, ctx.study)


# -- a process killed between two writes -------------------------------------------------------

_KILLER = textwrap.dedent(
    """
    import os, sys, json
    from sqlalchemy import event
    from hpo import service
    from hpo.storage import Database

    url, study, number, token, fail_at = sys.argv[1:6]
    db = Database(url, upgrade=False)
    seen = [0]

    def tick(*_):
        seen[0] += 1
        if seen[0] == int(fail_at):
            os._exit(17)  # killed: no rollback, no cleanup, nothing flushed

    def statement(_c, _cur, sql, *_):
        if sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            tick()

    event.listen(db.engine, "before_cursor_execute", statement)
    event.listen(
        db.engine, "commit", lambda c: tick() if c.get_execution_options().get("hpo_write") else 0
    )
    service.fail(db, ref=study, number=int(number), token=token, reason="lost", kind="crash")
    print(json.dumps({"writes": seen[0]}))
    """
)


def _kill_at(url: str, ctx: Ctx, fail_at: int) -> subprocess.CompletedProcess[str]:
    trial = ctx.trials[0]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-c", _KILLER, url, ctx.study, "0", trial.token, str(fail_at)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_process_killed_between_two_writes_leaves_the_trial_retryable(db, db_url):
    ctx = Ctx("killed-count")
    setup_running(db, ctx)
    _report(db, ctx, 0, 1, 0.3)
    counted = _kill_at(db_url, ctx, 10**6)
    assert counted.returncode == 0, counted.stderr
    writes = json.loads(counted.stdout)["writes"]
    assert writes >= 4
    for fail_at in range(1, writes + 1):
        ctx = Ctx(f"killed-{fail_at}")
        setup_running(db, ctx)
        _report(db, ctx, 0, 1, 0.3)
        before = snapshot(db)
        killed = _kill_at(db_url, ctx, fail_at)
        assert killed.returncode == 17, killed.stderr
        assert snapshot(db) == before, f"killed before write {fail_at}: rows were left behind"
        _fail(db, ctx, 0, kind="crash")  # what the dead process was doing, done again
        assert _state(db, ctx, 0) == "pending"
        finish_all(db, ctx)
        assert_whole(db, ctx.study)
        assert_mirrored(db, ctx.study)
