"""The study listing (what the dashboard and every dispatcher pass read) reads what each study's
record needs for all the listed studies at once: its statements grow by at most one per study
(the study's budget use), not by several, and every record in the list is the study's own read.
Both databases, through the real app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from hpo import service
from tests.conftest import make_spec


def _statements(db: Any, read: Callable[[], Any]) -> tuple[Any, int]:
    seen = 0

    def count(*_: Any) -> None:
        nonlocal seen
        seen += 1

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        result = read()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return result, seen


def _finish(client: Any, study: str, values: list[float]) -> None:
    for value in values:
        trial = client.ask(study)
        trial.report(1, {"acc": value})
        trial.complete({"acc": value})


def test_the_listing_reads_a_few_statements_whatever_the_number_of_studies(app, client):
    db = app.state.db

    def listing() -> Any:
        return service.list_studies(db, status="running", limit=1000)

    client.create_study(make_spec("first"))
    _, one = _statements(db, listing)
    for i in range(12):
        client.create_study(make_spec(f"more-{i}"))
    (studies, total), thirteen = _statements(db, listing)
    assert total == len(studies) == 13
    assert thirteen - one <= 12, f"{one} statements for 1 study, {thirteen} for 13"


def test_every_listed_record_is_the_studys_own_read(app, client):
    # a maximized and a minimized study with completed trials, a fork with its parent, a
    # study held by a dispatcher, and one with nothing yet
    client.create_study(make_spec("up"))
    _finish(client, "up", [0.2, 0.9, 0.9, 0.4])
    client.create_study(make_spec("down", objective={"metric": "acc", "direction": "minimize"}))
    _finish(client, "down", [0.5, 0.1, 0.3])
    client.fork_study("up", make_spec("up-fork"))
    client.fork_study("up", make_spec("up-fork-2"))
    client.create_study(make_spec("held"))
    service.claim_studies(app.state.db, holder="d1", studies=["held"], ttl_seconds=30)
    client.create_study(make_spec("empty"))

    listed = {s.name: s for s in client.list_studies()}
    assert set(listed) == {"up", "down", "up-fork", "up-fork-2", "held", "empty"}
    for name, record in listed.items():
        own = client.get_study(name).model_dump()
        assert record.model_dump() | {"budget_used": None} == own | {"budget_used": None}, name
    assert listed["up"].best is not None and listed["up"].best.value == 0.9
    assert listed["up"].best.number == 1  # ties: the lowest number
    assert listed["down"].best is not None and listed["down"].best.value == 0.1
    assert listed["empty"].best is None
    assert listed["up"].children == ["up-fork", "up-fork-2"]
    assert listed["up-fork"].parent == "up" and listed["up-fork"].inherited == 4
    assert listed["held"].dispatch is not None and listed["held"].dispatch.holder == "d1"
    assert listed["empty"].dispatch is None
    assert listed["up"].trial_counts["completed"] == 4 and listed["empty"].n_trials == 0
