"""``python -m hpo``: the core command line only, ``hpo db`` and ``hpo study``.

``serve`` and ``demo`` run the controller, which wires the API and the Ray workers together;
the core package never imports those (DESIGN.md), so they live in :mod:`controller`: the
installed ``hpo`` command, or ``python -m controller``.
"""

import sys

from .cli import main

if __name__ == "__main__":
    if sys.argv[1:2] in (["serve"], ["demo"]):
        print(
            f"error: `{sys.argv[1]}` is not part of the core command line (python -m hpo); "
            f"run `hpo {sys.argv[1]}` or `python -m controller {sys.argv[1]}`",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(main())
