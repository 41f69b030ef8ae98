"""Secrets out of failure reasons, before they leave the process that wrote them.

A failure reason is stored and shown to everyone who may read the study (API, dashboard, CLI).
A workload's exception message or traceback can carry anything its process holds: the value of
``HPO_DATABASE_URL``, a cloud token, a password in a URL. :func:`scrub` is applied by the worker
(:mod:`workers.runner`) and by the dispatcher (a lost worker's Ray error) to every reason they
send; it keeps file names, line numbers and function names, so a traceback still points at the
bug.

What it replaces:

* every value of the environment of at least :data:`MIN_LENGTH` characters, by
  ``[redacted:NAME]``; values that are only absolute paths which exist here (``PATH``,
  ``HOME``, ``VIRTUAL_ENV``) are left, so that file names in a traceback stay readable;
* the password of a URL (``scheme://user:password@host``), by ``[redacted:password]``.

It cannot recognise a secret that was transformed (encoded, split, cut short).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = ["MIN_LENGTH", "scrub"]

#: shorter values (``1``, ``C.UTF-8``, ``/root``) would blank out ordinary words and numbers
MIN_LENGTH = 8
_URL_PASSWORD = re.compile(
    r"(?P<start>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]*):(?P<password>[^\s/'\"]*)@"
)


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` without the values of ``environ`` (default: this process's) or URL passwords."""
    secrets = _secrets(os.environ if environ is None else environ)
    if secrets:
        pattern = re.compile("|".join(re.escape(v) for v in sorted(secrets, key=len, reverse=True)))
        text = pattern.sub(lambda m: f"[redacted:{secrets[m.group()]}]", text)
    return _URL_PASSWORD.sub(r"\g<start>:[redacted:password]@", text)


def _secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """value -> the (first, by name) variable that holds it."""
    found: dict[str, str] = {}
    for name in sorted(environ):
        value = environ[name]
        if len(value) >= MIN_LENGTH and value not in found and not _only_paths(value):
            found[value] = name
    return found


def _only_paths(value: str) -> bool:
    """Whether ``value`` is one or more absolute paths that exist (``PATH``, ``PWD``)."""
    parts = [p for p in value.split(os.pathsep) if p]
    return bool(parts) and all(os.path.isabs(p) and os.path.exists(p) for p in parts)
