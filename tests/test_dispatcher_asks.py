"""What the dispatcher asks for, decided from the study listing alone (no Ray, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hpo.schemas import BudgetUsed, StudyPublic
from hpo.spec import parse_spec
from tests.conftest import make_spec
from workers.dispatcher import asks_left, why_waiting

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def study(*, size: int | None, handed_out: int, pending: int = 0, **budget: Any) -> StudyPublic:
    spec = parse_spec(make_spec(budget={"max_trials": size, **budget}))
    counts = dict.fromkeys(("running", "completed", "pruned", "failed", "cancelled"), 0)
    return StudyPublic(
        id=1,
        name="s1",
        status="running",
        spec=spec,
        created_at=NOW - timedelta(seconds=60),
        updated_at=NOW,
        size=size,
        n_trials=handed_out,
        trial_counts={**counts, "pending": pending},
    )


def test_asks_up_to_what_the_budget_has_not_handed_out():
    assert asks_left(study(size=6, handed_out=2), NOW) == 4


def test_a_fully_handed_out_study_is_not_asked_while_its_last_trials_run():
    assert asks_left(study(size=6, handed_out=6), NOW) == 0


def test_a_retry_waiting_for_a_worker_is_asked_for_even_when_the_budget_is_handed_out():
    assert asks_left(study(size=6, handed_out=6, pending=2), NOW) == 2


def test_an_unlimited_study_is_always_asked():
    assert asks_left(study(size=None, handed_out=500), NOW) is None


def test_a_study_out_of_time_is_not_asked():
    assert asks_left(study(size=6, handed_out=1, max_wall_seconds=60), NOW) == 0
    assert asks_left(study(size=6, handed_out=1, max_wall_seconds=61), NOW) == 5
    out_of_time = study(size=None, handed_out=1, pending=1, max_wall_seconds=30)
    assert asks_left(out_of_time, NOW) == 0, "the controller is about to close it"


def _used(room: bool) -> BudgetUsed:
    return BudgetUsed(
        trials=3,
        max_trials=None,
        epochs=12,
        max_total_epochs=15,
        device="CPU",
        device_hours=0.0,
        room_for_a_trial=room,
    )


def test_a_study_whose_compute_budget_has_no_room_is_asked_only_for_its_waiting_retries():
    full = study(size=None, handed_out=3, max_epochs=5, max_total_epochs=15)
    assert asks_left(full.model_copy(update={"budget_used": _used(False)}), NOW) == 0
    waiting = study(size=10, handed_out=3, pending=1, max_epochs=5, max_total_epochs=15)
    assert asks_left(waiting.model_copy(update={"budget_used": _used(False)}), NOW) == 1
    assert asks_left(waiting.model_copy(update={"budget_used": _used(True)}), NOW) == 8


def _node(gpus: float, cpus: float, alive: bool = True) -> dict[str, Any]:
    return {"Alive": alive, "Resources": {"GPU": gpus, "CPU": cpus} if gpus else {"CPU": cpus}}


def test_a_trial_fits_when_one_alive_node_has_its_gpus_and_cpus():
    assert why_waiting(1, 1, [_node(0, 0), _node(2, 2)]) is None
    assert why_waiting(0, 1, [_node(0, 1)]) is None


def test_gpus_spread_over_smaller_nodes_do_not_fit_a_larger_trial():
    reason = why_waiting(2, 1, [_node(0, 0), _node(1, 2), _node(1, 2)])
    assert reason == (
        "waiting for a Ray node with 2 GPUs and 1 CPU for one trial: its 3 alive nodes have "
        "at most 1 GPUs and 2 CPUs each"
    )


def test_a_cluster_without_gpu_nodes_says_so():
    reason = why_waiting(1, 1, [_node(0, 0), _node(2, 2, alive=False)])
    assert reason is not None
    assert reason.endswith("none of its 1 alive node has a GPU")
