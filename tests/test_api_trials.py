"""The trial protocol on PostgreSQL and SQLite: ask, report, complete, fail, and the reads."""

from __future__ import annotations

import itertools

import optuna
import pytest

from hpo import service
from tests.conftest import make_spec, row_counts

GRID_SPACE = {
    "lr": {"type": "categorical", "choices": [1e-4, 3e-4, 1e-3]},
    "layers": {"type": "int", "low": 2, "high": 4, "step": 2},
    "dropout": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.1},
}


def _ask(api, study="s1"):
    resp = api.post(f"/api/v1/studies/{study}/trials")
    assert resp.status_code == 201, resp.text
    trial = resp.json()
    trial["auth"] = {"Authorization": f"Bearer {trial['token']}"}
    return trial


def _post(api, trial, action, body, study="s1", auth=None):
    return api.post(
        f"/api/v1/studies/{study}/trials/{trial['number']}/{action}",
        json=body,
        headers=trial["auth"] if auth is None else auth,
    )


def test_grid_hands_out_the_cartesian_product_once_then_409(api):
    spec = make_spec("grid", search_space=GRID_SPACE, algorithm={"name": "grid", "seed": 3})
    created = api.post("/api/v1/studies", json=spec).json()
    assert created["size"] == 12
    seen = [tuple(sorted(_ask(api, "grid")["params"].items())) for _ in range(12)]
    assert len(set(seen)) == 12
    product = {
        tuple(sorted({"lr": lr, "layers": n, "dropout": d}.items()))
        for lr, n, d in itertools.product([1e-4, 3e-4, 1e-3], [2, 4], [0.0, 0.1])
    }
    assert set(seen) == product
    extra = api.post("/api/v1/studies/grid/trials")
    assert extra.status_code == 409
    assert "all 12 trials were handed out" in extra.json()["detail"]


def test_grid_size_is_capped_by_max_trials(api):
    spec = make_spec(
        "g5", search_space=GRID_SPACE, algorithm={"name": "grid"}, budget={"max_trials": 5}
    )
    assert api.post("/api/v1/studies", json=spec).json()["size"] == 5
    params = [tuple(sorted(_ask(api, "g5")["params"].items())) for _ in range(5)]
    assert len(set(params)) == 5
    assert api.post("/api/v1/studies/g5/trials").status_code == 409


def _sequence(api, name, seed, n=8):
    api.post("/api/v1/studies", json=make_spec(name, algorithm={"name": "random", "seed": seed}))
    return [_ask(api, name)["params"] for _ in range(n)]


def test_random_with_a_seed_is_reproducible_across_studies(api):
    first = _sequence(api, "r1", seed=42)
    again = _sequence(api, "r2", seed=42)
    other = _sequence(api, "r3", seed=43)
    assert first == again
    assert first != other
    assert len({p["x"] for p in first}) == len(first)  # really random, not one point


def test_reports_come_back_per_step_with_every_metric(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    for step in (1, 2, 3):
        resp = _post(
            api,
            trial,
            "reports",
            {
                "step": step,
                "metrics": {"acc": 0.1 * step, "train_loss": 1.0 / step, "epoch_seconds": 2.5},
            },
        )
        assert resp.status_code == 200 and resp.json() == {"should_stop": False}
    done = _post(api, trial, "complete", {"metrics": {"acc": 0.35, "test_acc": 0.33}})
    assert done.status_code == 200, done.text
    detail = api.get(f"/api/v1/studies/s1/trials/{trial['number']}").json()
    assert detail["state"] == "completed" and detail["value"] == pytest.approx(0.35)
    assert detail["params"] == trial["params"]
    assert [r["step"] for r in detail["reports"]] == [1, 2, 3]
    assert detail["reports"][1]["metrics"] == pytest.approx(
        {"acc": 0.2, "train_loss": 0.5, "epoch_seconds": 2.5}
    )
    assert detail["final_metrics"] == {"acc": 0.35, "test_acc": 0.33}
    assert detail["last_step"] == 3
    assert detail["runs"][0]["state"] == "completed" and detail["runs"][0]["attempt"] == 1


def test_finished_trial_refuses_report_complete_and_fail_with_409(api, db_url):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    assert _post(api, trial, "complete", {"metrics": {"acc": 0.9}}).status_code == 200
    before = row_counts(db_url)
    for action, body in [
        ("reports", {"step": 9, "metrics": {"acc": 0.1}}),
        ("complete", {"metrics": {"acc": 0.1}}),
        ("fail", {"reason": "late"}),
    ]:
        resp = _post(api, trial, action, body)
        assert resp.status_code == 409, action
        assert "already completed" in resp.json()["detail"]
    assert row_counts(db_url) == before
    assert api.get("/api/v1/studies/s1/best").json()["value"] == pytest.approx(0.9)


def test_trial_token_is_required_and_checked(api, db_url):
    api.post("/api/v1/studies", json=make_spec())
    mine, other = _ask(api), _ask(api)
    before = row_counts(db_url)
    body = {"step": 1, "metrics": {"acc": 0.5}}
    missing = _post(api, mine, "reports", body, auth={})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    wrong = _post(api, mine, "reports", body, auth=other["auth"])
    assert wrong.status_code == 403 and "token does not belong" in wrong.json()["detail"]
    assert (
        _post(api, mine, "complete", {"metrics": {"acc": 1}}, auth=other["auth"]).status_code == 403
    )
    assert row_counts(db_url) == before


def test_report_for_an_unknown_trial_is_404_and_stores_nothing(api, db_url):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    before = row_counts(db_url)
    resp = api.post(
        "/api/v1/studies/s1/trials/57/reports",
        json={"step": 1, "metrics": {"acc": 0.5}},
        headers=trial["auth"],
    )
    assert resp.status_code == 404
    assert "has no trial 57" in resp.json()["detail"]
    assert row_counts(db_url) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"step": 1, "metrics": {"loss": 0.5}}, "no value for the objective metric 'acc'"),
        ('{"step": 1, "metrics": {"acc": NaN, "loss": Infinity}}', "not finite"),
        ({"step": -1, "metrics": {"acc": 0.5}}, "step"),
        ({"step": 1, "metrics": {}}, "metrics"),
        ({"step": "one", "metrics": {"acc": 0.5}}, "step"),
    ],
)
def test_bad_report_is_422_naming_the_problem(api, db_url, body, message):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    before = row_counts(db_url)
    if isinstance(body, str):  # JSON with NaN, as Python's json module writes it
        resp = api.post(
            f"/api/v1/studies/s1/trials/{trial['number']}/reports",
            content=body,
            headers={**trial["auth"], "Content-Type": "application/json"},
        )
    else:
        resp = _post(api, trial, "reports", body)
    assert resp.status_code == 422
    assert message in resp.json()["detail"]
    assert row_counts(db_url) == before


def test_steps_must_increase(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    assert _post(api, trial, "reports", {"step": 2, "metrics": {"acc": 0.5}}).status_code == 200
    again = _post(api, trial, "reports", {"step": 2, "metrics": {"acc": 0.6}})
    assert again.status_code == 409 and "steps must increase" in again.json()["detail"]


def test_fail_records_the_reason_and_the_study_goes_on(api):
    api.post("/api/v1/studies", json=make_spec())
    trial = _ask(api)
    resp = _post(api, trial, "fail", {"reason": "loss became NaN at step 3"})
    assert resp.status_code == 200 and resp.json()["state"] == "failed"
    run = api.get(f"/api/v1/studies/s1/trials/{trial['number']}").json()["runs"][0]
    assert run["error"] == "loss became NaN at step 3" and run["failure_kind"] == "reported"
    assert _ask(api)["number"] == trial["number"] + 1


def test_budget_is_enforced_and_the_study_completes(api):
    api.post("/api/v1/studies", json=make_spec(budget={"max_trials": 3}))
    trials = [_ask(api) for _ in range(3)]
    refused = api.post("/api/v1/studies/s1/trials")
    assert refused.status_code == 409 and "used its budget" in refused.json()["detail"]
    for i, trial in enumerate(trials):
        assert api.get("/api/v1/studies/s1").json()["status"] == "running"
        _post(api, trial, "complete", {"metrics": {"acc": i / 10}})
    study = api.get("/api/v1/studies/s1").json()
    assert study["status"] == "completed" and study["finished_at"] is not None
    assert study["trial_counts"]["completed"] == 3
    assert study["best"]["number"] == trials[2]["number"]


def test_trial_list_filters_by_state_and_pages(api):
    api.post("/api/v1/studies", json=make_spec())
    trials = [_ask(api) for _ in range(5)]
    _post(api, trials[0], "complete", {"metrics": {"acc": 0.5}})
    _post(api, trials[1], "fail", {"reason": "oom"})
    listing = api.get("/api/v1/studies/s1/trials").json()
    assert listing["count"] == 5 and [t["number"] for t in listing["data"]] == [0, 1, 2, 3, 4]
    assert [t["state"] for t in listing["data"]] == [
        "completed",
        "failed",
        "running",
        "running",
        "running",
    ]
    running = api.get("/api/v1/studies/s1/trials", params={"state": "running"}).json()
    assert running["count"] == 3
    page = api.get("/api/v1/studies/s1/trials", params={"limit": 2, "offset": 2}).json()
    assert page["count"] == 5 and [t["number"] for t in page["data"]] == [2, 3]
    assert api.get("/api/v1/studies/s1/trials", params={"state": "weird"}).status_code == 422


def test_optuna_load_study_sees_the_service_trials(api, app, db_url):
    api.post("/api/v1/studies", json=make_spec("shared"))
    trial = _ask(api, "shared")
    _post(api, trial, "reports", {"step": 1, "metrics": {"acc": 0.4}}, study="shared")
    _post(api, trial, "complete", {"metrics": {"acc": 0.6}}, study="shared")
    _ask(api, "shared")
    service.sync_optuna(app.state.db, wait=30)  # the mirror follows the truth after commit
    study = optuna.load_study(study_name="shared", storage=db_url)
    assert len(study.trials) == 2
    assert study.best_trial.params == trial["params"]
    assert study.best_value == pytest.approx(0.6)
    assert study.trials[0].intermediate_values == {1: pytest.approx(0.4)}
    assert study.trials[1].state == optuna.trial.TrialState.RUNNING


def test_stepped_floats_come_out_as_a_person_writes_them(api):
    space = {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}}
    api.post("/api/v1/studies", json=make_spec(search_space=space))
    values = []
    for _ in range(12):
        trial = _ask(api)
        values.append(trial["params"]["dropout"])
        _post(api, trial, "complete", {"metrics": {"acc": trial["params"]["dropout"]}})
    assert all(v == round(v, 1) for v in values), values
    listed = [t["params"]["dropout"] for t in api.get("/api/v1/studies/s1/trials").json()["data"]]
    assert listed == values
    assert api.get("/api/v1/studies/s1/best").json()["params"]["dropout"] == max(values)
