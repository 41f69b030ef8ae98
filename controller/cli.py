"""The ``hpo`` command: the core's ``db`` and ``study`` commands plus ``serve`` and ``demo``.

:mod:`hpo.cli` holds the commands that need only the core; the two that run the controller
(the API, the Ray dispatcher) are added here, the one package allowed to know them all.
"""

from __future__ import annotations

import argparse
import sys

from hpo.cli import CLIError, add_command, database_error, safe_url, settings_from
from hpo.cli import build_parser as core_parser
from hpo.cli import main as run_cli

from .logs import LEVELS, configure_logging

__all__ = ["build_parser", "main"]


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        ray_address=args.ray_address,
        dispatch=False if args.no_dispatch else None,
        insecure_no_auth=True if args.insecure_no_auth else None,
    )
    configure_logging(args.log_level)
    from sqlalchemy.exc import SQLAlchemyError

    from .server import AccessRefused, Controller

    try:
        controller = Controller(settings, log_level=args.log_level)
        print(controller.access(), flush=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise database_error(settings.database_url, exc) from None
    except AccessRefused as exc:
        controller.app.state.db.dispose()
        raise CLIError(str(exc)) from None
    if settings.dispatch:
        print("hpo: starting Ray ... ", end="", flush=True)
        print(controller.start_ray(), flush=True)
    print(
        f"hpo serving on {controller.url} (database: {safe_url(settings.database_url)}) "
        f"— API docs at {controller.url}/docs",
        flush=True,
    )
    controller.serve_forever()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_from(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        insecure_no_auth=True if args.insecure_no_auth else None,
    )
    from . import demo
    from .server import AccessRefused

    try:
        return demo.main(
            settings,
            max_trials=args.max_trials,
            max_epochs=args.max_epochs,
            keep_serving=not args.exit,
            log_level=args.log_level,
        )
    except AccessRefused as exc:
        raise CLIError(str(exc)) from None


def _log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        type=str.lower,
        metavar="LEVEL",
        help="what the controller logs to stderr: critical, error, warning, info (the default) "
        "or debug, which adds a line for every request of hpo's own dispatcher and workers",
    )


def _insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without access control even on an address others can reach (everyone is "
        "admin; env HPO_INSECURE_NO_AUTH). Without it, a controller bound to anything but "
        "loopback needs an API key (hpo keys create) before it starts",
    )


def add_controller_commands(
    sub: argparse._SubParsersAction, db_url: argparse.ArgumentParser
) -> None:
    """``serve`` and ``demo``, with the flags they have always had plus ``--log-level``."""
    serve = add_command(
        sub, "serve", cmd_serve, "run the controller (REST API and Ray dispatcher)", [db_url]
    )
    serve.add_argument("--host", help="address to bind (default: env HPO_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: env HPO_PORT, else 8000)")
    serve.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="join this Ray cluster (default: env HPO_RAY_ADDRESS, else start a local Ray)",
    )
    serve.add_argument(
        "--no-dispatch",
        action="store_true",
        help="serve the API only; run no trials on Ray (env HPO_DISPATCH=false)",
    )
    _insecure(serve)
    _log_level(serve)
    demo = add_command(
        sub,
        "demo",
        cmd_demo,
        "run the service on the embedded default and an ASHA study of a ViT on digits",
        [db_url],
    )
    demo.add_argument("--host", help="address to bind (default: env HPO_HOST, else 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port (default: env HPO_PORT, else 8000)")
    demo.add_argument("--max-trials", type=int, default=27, help="trials (default %(default)s)")
    demo.add_argument(
        "--max-epochs", type=int, default=9, help="epochs of a full trial (default %(default)s)"
    )
    demo.add_argument("--exit", action="store_true", help="stop serving once the study is done")
    _insecure(demo)
    _log_level(demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``hpo`` parser: ``serve``, ``demo``, ``db``, ``study``."""
    return core_parser(add_controller_commands)


def main(argv: list[str] | None = None) -> int:
    """The ``hpo`` console script; returns the exit code."""
    return run_cli(argv, parser=build_parser())


if __name__ == "__main__":
    sys.exit(main())
