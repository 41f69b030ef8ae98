"""The one error hierarchy of hpo.

Every error a user can cause is an :class:`HPOError`; the API maps each class to one HTTP
status in one place (``api/errors.py``), and the client raises :class:`hpo.client.HPOClientError`
carrying the server's message. The tree::

    HPOError
    ├── InvalidSpec          422  a study spec, report or request body that breaks a rule
    ├── StudyNotFound        404
    ├── TrialNotFound        404
    ├── NoCompletedTrial     404  /best before any trial completed
    ├── DuplicateStudy       409
    ├── BudgetExhausted      409  ask after max_trials or the whole grid was handed out
    ├── StudyNotRunning      409  ask on a cancelled or completed study
    ├── TrialFinished        409  report/complete/fail on a trial that already ended
    ├── OutOfOrderReport     409  a report for a step at or before the last one reported
    ├── StudyUnreadable      409  a study stored under older rules that its spec now breaks
    ├── NoFeasibleConfiguration 409  an ask whose redraws found no point satisfying the
    │                             study's constraints
    ├── KeyNotFound          404  revoking an API key that does not exist
    ├── DuplicateKey         409  an API key name already taken
    ├── KeyInUse             409  revoking, over the API, the key the request is made with
    ├── Unauthorized         401  no API key (where one is needed), a wrong or revoked one, or
    │                             a trial protocol call without its trial token
    └── Forbidden            403  a role that may not do this, a cross-site request, or a
                                  trial protocol call with the wrong trial token

Messages say what was wrong and how to fix it.
"""

from __future__ import annotations


class HPOError(Exception):
    """Base class of every error hpo raises on purpose."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(HPOError):
    """A study spec or request body breaks a rule; the message names the field and the rule."""

    status_code = 422


class StudyNotFound(HPOError):
    status_code = 404


class TrialNotFound(HPOError):
    status_code = 404


class NoCompletedTrial(HPOError):
    status_code = 404


class DuplicateStudy(HPOError):
    status_code = 409


class KeyNotFound(HPOError):
    status_code = 404


class DuplicateKey(HPOError):
    status_code = 409


class KeyInUse(HPOError):
    status_code = 409


class BudgetExhausted(HPOError):
    status_code = 409


class StudyNotRunning(HPOError):
    status_code = 409


class TrialFinished(HPOError):
    status_code = 409


class OutOfOrderReport(HPOError):
    status_code = 409


class StudyUnreadable(HPOError):
    """A study whose stored spec breaks a rule added since it was created."""

    status_code = 409


class NoFeasibleConfiguration(HPOError):
    """Every bounded redraw of an ask broke the study's constraints (none is handed out)."""

    status_code = 409


class Unauthorized(HPOError):
    status_code = 401


class Forbidden(HPOError):
    status_code = 403
