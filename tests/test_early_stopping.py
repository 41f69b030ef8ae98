"""Our early-stopping rules decide exactly as Optuna's own pruners do.

The same interleaved reports (trials reporting out of step with one another, as parallel
workers do) are replayed through Optuna's ``SuccessiveHalvingPruner``, ``HyperbandPruner`` and
``MedianPruner`` on an in-memory study, and through ours: first the pure rules fed from a
dictionary, then the whole service on both databases (rung table, indexed queries, REST).
Every decision must agree.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import optuna
import pytest

from hpo import algorithms
from hpo.spec import AlgorithmSpec, BudgetSpec
from tests.conftest import make_spec

MAX_EPOCHS = 27


@dataclass
class Event:
    number: int
    step: int
    value: float
    last: bool  # the trial's final report: it completes (or fails, when it is a quitter)


def _events(seed: int, n_trials: int, *, max_epochs: int = MAX_EPOCHS) -> list[Event]:
    """Reports of ``n_trials`` trials, interleaved at random; some stop early (they fail)."""
    rng = random.Random(seed)
    queues = {}
    for number in range(n_trials):
        quality = rng.random()
        length = max_epochs if rng.random() > 0.2 else rng.randint(1, max_epochs - 1)
        queues[number] = [
            Event(number, step, round(quality * (1 - 0.5**step) + rng.gauss(0, 0.05), 6), False)
            for step in range(1, length + 1)
        ]
        queues[number][-1].last = True
    events: list[Event] = []
    live = [n for n in queues if queues[n]]
    while live:
        number = rng.choice(live[: max(3, len(live) // 2)])  # early trials run ahead
        events.append(queues[number].pop(0))
        live = [n for n in queues if queues[n]]
    return events


def _pruner(rule: str, grace: int, eta: int) -> optuna.pruners.BasePruner:
    if rule == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=grace, reduction_factor=eta, min_early_stopping_rate=0
        )
    if rule == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=grace, max_resource=MAX_EPOCHS, reduction_factor=eta
        )
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=grace)


def optuna_decisions(
    events: list[Event], *, rule: str, grace: int, eta: int, direction: str, name: str
) -> list[bool | None]:
    """Optuna's decision per event (None: the trial had already stopped, nothing sent)."""
    study = optuna.create_study(
        study_name=name, direction=direction, pruner=_pruner(rule, grace, eta)
    )
    n_trials = max(e.number for e in events) + 1
    trials = [study.ask() for _ in range(n_trials)]
    stopped: set[int] = set()
    out: list[bool | None] = []
    for e in events:
        if e.number in stopped:
            out.append(None)
            continue
        trial = trials[e.number]
        trial.report(e.value, e.step)
        stop = algorithms.pruning_applies(step=e.step, max_epochs=MAX_EPOCHS) and (
            trial.should_prune()
        )
        out.append(stop)
        if stop:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            stopped.add(e.number)
        elif e.last:
            if e.step == MAX_EPOCHS:
                study.tell(trial, e.value)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            stopped.add(e.number)
    return out


def pure_decisions(
    events: list[Event],
    *,
    rule: str,
    grace: int,
    eta: int,
    direction: str,
    name: str,
    quorum: int = 1,
) -> list[bool | None]:
    """Our rules' decision per event, fed from dictionaries instead of the database."""
    algorithm = AlgorithmSpec(
        name="random",
        early_stopping=rule,
        grace_period=grace,
        reduction_factor=eta,
        first_rung_quorum=quorum,
    )
    plan = algorithms.halving_plan(algorithm, BudgetSpec(max_epochs=MAX_EPOCHS))
    maximize = direction == "maximize"
    rungs: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    next_rung: dict[int, int] = defaultdict(int)
    reported: dict[int, dict[int, float]] = defaultdict(dict)
    completed: list[int] = []
    stopped: set[int] = set()
    out: list[bool | None] = []
    for e in events:
        if e.number in stopped:
            out.append(None)
            continue
        stop = False
        if algorithms.pruning_applies(step=e.step, max_epochs=MAX_EPOCHS):
            if plan is not None:
                bracket = algorithms.bracket_of(plan, name, e.number)
                waits = algorithms.waits_at_first_rung(
                    plan,
                    bracket,
                    next_rung=next_rung[e.number],
                    last_step=max(reported[e.number], default=None),
                )
                outcome = algorithms.successive_halving(
                    plan=plan,
                    bracket=bracket,
                    next_rung=next_rung[e.number],
                    step=e.step,
                    value=e.value,
                    standing=lambda r, v, b=bracket, n=e.number: algorithms.standing_among(
                        v, [x for k, x in rungs[(b, r)].items() if k != n], maximize=maximize
                    ),
                    waiting=rungs[(bracket, 0)][e.number] if waits else None,
                )
                for rung, value in outcome.recorded:
                    rungs[(bracket, rung)][e.number] = value
                next_rung[e.number] = outcome.next_rung
                stop = outcome.stop
            else:
                own = [*reported[e.number].values(), e.value]
                stop = algorithms.median_stops(
                    step=e.step,
                    best_so_far=max(own) if maximize else min(own),
                    completed_trials=len(completed),
                    completed_at_step=[
                        reported[n][e.step] for n in completed if e.step in reported[n]
                    ],
                    warmup_steps=grace,
                    maximize=maximize,
                )
        reported[e.number][e.step] = e.value
        out.append(stop)
        if stop:
            stopped.add(e.number)
        elif e.last:
            if e.step == MAX_EPOCHS:
                completed.append(e.number)
            stopped.add(e.number)
    return out


CASES = [
    ("asha", 1, 3, "maximize"),
    ("asha", 1, 2, "minimize"),
    ("asha", 2, 3, "minimize"),
    ("hyperband", 1, 3, "maximize"),
    ("hyperband", 1, 2, "minimize"),
    ("median", 2, 3, "maximize"),
    ("median", 1, 3, "minimize"),
]


@pytest.mark.parametrize(("rule", "grace", "eta", "direction"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pure_rules_decide_as_optunas_pruners(rule, grace, eta, direction, seed):
    events = _events(seed, n_trials=60)
    kwargs = {"rule": rule, "grace": grace, "eta": eta, "direction": direction, "name": "replay"}
    ours = pure_decisions(events, **kwargs)
    theirs = optuna_decisions(events, **kwargs)
    assert ours == theirs
    assert sum(bool(d) for d in ours) >= 5, "the replay must exercise pruning"
    assert sum(d is False for d in ours) >= 50


def test_hyperband_brackets_decide_at_their_own_rungs():
    """Bracket b of Hyperband starts deciding at grace * eta**b (the replays above check
    that trials land in the same brackets as in Optuna: their decisions would differ if not)."""
    algorithm = AlgorithmSpec(name="random", early_stopping="hyperband", reduction_factor=3)
    plan = algorithms.halving_plan(algorithm, BudgetSpec(max_epochs=27))
    assert plan is not None and plan.n_brackets == 4
    assert [algorithms.rung_steps(plan, b) for b in range(4)] == [[1, 3, 9], [3, 9], [9], []]
    brackets = {algorithms.bracket_of(plan, "brackets", n) for n in range(200)}
    assert brackets == {0, 1, 2, 3}
    asha = algorithms.halving_plan(
        AlgorithmSpec(name="asha", grace_period=2), BudgetSpec(max_epochs=20)
    )
    assert asha is not None and algorithms.rung_steps(asha) == [2, 6, 18]
    assert algorithms.halving_plan(AlgorithmSpec(name="random"), BudgetSpec()) is None


# -- the same replay through the service, on both databases ----------------------------------


def _ask(api, study):
    resp = api.post(f"/api/v1/studies/{study}/trials")
    assert resp.status_code == 201, resp.text
    return resp.json()


SERVICE_CASES = [
    ("asha", 1, 3, "maximize"),
    ("hyperband", 1, 3, "minimize"),
    ("median", 2, 3, "maximize"),
]


def _through_service(
    api, name: str, algorithm: dict[str, object], direction: str, events: list[Event]
) -> list[bool | None]:
    """Replay ``events`` through the REST trial protocol; the service's decision per event."""
    spec = make_spec(
        name,
        objective={"metric": "acc", "direction": direction},
        algorithm=algorithm,
        budget={"max_epochs": MAX_EPOCHS, "max_retries": 0},
    )
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    n_trials = max(e.number for e in events) + 1
    trials = [_ask(api, name) for _ in range(n_trials)]
    assert [t["number"] for t in trials] == list(range(n_trials))
    ours: list[bool | None] = []
    stopped: set[int] = set()
    for e in events:
        if e.number in stopped:
            ours.append(None)
            continue
        auth = {"Authorization": f"Bearer {trials[e.number]['token']}"}
        base = f"/api/v1/studies/{name}/trials/{e.number}"
        resp = api.post(
            f"{base}/reports", json={"step": e.step, "metrics": {"acc": e.value}}, headers=auth
        )
        assert resp.status_code == 200, resp.text
        stop = resp.json()["should_stop"]
        ours.append(stop)
        if stop:
            stopped.add(e.number)
        elif e.last:
            if e.step == MAX_EPOCHS:
                done = api.post(
                    f"{base}/complete", json={"metrics": {"acc": e.value}}, headers=auth
                )
            else:
                done = api.post(f"{base}/fail", json={"reason": "quit"}, headers=auth)
            assert done.status_code == 200, done.text
            stopped.add(e.number)
    return ours


@pytest.mark.parametrize(("rule", "grace", "eta", "direction"), SERVICE_CASES)
def test_the_service_decides_as_optunas_pruners(api, rule, grace, eta, direction):
    name = f"replay-{rule}"
    algorithm = {
        "name": "random",
        "seed": 1,
        "early_stopping": rule,
        "grace_period": grace,
        "reduction_factor": eta,
    }
    events = _events(7, n_trials=30)
    ours = _through_service(api, name, algorithm, direction, events)
    kwargs = {"rule": rule, "grace": grace, "eta": eta, "direction": direction, "name": name}
    assert ours == optuna_decisions(events, **kwargs)
    assert any(ours), "the replay must exercise pruning"
    listed = api.get(f"/api/v1/studies/{name}/trials", params={"state": "pruned"}).json()
    assert listed["count"] == sum(bool(d) for d in ours)


# -- first_rung_quorum: the first rung judges once it holds enough values (auto: 3) ----------


def test_a_first_rung_with_a_quorum_compares_the_first_arrivals_with_one_another():
    """Optuna's rule lets the first trial at a rung through (it has no rival yet); with a
    quorum of 3, it goes on without a verdict and is judged on its first-rung value once two
    more trials recorded theirs, at the latest at the next rung."""
    plan = algorithms.halving_plan(
        AlgorithmSpec(name="asha", grace_period=2, first_rung_quorum=3),
        BudgetSpec(max_epochs=20),
    )
    assert plan is not None and algorithms.rung_steps(plan) == [2, 6, 18]
    rungs: dict[int, dict[int, float]] = defaultdict(dict)

    def report(number: int, step: int, value: float, next_rung: int, waiting=None):  # type: ignore[no-untyped-def]
        outcome = algorithms.successive_halving(
            plan=plan,
            bracket=0,
            next_rung=next_rung,
            step=step,
            value=value,
            standing=lambda r, v: algorithms.standing_among(
                v, [x for k, x in rungs[r].items() if k != number], maximize=True
            ),
            waiting=waiting,
        )
        for rung, val in outcome.recorded:
            rungs[rung][number] = val
        return outcome.stop, outcome.next_rung

    assert report(0, 2, 0.30, 0) == (False, 0), "alone at the rung: goes on, unjudged"
    assert report(1, 2, 0.50, 0) == (False, 0), "two values: still short of the quorum"
    assert report(0, 3, 0.90, 0, waiting=0.30) == (False, 0), "still two: waits again"
    assert report(2, 2, 0.40, 0) == (True, 1), "three values, not the best of them: stops"
    assert rungs[0] == {0: 0.30, 1: 0.50, 2: 0.40}
    assert report(0, 4, 0.95, 0, waiting=0.30) == (True, 1), "judged on 0.30, not on 0.95"
    assert report(1, 3, 0.20, 0, waiting=0.50) == (False, 1), "the best of three goes on"
    assert report(1, 6, 0.70, 1) == (False, 2), "and the next rung judges as always"
    rungs.clear()
    assert report(5, 2, 0.10, 0) == (False, 0)
    assert report(5, 5, 0.10, 0, waiting=0.10) == (False, 0)
    assert report(5, 6, 0.20, 0, waiting=0.10) == (False, 2), (
        "at the next rung the wait ends: judged on what the first rung holds (alone: it goes "
        "on), then at the next rung on this report's value"
    )
    assert rungs == {0: {5: 0.10}, 1: {5: 0.20}}
    at_once = algorithms.halving_plan(
        AlgorithmSpec(name="asha", grace_period=2), BudgetSpec(max_epochs=20)
    )
    assert at_once is not None and at_once.first_rung_quorum == 1
    rungs.clear()
    plan = at_once
    assert report(0, 2, 0.30, 0) == (False, 1), "Optuna's rule: the first arrival passes"


@pytest.mark.parametrize(("rule", "direction"), [("asha", "maximize"), ("hyperband", "minimize")])
def test_the_service_waits_for_the_quorum_as_the_pure_rule_does(api, rule, direction):
    name = f"quorum-{rule}"
    algorithm = {
        "name": "random",
        "seed": 1,
        "early_stopping": rule,
        "grace_period": 1,
        "reduction_factor": 3,
        "first_rung_quorum": 3,
    }
    events = _events(11, n_trials=30)
    ours = _through_service(api, name, algorithm, direction, events)
    kwargs = {"rule": rule, "grace": 1, "eta": 3, "direction": direction, "name": name}
    assert ours == pure_decisions(events, quorum=3, **kwargs)
    assert ours != optuna_decisions(events, **kwargs), "the quorum must change a decision"
    assert any(ours)
