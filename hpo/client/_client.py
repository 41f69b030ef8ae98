"""The Python client: studies, results and the trial protocol over REST (httpx).

A request whose connection fails is tried up to :data:`RETRIES` more times, as far as that is
safe: a server under load may close a reused keep-alive connection just as a request goes out
on it. Reads, deletes, study cancel and the trial protocol's report, heartbeat, complete and
fail are idempotent on the server (a repeated report, complete or fail answers like the first),
so they are re-sent after any connection failure. ``ask`` and ``create_study`` are not: a
second ask would hand out a second trial, so they are re-sent only when the request certainly
never left (the connection could not be opened).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from .. import __version__
from ..schemas import (
    BestTrial,
    LeaseGrant,
    Page,
    StudyPublic,
    TrialAssignment,
    TrialDetail,
    TrialPublic,
)
from ..spec import StudySpec, load_spec

#: how many more times a request is sent after its connection failed
RETRIES = 2
#: seconds to wait before each retry
BACKOFF = (0.1, 0.5)
#: the request never reached the server: safe to send again whatever it was
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
#: the connection broke while sending or before the answer: safe to repeat idempotent calls
DROPPED = (*NOT_SENT, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "DELETE"})


class HPOClientError(Exception):
    """The server refused a request; ``message`` is the server's explanation."""

    def __init__(self, status_code: int, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.method = method
        self.url = url


class Client:
    """A client of one hpo controller.

    Args:
        base_url: the controller, e.g. ``http://127.0.0.1:8000``.
        token: a bearer token sent with every request (for deployments behind an auth proxy;
            trial tokens are handled per trial by :meth:`ask`).
        api_key: the controller's API key, sent as ``X-API-Key``; by default the environment
            variable ``HPO_API_KEY`` (none needed while the controller has access control off).
        timeout: seconds per request.
        http: an httpx client to use instead of building one (tests pass the app's).
        user_agent: how this client introduces itself; hpo's own components say who they are
            (``hpo-dispatcher/...``, ``hpo-worker/...``) so that the controller can log their
            routine calls more quietly than everyone else's.

    Example::

        client = Client("http://127.0.0.1:8000")
        client.create_study("study.yaml")
        trial = client.ask("vit-asha")
        for epoch in range(1, 10):
            if trial.report(epoch, {"val_accuracy": train_one_epoch(**trial.params)}):
                break  # early-stopped
        else:
            trial.complete({"val_accuracy": evaluate()})
        print(client.best_config("vit-asha"))
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        user_agent: str = f"hpo-client/{__version__}",
        api_key: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api_key = api_key if api_key is not None else os.environ.get("HPO_API_KEY") or None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        self.base_url = str(self._http.base_url)
        self.user_agent = user_agent

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> Any:
        """Send one request, retrying a dropped connection where that is safe.

        ``idempotent``: whether sending the request twice does what sending it once does; by
        default true for GET, HEAD and DELETE.
        """
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        kwargs["headers"] = {"User-Agent": self.user_agent, **kwargs.get("headers", {})}
        if self.api_key:
            kwargs["headers"]["X-API-Key"] = self.api_key
        retryable = DROPPED if idempotent else NOT_SENT
        delivered = False  # whether an earlier try may have reached the server
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1])
            try:
                response = self._http.request(method, path, **kwargs)
            except retryable as exc:
                error: Exception = exc
                delivered = delivered or not isinstance(exc, NOT_SENT)
                continue
            except DROPPED as exc:
                raise HPOClientError(
                    0,
                    f"the connection to the hpo controller at {self.base_url} broke before it "
                    f"answered {method} {path} ({type(exc).__name__}: {exc}); the request may "
                    "have been carried out, so it was not sent again",
                    method=method,
                    url=path,
                ) from exc
            except httpx.TransportError as exc:
                raise self._unreachable(method, path, exc) from exc
            if delivered and method == "DELETE" and response.status_code == 404:
                return None  # an earlier try deleted it; only its answer was lost
            return _answer(response, method, path)
        raise self._unreachable(method, path, error) from error

    def _unreachable(self, method: str, path: str, exc: Exception) -> HPOClientError:
        return HPOClientError(
            0,
            f"cannot reach the hpo controller at {self.base_url} ({exc}); is `hpo serve` "
            "running there?",
            method=method,
            url=path,
        )

    # studies
    def create_study(self, spec: StudySpec | dict[str, Any] | str | Path) -> StudyPublic:
        """Create a study from a spec, a dict, or the path of a YAML file."""
        return StudyPublic.model_validate(
            self._request("POST", "/api/v1/studies", json=_spec_body(spec))
        )

    def fork_study(
        self, parent: str | int, spec: StudySpec | dict[str, Any] | str | Path
    ) -> StudyPublic:
        """Create a study (a spec, a dict, or the path of a YAML file) as a fork of ``parent``:
        it starts with the parent's finished trials that fit its space as history."""
        return StudyPublic.model_validate(
            self._request("POST", f"/api/v1/studies/{parent}/fork", json=_spec_body(spec))
        )

    def get_study(self, study: str | int) -> StudyPublic:
        return StudyPublic.model_validate(self._request("GET", f"/api/v1/studies/{study}"))

    def list_studies(self, *, status: str | None = None) -> list[StudyPublic]:
        params = {"status": status} if status else {}
        return _all_pages(self, "/api/v1/studies", params, StudyPublic)

    def cancel_study(self, study: str | int) -> StudyPublic:
        return StudyPublic.model_validate(
            self._request("POST", f"/api/v1/studies/{study}/cancel", idempotent=True)
        )

    def delete_study(self, study: str | int) -> None:
        self._request("DELETE", f"/api/v1/studies/{study}")

    # results
    def trials(self, study: str | int, *, state: str | None = None) -> list[TrialPublic]:
        params = {"state": state} if state else {}
        return _all_pages(self, f"/api/v1/studies/{study}/trials", params, TrialPublic)

    def trial(self, study: str | int, number: int) -> TrialDetail:
        return TrialDetail.model_validate(
            self._request("GET", f"/api/v1/studies/{study}/trials/{number}")
        )

    def best(self, study: str | int) -> BestTrial:
        return BestTrial.model_validate(self._request("GET", f"/api/v1/studies/{study}/best"))

    def best_config(self, study: str | int) -> dict[str, Any]:
        """The parameters of the best completed trial, ready to train with."""
        return self.best(study).params

    # the trial protocol
    def claim_studies(
        self,
        holder: str,
        studies: list[str],
        *,
        waiting: dict[str, str] | None = None,
        ttl_seconds: float = 15.0,
    ) -> LeaseGrant:
        """As dispatcher ``holder``, claim or renew the running studies (among ``studies``)
        whose trials it runs; see ``POST /api/v1/leases``."""
        body = {
            "holder": holder,
            "studies": studies,
            "waiting": waiting or {},
            "ttl_seconds": ttl_seconds,
        }
        data = self._request("POST", "/api/v1/leases", json=body, idempotent=True)
        return LeaseGrant.model_validate(data)

    def release_studies(self, holder: str) -> int:
        """Give back every study dispatcher ``holder`` holds; returns how many."""
        data = self._request("DELETE", f"/api/v1/leases/{holder}", idempotent=True)
        return int(data["released"])

    def ask(self, study: str | int, *, worker: str | None = None) -> Trial:
        """Take the next trial of ``study`` to run."""
        data = self._request(
            "POST", f"/api/v1/studies/{study}/trials", json={"worker": worker} if worker else None
        )
        return Trial(self, TrialAssignment.model_validate(data))

    def attach(self, assignment: TrialAssignment) -> Trial:
        """A handle on a trial that was asked for elsewhere (a dispatcher hands it to a worker)."""
        return Trial(self, assignment)


class Trial:
    """One trial handed out by :meth:`Client.ask`: its parameters and its protocol calls."""

    def __init__(self, client: Client, assignment: TrialAssignment) -> None:
        self._client = client
        self.assignment = assignment
        self.study = assignment.study
        self.number = assignment.number
        self.params = assignment.params
        self._token = assignment.token
        self.attempt = assignment.attempt
        self.should_stop = False

    def __repr__(self) -> str:
        return f"Trial(study={self.study!r}, number={self.number}, params={self.params!r})"

    def _post(self, action: str, body: dict[str, Any]) -> Any:
        # the server answers a repeated report, heartbeat, complete or fail like the first one
        return self._client._request(
            "POST",
            f"/api/v1/studies/{self.study}/trials/{self.number}/{action}",
            idempotent=True,
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
        )

    def report(self, step: int, metrics: dict[str, float]) -> bool:
        """Report one step's metrics; True means stop now (the trial was early-stopped)."""
        self.should_stop = bool(
            self._post("reports", {"step": step, "metrics": metrics})["should_stop"]
        )
        return self.should_stop

    def heartbeat(self, *, worker: str | None = None, gpus: str | None = None) -> bool:
        """Say the trial is alive (and where it runs); True means stop now."""
        body = {k: v for k, v in {"worker": worker, "gpus": gpus}.items() if v is not None}
        self.should_stop = bool(self._post("heartbeat", body)["should_stop"]) or self.should_stop
        return self.should_stop

    def complete(self, metrics: dict[str, float]) -> TrialDetail:
        """Finish the trial; ``metrics`` must hold the study's objective metric."""
        return TrialDetail.model_validate(self._post("complete", {"metrics": metrics}))

    def fail(self, reason: str, *, kind: str = "reported") -> TrialDetail:
        """End the trial as failed; the study goes on.

        ``kind`` says why (``exception``, ``oom``, ``nonfinite``, ...); ``crash`` and
        ``node_lost`` mean the infrastructure failed, and the controller retries the trial.
        """
        return TrialDetail.model_validate(self._post("fail", {"reason": reason, "kind": kind}))


def _spec_body(spec: StudySpec | dict[str, Any] | str | Path) -> dict[str, Any]:
    """The JSON body of a study spec given as a spec, a dict, or the path of a YAML file."""
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    if not isinstance(spec, StudySpec):
        return spec
    body = spec.model_dump(mode="json", exclude={"preset"})
    if spec.preset:
        body["search_space"] = spec.preset
    return body


def _answer(response: httpx.Response, method: str, path: str) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("detail", response.text)
        except ValueError:
            message = response.text
        raise HPOClientError(response.status_code, str(message), method=method, url=path)
    return response.json() if response.content else None


def _all_pages(client: Client, path: str, params: dict[str, Any], model: Any) -> list[Any]:
    items: list[Any] = []
    while True:
        page = Page[model].model_validate(
            client._request("GET", path, params={**params, "limit": 1000, "offset": len(items)})
        )
        items.extend(page.data)
        if not page.data or len(items) >= page.count:
            return items
