"""An operator's own workload, registered through HPO_WORKLOADS in the tests."""

from __future__ import annotations

import os


def train(params, reporter):
    score = 0.0
    for step in range(1, 4):
        score = 1 - abs(params["x"] - 0.5) * step / 3
        if reporter.report(step, {"score": score}):
            return None
    return {"score": score}


#: the password of a database URL that :func:`leak_environment` puts in its error; no
#: environment holds it, so only the URL rule of the scrubber can catch it
URL_PASSWORD = "pw-4f0c2b9e7d1a"


def leak_environment(params, reporter, *, options):
    """Fails as careless code does: an environment value and a database URL in its message."""
    variable = options.get("variable", "HPO_TEST_SECRET")
    raise RuntimeError(
        f"cannot connect with token {os.environ[variable]} to "
        f"postgresql://hpo:{URL_PASSWORD}@db:5432/hpo"
    )
