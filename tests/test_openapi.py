"""The API document tells the truth about errors, methods and content types, and the answers
it describes are the answers sent (schemathesis checks the rest: test_schemathesis.py)."""

from __future__ import annotations

import pytest

from tests.conftest import make_spec, row_counts

ERROR_BODY = {"$ref": "#/components/schemas/ErrorPublic"}


@pytest.fixture
def doc(api) -> dict:
    return api.get("/openapi.json").json()


def _operations(doc: dict):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_error_is_documented_with_the_body_it_really_has(doc):
    assert "HTTPValidationError" not in str(doc), "FastAPI's 422 body is not the one we send"
    for path, method, operation in _operations(doc):
        takes_input = operation.get("parameters") or operation.get("requestBody")
        if takes_input:
            assert "422" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            if path == "/healthz":
                continue  # its 503 is a health answer, with the database's dialect
            if status.startswith(("4", "5")) and "application/json" in response["content"]:
                assert response["content"]["application/json"]["schema"] == ERROR_BODY, (
                    method,
                    path,
                    status,
                )
        if path.startswith("/api/"):
            # the API key's refusals, on every API route
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_error_bodies_are_one_shape_whoever_refuses(api):
    assert api.post("/api/v1/studies", json=make_spec("s1")).status_code == 201
    refusals = [
        api.get("/api/v1/studies/nope"),  # 404 from the service
        api.post("/api/v1/studies", json=make_spec("s1")),  # 409
        api.get("/api/v1/studies", params={"limit": 0}),  # 422 from request validation
        api.post("/api/v1/studies", json=make_spec("s2", search_space={})),  # 422 InvalidSpec
        api.post("/api/v1/studies/s1/trials/0/reports", json={"step": 1, "metrics": {"a": 1}}),
        api.put("/api/v1/studies/s1"),  # 405 from routing
        api.get("/api/v1/nowhere"),  # 404 from routing
        api.post("/api/v1/studies", content=b"{}", headers={"Content-Type": "text/plain"}),
    ]
    assert [r.status_code for r in refusals] == [404, 409, 422, 422, 404, 405, 404, 415]
    for resp in refusals:
        body = resp.json()
        assert set(body) == {"detail"} and isinstance(body["detail"], str), resp.text
        assert len(body["detail"]) > 30, body  # says what was wrong and how to fix it


def test_options_and_a_wrong_method_name_every_method_the_path_takes(api):
    for path, allowed in [
        ("/api/v1/studies/s1", "DELETE, GET, OPTIONS"),
        ("/api/v1/studies/s1/trials", "GET, OPTIONS, POST"),
        ("/api/v1/studies/s1/trials/3/reports", "OPTIONS, POST"),
        ("/studies/s1", "GET, OPTIONS"),
    ]:
        options = api.options(path)
        assert options.status_code == 204 and options.headers["allow"] == allowed, path
        wrong = api.patch(path)
        assert wrong.status_code == 405 and wrong.headers["allow"] == allowed, path
        assert f"PATCH is not allowed on '{path}'; it takes {allowed}" == wrong.json()["detail"]


def test_a_body_that_is_not_json_is_415_or_400_and_changes_nothing(api, db_url):
    assert api.post("/api/v1/studies", json=make_spec("s1")).status_code == 201
    before = row_counts(db_url)
    for headers, body, status, words in [
        ({"Content-Type": "text/plain"}, b'{"worker": "w"}', 415, "Content-Type is 'text/plain'"),
        ({}, b'{"worker": "w"}', 415, "Content-Type is missing"),
        ({"Content-Type": "application/json"}, b'{"worker": "\xff"}', 400, "UTF-8"),
    ]:
        resp = api.post("/api/v1/studies/s1/trials", content=body, headers=headers)
        assert resp.status_code == status, resp.text
        assert words in resp.json()["detail"]
        assert "application/json" in resp.json()["detail"]
    assert row_counts(db_url) == before


def _completed_trials(api, study: str, n: int) -> list[dict]:
    trials = []
    for _ in range(n):
        trial = api.post(f"/api/v1/studies/{study}/trials").json()
        auth = {"Authorization": f"Bearer {trial['token']}"}
        path = f"/api/v1/studies/{study}/trials/{trial['number']}/complete"
        assert api.post(path, json={"metrics": {"acc": 0.5}}, headers=auth).status_code == 200
        trials.append(trial)
    return trials


def _pattern(doc: dict, path: str, name: str) -> str:
    parameters = doc["paths"][path]["get"]["parameters"]
    return next(p["schema"]["pattern"] for p in parameters if p["name"] == name)


def test_compare_takes_what_its_document_says(api, doc):
    assert api.post("/api/v1/studies", json=make_spec("s1")).status_code == 201
    trials = _completed_trials(api, "s1", 2)
    compare = "/api/v1/studies/s1/figures/compare"
    documented = _pattern(doc, "/api/v1/studies/{study}/figures/compare", "trials")
    assert documented == "^[0-9]{1,10}(,[0-9]{1,10}){0,19}$"

    both = api.get(compare, params={"trials": "0,1"}).json()
    x_row = next(row for row in both["params"] if row["name"] == "x")
    assert x_row["values"] == [t["params"]["x"] for t in trials]
    # a number given twice counts once: one trial is a comparison of one
    once = api.get(compare, params={"trials": "1,1"}).json()
    assert once["params"] and all(len(row["values"]) == 1 for row in once["params"])
    # a number no trial can have is not found, like any other trial that does not exist
    assert api.get(compare, params={"trials": "0,9999999999"}).status_code == 404
    for refused in ("0, 1", "", "0,,1", ",".join(["0"] * 21)):
        resp = api.get(compare, params={"trials": refused})
        assert resp.status_code == 422, refused
        assert "separated by commas, without spaces, like 3,7,12" in resp.json()["detail"]

    studies = "/api/v1/figures/compare-studies"
    assert _pattern(doc, studies, "studies").startswith("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(,")
    assert api.get(studies, params={"studies": "s1,s1"}).status_code == 200
    assert api.get(studies, params={"studies": "s1, s1"}).status_code == 422


def test_a_contour_of_a_one_parameter_study_says_why_it_is_blank(api):
    spec = make_spec("one", search_space={"x": {"type": "float", "low": 0, "high": 1}})
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    resp = api.get("/api/v1/studies/one/figures/contour")
    assert resp.status_code == 200, resp.text
    texts = [a["text"] for a in resp.json()["layout"]["annotations"]]
    assert texts == ["a contour needs two parameters, and this study has one"]
    assert api.get("/api/v1/studies/one/figures/contour", params={"x": "y"}).status_code == 422


def test_pages_and_files_are_documented_with_the_types_they_are_sent_as(api, doc):
    assert doc["paths"]["/studies/{study}"]["get"]["responses"]["200"]["content"] == {
        "text/html": {"schema": {"type": "string"}}
    }
    assert api.get("/studies/nope").headers["content-type"].startswith("text/html")
    documented = doc["paths"]["/static/{name}"]["get"]["responses"]["200"]["content"]
    for name in ("dashboard.css", "dashboard.js"):
        sent = api.get(f"/static/{name}").headers["content-type"].split(";")[0]
        assert sent in documented, name
