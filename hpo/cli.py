"""The core of the ``hpo`` command line: migrate the database, manage studies.

``hpo db upgrade`` opens the database; the ``hpo study`` commands talk to a running controller
through :class:`hpo.client.Client`. The storage layer is imported inside the command that needs
it, so ``import hpo`` and the client stay light.

``hpo serve`` and ``hpo demo`` wire the API and the Ray workers together, which the core never
imports (DESIGN.md); :mod:`controller.cli` adds them through :func:`build_parser`'s
``add_commands`` and is the installed ``hpo`` command. Run alone (``python -m hpo``), this
module offers ``db`` and ``study`` only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import HPOError
from .client import Client, HPOClientError
from .vocabulary import Role, StudyStatus, TrialState, values

if TYPE_CHECKING:
    from .schemas import StudyPublic
    from .settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
STATES = values(TrialState)
STATUSES = values(StudyStatus)
ROLES = values(Role)


class CLIError(Exception):
    """A user mistake the CLI reports as ``error: <message>`` and exit code 1."""


def safe_url(url: str) -> str:
    """``url`` with its password hidden, fit to print."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def database_error(url: str, exc: Exception) -> CLIError:
    """A one-line error for a database that cannot be opened; never echoes a password."""
    try:
        shown = safe_url(url)
    except Exception:  # the URL itself is what is wrong; never echo a password
        shown = "(unparsable URL)"
    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if isinstance(exc, ImportError):
        reason = (
            f"its driver is not installed ({reason}); name an installed one in the URL, "
            "e.g. postgresql+psycopg2://..."
        )
    return CLIError(f"cannot open database {shown}: {reason}")


def settings_from(**overrides: Any) -> Settings:
    """``HPO_*`` env vars, overridden by the flags that were given."""
    from pydantic import ValidationError

    from .settings import Settings
    from .spec import format_validation_error

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise CLIError(f"invalid settings: {format_validation_error(exc)}") from None


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    url = settings_from(database_url=args.database_url).database_url
    with _database(url) as db:
        revision = db.current_revision()
    print(f"database {safe_url(url)} is at revision {revision}")
    return 0


@contextmanager
def _database(database_url: str | None) -> Iterator[Any]:
    """The database of ``--database-url`` (else ``HPO_DATABASE_URL``), migrated; a database
    that cannot be reached or read is a one-line error."""
    from sqlalchemy.exc import SQLAlchemyError

    from .storage import Database

    url = settings_from(database_url=database_url).database_url
    try:
        db = Database(url)
    except (SQLAlchemyError, ImportError) as exc:
        raise database_error(url, exc) from None
    try:
        yield db
    except SQLAlchemyError as exc:
        raise database_error(url, exc) from None
    finally:
        db.dispose()


def cmd_keys_create(args: argparse.Namespace) -> int:
    from . import service

    with _database(args.database_url) as db:
        record, key = service.create_key(
            db, name=args.name, role=args.role, studies=args.study or None
        )
    scope = f" for studies {', '.join(record.studies)}" if record.studies else ""
    print(f"created API key {record.name!r} with role {record.role}{scope}:")
    print()
    print(f"    {key}")
    print()
    print("It is shown this once; only its hash is stored. Use it as")
    print(f"    export HPO_API_KEY={key}")
    if record.role == "worker":
        print("(the hpo client and workers read it), or send it as the X-API-Key header.")
    else:
        print("(the hpo client and CLI read it), send it as the X-API-Key header, or sign in to")
        print("the dashboard with it.")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from . import service

    with _database(args.database_url) as db:
        keys = service.list_keys(db, revoked=args.all)
    if not keys:
        print("no API keys: the controller runs with access control off on loopback only;")
        print("create one with: hpo keys create --name NAME --role admin")
        return 0
    rows = [("NAME", "ROLE", "KEY", "CREATED", "STATE", "STUDIES")]
    for k in keys:
        state = "revoked" if k.revoked_at else ("built-in" if k.builtin else "live")
        rows.append(
            (
                k.name,
                str(k.role),
                f"{k.prefix}…",
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                state,
                ",".join(k.studies) if k.studies else "all",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from . import service

    with _database(args.database_url) as db:
        record = service.revoke_key(db, name=args.name)
    print(
        f"revoked API key {record.name!r}; controllers refuse it within a few seconds and its "
        "dashboard sessions are ended"
    )
    return 0


def _algorithm(study: StudyPublic) -> str:
    if study.algorithm_choice is not None:
        return f"auto: {study.algorithm_choice.summary}"
    algo = study.spec.algorithm
    text = f"{algo.name} {algo.model}" if algo.name == "bayesian" else algo.name
    extras = [f"seed {algo.seed}"] if algo.seed is not None else []
    if algo.early_stopping is not None:  # only when it differs from the algorithm's default
        extras.append(f"early stopping {algo.early_stopping}")
    return f"{text} ({', '.join(extras)})" if extras else text


def _size(study: StudyPublic) -> str:
    return "unlimited" if study.size is None else str(study.size)


def _best(study: StudyPublic) -> str:
    return "-" if study.best is None else f"{study.best.value:.6g}"


def _send_spec(
    args: argparse.Namespace, send: Callable[[Client, Path], StudyPublic]
) -> StudyPublic:
    """Send the spec in file ``args.file`` with ``send``; a local problem with the file is
    a CLIError naming it."""
    path = Path(args.file)
    try:
        with Client(args.url) as client:
            return send(client, path)
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not a UTF-8 text file; give a YAML study spec") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    except HPOError as exc:  # a local spec problem, found before anything was sent
        message = exc.message if exc.message.startswith(str(path)) else f"{path}: {exc.message}"
        raise CLIError(message) from None


def cmd_study_create(args: argparse.Namespace) -> int:
    study = _send_spec(args, lambda client, path: client.create_study(path))
    print(
        f"created study {study.name} (id {study.id}): algorithm {_algorithm(study)}, "
        f"size {_size(study)} trials"
    )
    return 0


def cmd_study_fork(args: argparse.Namespace) -> int:
    study = _send_spec(args, lambda client, path: client.fork_study(args.study, path))
    print(
        f"forked study {study.name} (id {study.id}) from {study.parent}: "
        f"{study.inherited} trials inherited, algorithm {_algorithm(study)}, "
        f"size {_size(study)} new trials"
    )
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def cmd_study_list(args: argparse.Namespace) -> int:
    with Client(args.url) as client:
        studies = client.list_studies(status=args.status)
    if not studies:
        print("no studies yet" if args.status is None else f"no {args.status} studies")
        return 0
    header = ["ID", "NAME", "STATUS", "ALGORITHM", "TRIALS", "BEST"]
    rows = [
        [str(s.id), s.name, s.status, s.spec.algorithm.name, f"{s.n_trials}/{_size(s)}", _best(s)]
        for s in studies
    ]
    print(_table(header, rows))
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    with Client(args.url) as client:
        study = client.get_study(args.study)
    if args.json:
        print(study.model_dump_json(indent=2))
        return 0
    spec = study.spec
    budget = [
        f"{_size(study)} trials",
        f"{spec.budget.max_epochs} epochs each",
        f"parallelism {spec.budget.parallelism}",
    ]
    if spec.budget.max_wall_seconds is not None:
        budget.append(f"{spec.budget.max_wall_seconds:g} s wall clock")
    if spec.budget.max_total_epochs is not None:
        budget.append(f"{spec.budget.max_total_epochs:,} epochs in all")
    if spec.budget.max_gpu_hours is not None:
        device = "GPU" if spec.resources.gpus_per_trial > 0 else "CPU"
        budget.append(f"{spec.budget.max_gpu_hours:g} {device}-hours")
    counts = [f"{study.trial_counts[s]} {s}" for s in STATES if study.trial_counts.get(s)]
    best = "no completed trial yet"
    if study.best is not None:
        best = (
            f"trial {study.best.number}: {spec.objective.metric} = {study.best.value:.6g} "
            f"with {json.dumps(study.best.params)}"
        )
    lines = [
        ("study", f"{study.name} (id {study.id})"),
        ("status", study.status),
        ("objective", f"{spec.objective.direction} {spec.objective.metric}"),
        ("algorithm", _algorithm(study)),
        *([("why", study.algorithm_choice.reason)] if study.algorithm_choice else []),
        ("budget", ", ".join(budget)),
        ("used", ", ".join(study.budget_parts(now=datetime.now(timezone.utc))) or "-"),
        ("trials", f"{study.n_trials} handed out" + (f": {', '.join(counts)}" if counts else "")),
        ("best", best),
    ]
    if spec.constraints:  # the size above counts only the configurations that satisfy them
        lines.insert(5, ("where", "; ".join(spec.constraints)))
    if study.parent or study.children:
        lines.append(("lineage", _lineage(study)))
    print("\n".join(f"{key + ':':<11}{value}" for key, value in lines))
    return 0


def _lineage(study: StudyPublic) -> str:
    parts = []
    if study.parent:
        parts.append(f"forked from {study.parent} ({study.inherited} trials inherited)")
    if study.children:
        parts.append(f"forks: {', '.join(study.children)}")
    return "; ".join(parts)


def cmd_study_best(args: argparse.Namespace) -> int:
    with Client(args.url) as client:
        best = client.best(args.study)
    if args.json:
        print(json.dumps(best.params, indent=2))
        return 0
    print(f"best trial: {best.number}\nvalue:      {best.value:.6g}\nparams:")
    for name, value in best.params.items():
        print(f"  {name}: {json.dumps(value)}")
    return 0


def cmd_study_cancel(args: argparse.Namespace) -> int:
    with Client(args.url) as client:
        study = client.cancel_study(args.study)
    print(f"study {study.name} is {study.status}")
    return 0


def _confirm(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_study_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not (sys.stdin is not None and sys.stdin.isatty()):
            raise CLIError(
                f"refusing to delete study {args.study!r} without confirmation; "
                "pass --yes to delete it non-interactively"
            )
        if not _confirm(f"delete study {args.study!r} and everything it recorded?"):
            print("not deleted")
            return 1
    with Client(args.url) as client:
        client.delete_study(args.study)
    print(f"deleted study {args.study}")
    return 0


def _group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(func=None, parser=parser)
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
    parents: list[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that runs ``func(args)`` and returns its exit code."""
    parser = sub.add_parser(name, help=help, description=help, parents=parents or [])
    parser.set_defaults(func=func)
    return parser


#: Adds commands to the top level; gets the subparsers and the shared ``--database-url`` flag
#: (a parent parser). :mod:`controller.cli` adds ``serve`` and ``demo`` through it.
AddCommands = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]

CORE_ONLY = (
    "serve and demo run the controller, which this core command line does not include: "
    "use the installed `hpo` command or `python -m controller`."
)


def build_parser(add_commands: AddCommands | None = None) -> argparse.ArgumentParser:
    """The ``hpo`` parser: ``add_commands``' commands first, then ``db`` and ``study``."""
    parser = argparse.ArgumentParser(
        prog="hpo",
        description="Hyperparameter optimization service: controller and studies.",
        epilog=None if add_commands else CORE_ONLY,
    )
    parser.set_defaults(func=None, parser=parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    db_url = argparse.ArgumentParser(add_help=False)
    db_url.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy database URL (default: env HPO_DATABASE_URL, else sqlite:///hpo.db)",
    )
    if add_commands is not None:
        add_commands(sub, db_url)
    keys = _group(
        sub,
        "keys",
        "create, list and revoke API keys (works on the database: run it where the controller's "
        "HPO_DATABASE_URL reaches)",
    )
    create_key = add_command(
        keys, "create", cmd_keys_create, "create an API key and print it, once", [db_url]
    )
    create_key.add_argument("--name", required=True, help="a unique name, e.g. alice or ci")
    create_key.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="admin: everything; member: create studies, cancel/delete its own, read all; "
        "viewer: read only; worker: the trial protocol only",
    )
    create_key.add_argument(
        "--study",
        action="append",
        metavar="PATTERN",
        help="worker keys: a study name or pattern ('bert-*') it may run; repeat for more "
        "(default: every study)",
    )
    listing_keys = add_command(keys, "list", cmd_keys_list, "list the live API keys", [db_url])
    listing_keys.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = add_command(keys, "revoke", cmd_keys_revoke, "revoke an API key", [db_url])
    revoke.add_argument("name", metavar="NAME", help="the key's name")
    db = _group(sub, "db", "manage the database schema")
    add_command(db, "upgrade", cmd_db_upgrade, "migrate to the current schema", [db_url])

    url = argparse.ArgumentParser(add_help=False)
    url.add_argument(
        "--url",
        default=os.environ.get("HPO_URL", DEFAULT_URL),
        help="the hpo controller (default: env HPO_URL, else %(default)s)",
    )
    ref = argparse.ArgumentParser(add_help=False, parents=[url])
    ref.add_argument("study", metavar="NAME", help="the study's name (or numeric id)")
    study = _group(sub, "study", "create, inspect, cancel and delete studies on a controller")
    create = add_command(
        study, "create", cmd_study_create, "create a study from a YAML spec", [url]
    )
    create.add_argument("file", metavar="FILE", help="YAML file holding the study spec")
    fork = add_command(
        study,
        "fork",
        cmd_study_fork,
        "create a study from a YAML spec that starts with the finished trials of study NAME "
        "that fit its space",
        [ref],
    )
    fork.add_argument("file", metavar="FILE", help="YAML file holding the new study's spec")
    listing = add_command(study, "list", cmd_study_list, "list studies, newest first", [url])
    listing.add_argument("--status", choices=STATUSES, help="only studies with this status")
    show = add_command(
        study, "show", cmd_study_show, "show a study's status, trials and best", [ref]
    )
    show.add_argument("--json", action="store_true", help="print the study as JSON")
    best = add_command(study, "best", cmd_study_best, "the best trial and its parameters", [ref])
    best.add_argument("--json", action="store_true", help="print only the parameters, as JSON")
    add_command(study, "cancel", cmd_study_cancel, "stop handing out trials of a study", [ref])
    delete = add_command(study, "delete", cmd_study_delete, "delete a study and its trials", [ref])
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return parser


def main(argv: list[str] | None = None, *, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the command line (by default the core one: ``db`` and ``study``); returns the exit
    code. Errors a user can fix are printed as one ``error: ...`` line, exit code 1."""
    args = (parser or build_parser()).parse_args(argv)
    if args.func is None:
        args.parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (CLIError, HPOClientError, HPOError) as exc:
        message = exc.message if isinstance(exc, (HPOClientError, HPOError)) else str(exc)
        print(f"error: {message}", file=sys.stderr)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
