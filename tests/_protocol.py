"""The trial protocol over the API, by hand: what tests that drive trials themselves share."""

from __future__ import annotations

from typing import Any


def ask(api: Any, study: str = "s1") -> dict[str, Any]:
    """Ask ``study`` for a trial (201 expected); the answer gets its ``auth`` header too."""
    resp = api.post(f"/api/v1/studies/{study}/trials")
    assert resp.status_code == 201, resp.text
    trial: dict[str, Any] = resp.json()
    trial["auth"] = {"Authorization": f"Bearer {trial['token']}"}
    return trial


def post(api: Any, trial: dict[str, Any], action: str, body: Any, study: str = "s1") -> Any:
    """``report``, ``heartbeat``, ``complete`` or ``fail`` for ``trial`` (200 expected)."""
    resp = api.post(
        f"/api/v1/studies/{study}/trials/{trial['number']}/{action}",
        json=body,
        headers=trial["auth"],
    )
    assert resp.status_code == 200, resp.text
    return resp.json()
