"""The Python client against the real app, on both backends."""

from __future__ import annotations

import pytest
import yaml

from hpo.client import Client, HPOClientError
from tests.conftest import make_spec


def test_create_from_yaml_run_and_read_the_best_config(client, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(make_spec("from-yaml", budget={"max_trials": 4})))
    study = client.create_study(path)
    assert study.name == "from-yaml" and study.size == 4
    scores = {}
    for i in range(4):
        trial = client.ask("from-yaml", worker="laptop")
        assert trial.report(1, {"acc": i / 10}) is False
        trial.complete({"acc": i / 5})
        scores[trial.number] = trial.params
    assert client.best("from-yaml").number == 3
    assert client.best_config("from-yaml") == scores[3]
    assert [t.number for t in client.trials("from-yaml")] == [0, 1, 2, 3]
    assert client.get_study("from-yaml").status == "completed"
    assert client.trial("from-yaml", 2).runs[0].worker == "laptop"


def test_preset_name_survives_the_round_trip(client, tmp_path):
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(make_spec("vit", search_space="transformer-small")))
    assert client.create_study(path).spec.preset == "transformer-small"
    assert [s.name for s in client.list_studies()] == ["vit"]


def test_server_errors_arrive_with_the_server_message(client):
    with pytest.raises(HPOClientError) as info:
        client.get_study("missing")
    assert info.value.status_code == 404 and "no study 'missing'" in info.value.message
    client.create_study(make_spec("twice"))
    with pytest.raises(HPOClientError) as info:
        client.create_study(make_spec("twice"))
    assert info.value.status_code == 409 and "already exists" in info.value.message


def test_a_finished_trial_refuses_more_reports(client):
    client.create_study(make_spec())
    trial = client.ask("s1")
    trial.fail("diverged")
    with pytest.raises(HPOClientError) as info:
        trial.report(1, {"acc": 0.1})
    assert info.value.status_code == 409 and "already failed" in info.value.message


def test_an_unreachable_server_is_a_clear_error():
    client = Client("http://127.0.0.1:9", timeout=2)
    with pytest.raises(HPOClientError) as info:
        client.list_studies()
    assert info.value.status_code == 0 and "cannot reach the hpo controller" in info.value.message


def test_list_studies_pages_through_everything(client):
    for i in range(3):
        client.create_study(make_spec(f"s{i}"))
    assert [s.name for s in client.list_studies()] == ["s2", "s1", "s0"]
    client.cancel_study("s1")
    assert [s.name for s in client.list_studies(status="cancelled")] == ["s1"]
    client.delete_study("s0")
    assert [s.name for s in client.list_studies()] == ["s2", "s1"]
