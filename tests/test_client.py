"""The Python client against the real app, on both backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

import hpo
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


# -- dropped connections: what is re-sent, and what is not ------------------------------------


@dataclass
class Drop:
    method: str
    path_end: str
    mode: str  # "lost": delivered, then the answer is lost; "refused": never delivered
    times: int = 1


class FlakyTransport(httpx.BaseTransport):
    """Forwards every request to the real app, except that chosen ones fail like a keep-alive
    connection the server closed: before the request went out (``refused``), or after the
    server handled it but before its answer arrived (``lost``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.drops: list[Drop] = []
        self.sent: list[httpx.Request] = []  # every try the client made
        self.delivered: list[httpx.Request] = []  # the tries the app handled

    def drop(self, method: str, path_end: str, mode: str = "lost", times: int = 1) -> None:
        self.drops.append(Drop(method, path_end, mode, times))

    def tries(self, method: str, path_end: str, *, delivered: bool = False) -> int:
        requests = self.delivered if delivered else self.sent
        return sum(r.method == method and r.url.path.endswith(path_end) for r in requests)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        drop = next(
            (
                d
                for d in self.drops
                if d.times and d.method == request.method and request.url.path.endswith(d.path_end)
            ),
            None,
        )
        if drop is not None:
            drop.times -= 1
            if drop.mode == "refused":
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        request.read()
        # the app's TestClient is built on its own httpx: hand it the request afresh
        answer = self.app.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        self.delivered.append(request)
        if drop is not None:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        # the app's client already decoded the body: pass on the body and its type only
        content_type = answer.headers.get("content-type", "application/json")
        return httpx.Response(
            answer.status_code, headers={"content-type": content_type}, content=answer.content
        )


@pytest.fixture
def flaky(api, monkeypatch) -> FlakyTransport:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("hpo.client._client.BACKOFF", (0.0, 0.0))
    return FlakyTransport(api)


@pytest.fixture
def flaky_client(flaky: FlakyTransport) -> Client:
    return Client(http=httpx.Client(base_url="http://localhost", transport=flaky))


def test_a_read_whose_answer_was_lost_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    flaky.drop("GET", "/studies/s1")
    assert flaky_client.get_study("s1").name == "s1"
    assert flaky.tries("GET", "/studies/s1", delivered=True) == 2


def test_a_dropped_heartbeat_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    trial = flaky_client.ask("s1")
    flaky.drop("POST", "/heartbeat")
    assert trial.heartbeat(worker="node-1:42", gpus="0") is False
    assert flaky.tries("POST", "/heartbeat", delivered=True) == 2
    assert flaky_client.trial("s1", trial.number).runs[0].worker == "node-1:42"


def test_an_ask_whose_answer_was_lost_is_not_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    flaky.drop("POST", "/studies/s1/trials")
    with pytest.raises(HPOClientError) as info:
        flaky_client.ask("s1")
    assert info.value.status_code == 0
    assert "broke before it answered POST /api/v1/studies/s1/trials" in info.value.message
    assert "not sent again" in info.value.message
    assert flaky.tries("POST", "/studies/s1/trials") == 1, "an ask is never repeated blindly"
    assert flaky_client.get_study("s1").n_trials == 1, "exactly one trial was handed out"


def test_an_ask_that_never_reached_the_server_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    flaky.drop("POST", "/studies/s1/trials", mode="refused")
    trial = flaky_client.ask("s1")
    assert trial.number == 0
    assert flaky.tries("POST", "/studies/s1/trials") == 2
    assert flaky.tries("POST", "/studies/s1/trials", delivered=True) == 1
    assert flaky_client.get_study("s1").n_trials == 1


def test_a_create_whose_answer_was_lost_is_not_sent_again(flaky, flaky_client):
    flaky.drop("POST", "/api/v1/studies")
    with pytest.raises(HPOClientError) as info:
        flaky_client.create_study(make_spec())
    assert info.value.status_code == 0 and "not sent again" in info.value.message
    assert flaky.tries("POST", "/api/v1/studies") == 1
    assert flaky_client.get_study("s1").name == "s1", "the study was created once"


def test_a_delete_whose_answer_was_lost_counts_as_done(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    flaky.drop("DELETE", "/studies/s1")
    flaky_client.delete_study("s1")  # the retry answers 404: the first try deleted it
    assert flaky.tries("DELETE", "/studies/s1", delivered=True) == 2
    with pytest.raises(HPOClientError) as info:
        flaky_client.delete_study("s1")  # no dropped connection: a 404 is a 404
    assert info.value.status_code == 404


def test_a_dropped_cancel_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    flaky.drop("POST", "/studies/s1/cancel")
    assert flaky_client.cancel_study("s1").status == "cancelled"
    assert flaky.tries("POST", "/studies/s1/cancel", delivered=True) == 2


def test_a_controller_that_keeps_dropping_is_unreachable_after_two_retries(flaky, flaky_client):
    flaky.drop("GET", "/api/v1/studies", times=10)
    with pytest.raises(HPOClientError) as info:
        flaky_client.list_studies()
    assert info.value.status_code == 0 and "cannot reach the hpo controller" in info.value.message
    assert flaky.tries("GET", "/api/v1/studies") == 3


def test_the_client_says_who_it_is(flaky, flaky_client):
    flaky_client.list_studies()
    assert flaky.sent[-1].headers["user-agent"] == f"hpo-client/{hpo.__version__}"
    named = Client(
        http=httpx.Client(base_url="http://localhost", transport=flaky), user_agent="mine/2"
    )
    named.list_studies()
    assert flaky.sent[-1].headers["user-agent"] == "mine/2"


# The three below need the server to answer a repeated report, complete or fail like the first
# one (the trial protocol's idempotency), not with a 409.


def test_a_report_whose_answer_was_lost_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    trial = flaky_client.ask("s1")
    flaky.drop("POST", "/reports")
    assert trial.report(1, {"acc": 0.5}) is False
    assert flaky.tries("POST", "/reports", delivered=True) == 2
    detail = flaky_client.trial("s1", trial.number)
    assert [r.step for r in detail.reports] == [1] and detail.state == "running"


def test_a_complete_whose_answer_was_lost_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    trial = flaky_client.ask("s1")
    flaky.drop("POST", "/complete")
    done = trial.complete({"acc": 0.75})
    assert done.state == "completed" and done.value == 0.75
    assert flaky.tries("POST", "/complete", delivered=True) == 2
    assert flaky_client.best("s1").number == trial.number


def test_a_fail_whose_answer_was_lost_is_sent_again(flaky, flaky_client):
    flaky_client.create_study(make_spec())
    trial = flaky_client.ask("s1")
    flaky.drop("POST", "/fail")
    failed = trial.fail("CUDA out of memory", kind="oom")
    assert failed.state == "failed"
    assert [(r.failure_kind, r.error) for r in failed.runs] == [("oom", "CUDA out of memory")]
    assert flaky.tries("POST", "/fail", delivered=True) == 2
