"""The study endpoints on PostgreSQL and SQLite (the same suite, both backends)."""

from __future__ import annotations

import optuna
import pytest

from tests.conftest import make_spec, row_counts


def test_create_returns_the_study_and_it_can_be_read_by_name_and_id(api):
    created = api.post("/api/v1/studies", json=make_spec("alpha"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "alpha" and body["status"] == "running"
    assert body["size"] == 20 and body["n_trials"] == 0 and body["best"] is None
    assert body["trial_counts"] == {
        "pending": 0,
        "running": 0,
        "completed": 0,
        "pruned": 0,
        "failed": 0,
        "cancelled": 0,
    }
    by_name = api.get("/api/v1/studies/alpha").json()
    by_id = api.get(f"/api/v1/studies/{body['id']}").json()
    assert by_name == by_id
    assert by_name["spec"]["search_space"]["opt"]["choices"] == ["adam", "sgd"]
    assert body["created_at"].endswith(("Z", "+00:00")), "timestamps carry their zone (UTC)"


def test_list_is_an_envelope_newest_first_with_status_filter(api):
    for name in ("one", "two", "three"):
        assert api.post("/api/v1/studies", json=make_spec(name)).status_code == 201
    assert api.post("/api/v1/studies/two/cancel").status_code == 200
    listing = api.get("/api/v1/studies").json()
    assert listing["count"] == 3
    assert [s["name"] for s in listing["data"]] == ["three", "two", "one"]
    cancelled = api.get("/api/v1/studies", params={"status": "cancelled"}).json()
    assert cancelled["count"] == 1 and cancelled["data"][0]["name"] == "two"
    page = api.get("/api/v1/studies", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 3 and [s["name"] for s in page["data"]] == ["two"]


def test_preset_search_space_is_resolved_and_named(api):
    resp = api.post(
        "/api/v1/studies",
        json=make_spec(
            "vit",
            search_space="transformer-small",
            algorithm={"name": "asha", "seed": 0},
            budget={"max_epochs": 9},
        ),
    )
    assert resp.status_code == 201, resp.text
    spec = resp.json()["spec"]
    assert spec["preset"] == "transformer-small"
    assert set(spec["search_space"]) == {
        "learning_rate",
        "batch_size",
        "dropout",
        "num_heads",
        "num_layers",
    }
    assert spec["search_space"]["learning_rate"]["log"] is True


BAD_SPECS = [
    (
        "unknown algorithm",
        make_spec(algorithm={"name": "hillclimb"}),
        "unknown algorithm 'hillclimb'",
    ),
    (
        "grid over a continuous float",
        make_spec(algorithm={"name": "grid"}),
        "grid search needs a finite set of values for 'x'",
    ),
    (
        "low > high",
        make_spec(search_space={"x": {"type": "float", "low": 2, "high": 1}}),
        "must be low < high",
    ),
    ("empty search space", make_spec(search_space={}), "search_space is empty"),
    ("negative budget", make_spec(budget={"max_trials": -4}), "budget.max_trials"),
    (
        "unknown preset",
        make_spec(search_space="transformer-huge"),
        "unknown search-space preset 'transformer-huge'",
    ),
    ("unknown workload", make_spec(workload={"name": "mystery"}), "unknown workload 'mystery'"),
    (
        "log scale from zero",
        make_spec(search_space={"lr": {"type": "float", "low": 0, "high": 1, "log": True}}),
        "log scale needs low > 0",
    ),
    ("misspelt field", make_spec(budget={"max_trails": 3}), "budget.max_trails: unknown field"),
    (
        "eta of one",
        make_spec(algorithm={"name": "asha", "reduction_factor": 1}),
        "reduction_factor is 1, but must be reduction_factor >= 2",
    ),
    ("bad param type", make_spec(search_space={"x": {"type": "complex"}}), "'type' must be one of"),
    (
        "missing objective",
        {k: v for k, v in make_spec().items() if k != "objective"},
        "objective: required field is missing",
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_422_naming_the_problem_and_stores_nothing(api, db_url, case, spec, message):
    before = row_counts(db_url)
    resp = api.post("/api/v1/studies", json=spec)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"], resp.json()["detail"]
    assert row_counts(db_url) == before


def test_malformed_json_is_422_and_stores_nothing(api, db_url):
    before = row_counts(db_url)
    resp = api.post(
        "/api/v1/studies", content=b'{"name": "x", ', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    assert "not valid JSON" in resp.json()["detail"]
    assert row_counts(db_url) == before


def test_duplicate_name_is_409_and_changes_nothing(api, db_url):
    assert api.post("/api/v1/studies", json=make_spec("dup")).status_code == 201
    before = row_counts(db_url)
    resp = api.post("/api/v1/studies", json=make_spec("dup", algorithm={"name": "bayesian"}))
    assert resp.status_code == 409
    assert "already exists" in resp.json()["detail"]
    assert row_counts(db_url) == before
    assert api.get("/api/v1/studies/dup").json()["spec"]["algorithm"]["name"] == "random"


def test_unknown_study_is_404_with_a_hint(api):
    for path in (
        "/api/v1/studies/nope",
        "/api/v1/studies/nope/trials",
        "/api/v1/studies/nope/best",
        "/api/v1/studies/999",
    ):
        resp = api.get(path)
        assert resp.status_code == 404, path
        assert "no study" in resp.json()["detail"]


def test_best_before_any_completed_trial_is_404_saying_so(api):
    api.post("/api/v1/studies", json=make_spec("fresh"))
    resp = api.get("/api/v1/studies/fresh/best")
    assert resp.status_code == 404
    assert "no completed trial yet" in resp.json()["detail"]


def test_cancel_stops_asks_and_tells_running_trials_to_stop(api):
    api.post("/api/v1/studies", json=make_spec("c"))
    trial = api.post("/api/v1/studies/c/trials").json()
    auth = {"Authorization": f"Bearer {trial['token']}"}
    cancelled = api.post("/api/v1/studies/c/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["trial_counts"]["cancelled"] == 1
    ask = api.post("/api/v1/studies/c/trials")
    assert ask.status_code == 409 and "cancelled" in ask.json()["detail"]
    report = api.post(
        f"/api/v1/studies/c/trials/{trial['number']}/reports",
        json={"step": 1, "metrics": {"acc": 0.5}},
        headers=auth,
    )
    assert report.status_code == 200 and report.json() == {"should_stop": True}
    detail = api.get(f"/api/v1/studies/c/trials/{trial['number']}").json()
    assert detail["state"] == "cancelled"
    assert detail["runs"][0]["failure_kind"] == "cancelled"


def test_delete_removes_the_study_and_everything_it_recorded(api, db_url):
    before = row_counts(db_url)
    api.post("/api/v1/studies", json=make_spec("gone"))
    trial = api.post("/api/v1/studies/gone/trials").json()
    api.post(
        f"/api/v1/studies/gone/trials/{trial['number']}/reports",
        json={"step": 1, "metrics": {"acc": 0.1}},
        headers={"Authorization": f"Bearer {trial['token']}"},
    )
    resp = api.delete("/api/v1/studies/gone")
    assert resp.status_code == 204
    assert api.get("/api/v1/studies/gone").status_code == 404
    assert row_counts(db_url) == before
    assert optuna.get_all_study_names(storage=db_url) == []


def test_search_space_presets_are_listed(api):
    listing = api.get("/api/v1/search-spaces").json()
    names = [p["name"] for p in listing["data"]]
    assert {"transformer-small", "transformer-grid", "bert-finetune"} <= set(names)
    bert = next(p for p in listing["data"] if p["name"] == "bert-finetune")
    assert bert["parameters"]["learning_rate"] == {
        "type": "float",
        "low": 1e-5,
        "high": 5e-5,
        "log": True,
    }
    assert bert["parameters"]["batch_size"]["choices"] == [8, 16, 32]
    assert {"warmup_ratio", "weight_decay", "dropout"} <= set(bert["parameters"])


def test_healthz_names_the_backend(api, db_url):
    body = api.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["database"] == db_url.split(":")[0].split("+")[0]


def test_openapi_documents_every_endpoint(api):
    paths = api.get("/openapi.json").json()["paths"]
    expected = {
        "/api/v1/studies": {"get", "post"},
        "/api/v1/studies/{study}": {"get", "delete"},
        "/api/v1/studies/{study}/cancel": {"post"},
        "/api/v1/studies/{study}/best": {"get"},
        "/api/v1/studies/{study}/trials": {"get", "post"},
        "/api/v1/studies/{study}/trials/{number}": {"get"},
        "/api/v1/studies/{study}/trials/{number}/reports": {"post"},
        "/api/v1/studies/{study}/trials/{number}/complete": {"post"},
        "/api/v1/studies/{study}/trials/{number}/fail": {"post"},
        "/api/v1/search-spaces": {"get"},
        "/healthz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path


def test_a_deleted_study_id_is_never_handed_to_a_new_study(api):
    old = api.post("/api/v1/studies", json=make_spec("old")).json()["id"]
    assert api.delete("/api/v1/studies/old").status_code == 204
    new = api.post("/api/v1/studies", json=make_spec("new")).json()["id"]
    assert new != old
    assert api.get(f"/api/v1/studies/{old}").status_code == 404


def test_an_unregistered_workload_is_422_listing_the_known_ones(api, db_url):
    before = row_counts(db_url)
    resp = api.post("/api/v1/studies", json=make_spec(workload={"name": "my-resnet"}))
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "unknown workload 'my-resnet'" in detail
    for known in ("external", "digits-vit", "charlm-gpt", "text-classification", "synthetic"):
        assert known in detail
    assert row_counts(db_url) == before


def test_hyperparameters_a_workload_cannot_use_are_422_listing_what_it_understands(api, db_url):
    before = row_counts(db_url)
    spec = make_spec(
        objective={"metric": "val_accuracy"},
        search_space={
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "momentum": {"type": "float", "low": 0.8, "high": 0.99},
        },
        workload={"name": "digits-vit"},
    )
    resp = api.post("/api/v1/studies", json=spec)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "cannot use 'momentum'" in detail and "num_heads" in detail and "learning_rate" in detail
    bad_metric = {**spec, "search_space": "transformer-small", "objective": {"metric": "bleu"}}
    resp = api.post("/api/v1/studies", json=bad_metric)
    assert resp.status_code == 422
    assert "does not report 'bleu'" in resp.json()["detail"]
    assert "val_accuracy" in resp.json()["detail"]
    assert row_counts(db_url) == before


def test_a_registered_workload_is_accepted_with_any_params(db_url):
    from fastapi.testclient import TestClient

    from api import create_app
    from hpo.settings import Settings

    app = create_app(Settings(database_url=db_url, workloads={"mine": "pkg.mod:train"}))
    with TestClient(app, base_url="http://localhost") as http:
        resp = http.post("/api/v1/studies", json=make_spec(workload={"name": "mine"}))
        assert resp.status_code == 201, resp.text
    app.state.db.dispose()
