"""Issue 8, limits: every input is bounded and refused before any work that grows with it.

- a request body over ``HPO_MAX_BODY_BYTES`` (1 MiB) answers 413 before it is parsed: a
  declared length at once, a streamed one as soon as it passes the limit, and a real server's
  memory does not grow by the size of what was sent;
- the cases of the issue (huge grids, stepped floats, categorical products, compare with
  thousands of entries) answer 422 naming the size and the limit, and write nothing;
- names, metric names and ``limit`` are capped with the value and the rule in the message;
  a failure reason over its cap is stored cut, never refused.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from hpo.schemas import MAX_METRICS, MAX_REASON_CHARS
from hpo.settings import MAX_BODY_BYTES, Settings
from hpo.spec import MAX_GRID_POINTS, MAX_METRIC_NAME, MAX_NAME
from tests._servers import controller
from tests.conftest import make_spec, row_counts

MB = 1024 * 1024


def _post_raw(api, path: str, body: bytes | object):  # type: ignore[no-untyped-def]
    return api.post(path, content=body, headers={"Content-Type": "application/json"})


def _padded(spec: dict, size: int) -> bytes:
    """``spec`` as JSON padded with whitespace (still valid JSON) to exactly ``size`` bytes."""
    body = json.dumps(spec).encode()
    return body + b" " * (size - len(body))


# ------------------------------------------------------------------- body size, in process


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_413(api, db_url):
    at_limit = _padded(make_spec("fits"), MAX_BODY_BYTES)
    created = _post_raw(api, "/api/v1/studies", at_limit)
    assert created.status_code == 201, created.text
    before = row_counts(db_url)
    over = _post_raw(api, "/api/v1/studies", _padded(make_spec("too-big"), MAX_BODY_BYTES + 1))
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/json"
    detail = over.json()["detail"]
    assert f"{MAX_BODY_BYTES + 1:,} bytes" in detail and f"limit of {MAX_BODY_BYTES:,}" in detail
    assert "HPO_MAX_BODY_BYTES" in detail
    assert row_counts(db_url) == before
    assert api.get("/api/v1/studies/too-big").status_code == 404


def test_a_streamed_body_is_counted_and_refused_without_a_length(api, db_url):
    before = row_counts(db_url)

    def chunks():  # no Content-Length: httpx sends it chunked
        for _ in range(8):
            yield b" " * (MB // 2)

    resp = _post_raw(api, "/api/v1/studies", chunks())
    assert resp.status_code == 413
    assert f"over the limit of {MAX_BODY_BYTES:,} bytes (1 MiB)" in resp.json()["detail"]
    assert row_counts(db_url) == before
    # a streamed body under the limit is read as usual
    small = json.dumps(make_spec("streamed")).encode()
    ok = _post_raw(api, "/api/v1/studies", iter([small[:10], small[10:]]))
    assert ok.status_code == 201, ok.text


def test_the_trial_protocol_is_limited_too(api):
    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    trial = api.post("/api/v1/studies/s1/trials").json()
    auth = {"Authorization": f"Bearer {trial['token']}", "Content-Type": "application/json"}
    body = json.dumps({"reason": "x" * (MAX_BODY_BYTES + 10)})
    resp = api.post(f"/api/v1/studies/s1/trials/{trial['number']}/fail", content=body, headers=auth)
    assert resp.status_code == 413
    assert api.get(f"/api/v1/studies/s1/trials/{trial['number']}").json()["state"] == "running"


def test_the_limit_is_a_setting(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from api import create_app

    monkeypatch.setenv("HPO_MAX_BODY_BYTES", "4096")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hpo.db'}", mirror=False)
    assert settings.max_body_bytes == 4096
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as api:
        assert _post_raw(api, "/api/v1/studies", _padded(make_spec("a"), 4096)).status_code == 201
        resp = _post_raw(api, "/api/v1/studies", _padded(make_spec("b"), 4097))
        assert resp.status_code == 413 and "limit of 4,096 bytes (4 KiB)" in resp.json()["detail"]
    app.state.db.dispose()


# ------------------------------------------------------------ body size, a real server


def _server_pid(port: int) -> int:
    """The uvicorn child process serving ``port`` (``tests._servers.controller``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and str(port).encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no child process serves port {port}")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _settled_rss(pid: int, *, within: int = MB, deadline_s: float = 120.0) -> int:
    """The resident memory once it stops moving: two readings a second apart within
    ``within`` bytes of each other."""
    last = _rss(pid)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _rss(pid)
        if abs(now - last) < within:
            return now
        last = now
    raise AssertionError(f"the server's memory kept moving for {deadline_s} s (now {last:,})")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def test_a_real_server_refuses_100_mb_without_holding_it(tmp_path):
    hundred_mb = 100 * MB
    with controller(f"sqlite:///{tmp_path / 'hpo.db'}") as url:
        pid = _server_pid(int(url.rsplit(":", 1)[1]))
        httpx.post(f"{url}/api/v1/studies", json=make_spec("warm"), timeout=30)
        # what the server loads anyway (the views' imports, on a thread after start-up) is
        # loaded before the baseline is taken
        for view in ("importance", "history"):
            httpx.get(f"{url}/api/v1/studies/warm/figures/{view}", timeout=60)
        before = _settled_rss(pid)

        # a declared length over the limit is answered before a byte of the body is sent
        with _connect(url) as sock:
            sock.sendall(
                b"POST /api/v1/studies HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {hundred_mb}\r\n\r\n".encode()
            )
            status, headers, body = _read_response(sock)
        assert status == 413, body
        assert f"{hundred_mb:,} bytes" in json.loads(body)["detail"]
        assert headers["x-content-type-options"] == "nosniff"

        # a chunked body is refused once it passes the limit: the answer comes while most of
        # the 100 MB is still unsent
        sent = 0
        with _connect(url) as sock:
            sock.sendall(
                b"POST /api/v1/studies HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            piece = b" " * (256 * 1024)
            while sent < hundred_mb:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
                if select.select([sock], [], [], 0.2)[0]:
                    break
            status, _, body = _read_response(sock)
        assert status == 413, body
        assert sent <= 16 * MB, f"the answer came only after {sent:,} bytes were sent"

        # and whole 100 MB bodies sent to the end, with a length and chunked, leave the
        # server's memory where it was
        for content in (b"x" * hundred_mb, (b"x" * MB for _ in range(100))):
            resp = httpx.post(
                f"{url}/api/v1/studies",
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
            assert resp.status_code == 413, resp.text
        grown = _rss(pid) - before
        assert grown < 20 * MB, f"the server grew by {grown / MB:.1f} MiB"
        assert httpx.get(f"{url}/api/v1/studies", timeout=30).json()["count"] == 1


# --------------------------------------------------------------- the issue's cases: 422


def _grid(**space: object) -> dict[str, object]:
    return {"algorithm": {"name": "grid", "seed": 0}, "search_space": space}


ISSUE_CASES = [
    (
        "grid over an int range of 0..1e8",
        _grid(n={"type": "int", "low": 0, "high": 10**8}),
        "100,000,001 points",
    ),
    (
        "grid over a float with step 1e-9",
        _grid(x={"type": "float", "low": 0, "high": 1, "step": 1e-9}),
        "1,000,000,000 points",
    ),
    (
        "grid of 20 categoricals of 20 choices",
        _grid(**{f"c{i}": {"type": "categorical", "choices": list(range(20))} for i in range(20)}),
        "about 10^26 points",
    ),
]


@pytest.mark.parametrize(
    ("case", "overrides", "size"), ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES]
)
def test_the_issues_grids_are_refused_with_their_size(api, db_url, case, overrides, size):
    before = row_counts(db_url)
    resp = api.post("/api/v1/studies", json=make_spec("huge", **overrides))
    assert resp.status_code == 422
    assert (
        size in resp.json()["detail"] and f"limit is {MAX_GRID_POINTS:,}" in resp.json()["detail"]
    )
    assert row_counts(db_url) == before


def test_a_fine_stepped_float_is_fine_where_nothing_lists_it(api):
    """Random search over step 1e-9 lists nothing: accepted, and each ask draws one value."""
    space = {"x": {"type": "float", "low": 0, "high": 1, "step": 1e-9}}
    assert api.post("/api/v1/studies", json=make_spec(search_space=space)).status_code == 201
    for _ in range(3):
        trial = api.post("/api/v1/studies/s1/trials")
        assert trial.status_code == 201, trial.text
        assert 0 <= trial.json()["params"]["x"] <= 1


def test_comparisons_of_thousands_are_refused_at_once(api):
    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    trials = ",".join(str(n) for n in range(5000))
    resp = api.get("/api/v1/studies/s1/figures/compare", params={"trials": trials})
    assert resp.status_code == 422 and "1 to 20 trial numbers" in resp.json()["detail"]
    assert "(got 5000 items" in resp.json()["detail"]
    names = ",".join(f"study-{i}" for i in range(2000))
    resp = api.get("/api/v1/figures/compare-studies", params={"studies": names})
    assert resp.status_code == 422 and "1 to 20 study names" in resp.json()["detail"]
    assert "(got 2000 items" in resp.json()["detail"]
    # (duplicates count once: tests/test_openapi.py compares "1,1" as one trial)


# ------------------------------------------------------------- names, metrics, limit


def test_names_and_metric_names_are_capped_naming_value_and_rule(api, db_url):
    before = row_counts(db_url)
    resp = api.post("/api/v1/studies", json=make_spec("n" * (MAX_NAME + 1)))
    assert resp.status_code == 422
    assert f"has {MAX_NAME + 1} characters, but the limit is {MAX_NAME}" in resp.json()["detail"]
    long_metric = "m" * (MAX_METRIC_NAME + 1)
    resp = api.post("/api/v1/studies", json=make_spec(objective={"metric": long_metric}))
    assert resp.status_code == 422
    assert "objective.metric" in resp.json()["detail"]
    assert f"at most {MAX_METRIC_NAME} characters" in resp.json()["detail"]
    assert row_counts(db_url) == before

    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    trial = api.post("/api/v1/studies/s1/trials").json()
    auth = {"Authorization": f"Bearer {trial['token']}"}
    path = f"/api/v1/studies/s1/trials/{trial['number']}"
    resp = api.post(f"{path}/reports", json={"step": 1, "metrics": {long_metric: 1}}, headers=auth)
    assert resp.status_code == 422
    assert (
        f"has {MAX_METRIC_NAME + 1} characters, but must have 1-{MAX_METRIC_NAME}"
        in (resp.json()["detail"])
    )
    many = {f"m{i}": 0.5 for i in range(MAX_METRICS + 1)}
    resp = api.post(f"{path}/complete", json={"metrics": many}, headers=auth)
    assert resp.status_code == 422
    assert (
        f"has {MAX_METRICS + 1} metrics, but one report holds at most {MAX_METRICS}"
        in (resp.json()["detail"])
    )
    assert api.get(path).json()["reports"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/studies",
        "/api/v1/studies/s1/trials",
        "/api/v1/studies/s1/figures/curves",
    ],
)
def test_every_limit_parameter_has_a_ceiling(api, path):
    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    assert api.get(path, params={"limit": 1000}).status_code == 200
    resp = api.get(path, params={"limit": 1001})
    assert resp.status_code == 422
    assert (
        resp.json()["detail"]
        == "query.limit: Input should be less than or equal to 1000 (got '1001')"
    )


def test_a_long_failure_reason_is_stored_cut_not_refused(api, db_url):
    assert api.post("/api/v1/studies", json=make_spec()).status_code == 201
    trial = api.post("/api/v1/studies/s1/trials").json()
    auth = {"Authorization": f"Bearer {trial['token']}"}
    path = f"/api/v1/studies/s1/trials/{trial['number']}"
    frames = "".join(
        f'  File "train.py", line {i}, in step\n    loss = model(x)\n' for i in range(5000)
    )
    reason = "RuntimeError: CUDA out of memory\nTraceback (most recent call last):\n" + frames
    reason += "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert len(reason) > 10 * MAX_REASON_CHARS
    failed = api.post(f"{path}/fail", json={"reason": reason}, headers=auth)
    assert failed.status_code == 200, failed.text
    assert failed.json()["state"] == "failed"
    stored = api.get(path).json()["runs"][0]["error"]
    assert len(stored) == MAX_REASON_CHARS
    assert stored.startswith("RuntimeError: CUDA out of memory\nTraceback")
    assert stored.endswith("Tried to allocate 2.00 GiB")
    assert f"characters cut: a reason keeps at most {MAX_REASON_CHARS:,}" in stored
    # the worker's retry of the same call is the same call, not a conflict
    again = api.post(f"{path}/fail", json={"reason": reason}, headers=auth)
    assert again.status_code == 200 and again.json()["runs"][0]["error"] == stored
