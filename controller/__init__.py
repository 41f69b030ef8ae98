"""The wiring: the one package that knows the API, the workers and the core together.

``hpo serve`` and ``hpo demo`` live here (DESIGN.md: controller ──► api, workers, hpo), so
that the core package ``hpo`` never imports the web app or Ray.

- :mod:`controller.cli`: the ``hpo`` command (``python -m controller``): the core's ``db`` and
  ``study`` commands plus ``serve`` and ``demo``.
- :mod:`controller.server`: :class:`~controller.server.Controller`, the API server plus the
  Ray dispatcher in one process.
- :mod:`controller.demo`: ``hpo demo``.
- :mod:`controller.logs`: the log format of ``hpo serve`` and ``hpo demo``.

Nothing is re-exported here: ``hpo study list`` goes through this package too and should not
pay for importing FastAPI and Ray.
"""
