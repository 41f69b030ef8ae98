"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

`docker compose up` must bring up a controller that reaches its PostgreSQL and runs a real
`hpo` command; these tests read both files and check them against the CLI and pyproject.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PYPROJECT = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{COMPOSE.name} is not a YAML mapping"
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, (
        f"{COMPOSE.name} has no service {name!r} (it has {', '.join(services) or 'none'})"
    )
    service = services[name]
    assert isinstance(service, dict), f"service {name!r} in {COMPOSE.name} is not a mapping"
    return service


#: what an operator sets before `docker compose up` (the file's header says so)
OPERATOR = {"POSTGRES_PASSWORD": "0f3a9c" * 8, "HPO_ADMIN_KEY": "5e" * 32}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class Refused(Exception):
    """Compose would refuse to start: a required variable is unset."""


def interpolate(value: str, variables: dict[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` as Compose substitutes them."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        found = variables.get(name)
        if op in (":-", "-"):
            return found if found else (arg or "")
        if op in (":?", "?") and not found:
            raise Refused(f"{name}: {arg}")
        return found or ""

    return _VARIABLE.sub(one, value)


def _env(service: dict[str, Any], variables: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of KEY=VALUE, with
    the variables an operator sets substituted."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    given = OPERATOR if variables is None else variables
    return {str(k): interpolate(str(v), given) for k, v in env.items()}


def _words(value: str | list[Any]) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else value.split()


def _shell_steps(service: dict[str, Any]) -> list[list[str]]:
    """The commands a service runs: its `command` words, or, when its entrypoint is
    `/bin/sh -c`, each `&&`-separated step of the script (a leading `exec` dropped)."""
    command = service.get("command") or []
    entrypoint = _words(service.get("entrypoint") or [])
    if entrypoint[-2:] != ["/bin/sh", "-c"] and entrypoint[-1:] != ["-c"]:
        return [["hpo", *_words(command)]]
    script = " ".join(_words(command))
    steps = [shlex.split(step) for step in script.split("&&")]
    return [step[1:] if step and step[0] == "exec" else step for step in steps]


def _hpo_command(service: dict[str, Any]) -> list[str]:
    """The arguments the service passes to the `hpo` script."""
    for step in _shell_steps(service):
        if step and step[0] == "hpo":
            return step[1:]
    raise AssertionError(f"the service runs no `hpo` command: {service.get('command')!r}")


def _ray_start(service: dict[str, Any]) -> list[str]:
    for step in _shell_steps(service):
        if step[:2] == ["ray", "start"]:
            return step[2:]
    raise AssertionError(f"the service runs no `ray start`: {service.get('command')!r}")


def _flag(words: list[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _dockerfile_path(controller: dict[str, Any]) -> Path:
    build = controller.get("build")
    assert build is not None, "service 'controller' has no 'build'; it must build the Dockerfile"
    context, dockerfile = (
        (build, "Dockerfile")
        if isinstance(build, str)
        else (build.get("context", "."), build.get("dockerfile", "Dockerfile"))
    )
    return (ROOT / context / dockerfile).resolve()


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def _exec_form(args: str) -> list[str]:
    """The words of ENTRYPOINT/CMD, in exec form (JSON list) or shell form."""
    if args.startswith("["):
        return [str(w) for w in json.loads(args)]
    return args.split()


def _last(instructions: list[tuple[str, str]], keyword: str) -> str | None:
    found = [args for kw, args in instructions if kw == keyword]
    return found[-1] if found else None


@pytest.fixture(scope="module")
def dockerfile(compose: dict[str, Any]) -> list[tuple[str, str]]:
    path = _dockerfile_path(_service(compose, "controller"))
    assert path.is_file(), (
        f"the controller's build context has no Dockerfile: {path} does not exist"
    )
    return _instructions(path)


def test_postgres_is_healthchecked_and_keeps_its_data_in_a_named_volume(
    compose: dict[str, Any],
) -> None:
    postgres = _service(compose, "postgres")
    test = (postgres.get("healthcheck") or {}).get("test")
    assert test, "service 'postgres' has no healthcheck, so the controller cannot wait for it"
    assert "pg_isready" in " ".join(_words(test)), (
        f"the postgres healthcheck should run pg_isready, but it runs {test!r}"
    )
    declared = compose.get("volumes") or {}
    mounts = [str(v).split(":", 1) for v in postgres.get("volumes") or []]
    named = [source for source, *_ in mounts if not source.startswith((".", "/", "~"))]
    assert named, "service 'postgres' mounts no named volume; its data would die with it"
    for source in named:
        assert source in declared, (
            f"postgres mounts the volume {source!r}, but the top-level 'volumes' of "
            f"{COMPOSE.name} does not declare it (it declares {', '.join(declared) or 'none'})"
        )
    data_dirs = [target for _, target, *_ in (m + [""] for m in mounts)]
    assert any(t.startswith("/var/lib/postgresql/data") for t in data_dirs), (
        f"no volume is mounted at /var/lib/postgresql/data (mounts: {postgres.get('volumes')})"
    )


def test_controller_waits_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    depends = _service(compose, "controller").get("depends_on")
    assert isinstance(depends, dict) and "postgres" in depends, (
        f"controller must depend on postgres in the long form "
        f"(postgres: {{condition: service_healthy}}), but depends_on is {depends!r}"
    )
    condition = (depends["postgres"] or {}).get("condition")
    assert condition == "service_healthy", (
        f"controller starts when postgres is {condition!r}; it must wait for "
        "condition: service_healthy, or migrations run against a database not yet accepting "
        "connections"
    )


def test_the_image_runs_a_real_hpo_command_with_real_flags(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    entrypoint = _last(dockerfile, "ENTRYPOINT")
    assert entrypoint is not None, 'the Dockerfile has no ENTRYPOINT; it should be ["hpo"]'
    assert _exec_form(entrypoint) == ["hpo"], (
        f"the Dockerfile's ENTRYPOINT is {entrypoint}, but the compose command is written "
        'as arguments of the `hpo` script, so it must be ["hpo"]'
    )
    words = _hpo_command(_service(compose, "controller"))
    subcommand, flags = words[0], [w.split("=", 1)[0] for w in words[1:] if w.startswith("--")]
    result = subprocess.run(
        [sys.executable, "-m", "controller", subcommand, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"`hpo {subcommand} --help` exited {result.returncode}, so `{subcommand}` is not a "
        f"working hpo subcommand:\n{result.stderr}"
    )
    assert subcommand == "serve", f"the controller should run `hpo serve`, not `hpo {subcommand}`"
    unknown = [
        f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", result.stdout)
    ]
    assert not unknown, (
        f"the compose command passes {', '.join(unknown)}, which `hpo {subcommand} --help` "
        f"does not list:\n{result.stdout}"
    )


def test_the_image_serves_on_the_published_port(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    controller = _service(compose, "controller")
    port = _flag(_hpo_command(controller), "--port") or "8000"
    published = [str(p).rsplit(":", 1)[-1] for p in controller.get("ports") or []]
    assert port in published, (
        f"`hpo serve` listens on {port} in the container, but the controller publishes "
        f"container ports {published or 'none'}"
    )
    exposed = (_last(dockerfile, "EXPOSE") or "").split()
    assert port in exposed, f"the Dockerfile EXPOSEs {exposed or 'nothing'}, not {port}"
    check = " ".join(_words((controller.get("healthcheck") or {}).get("test") or []))
    assert f":{port}/healthz" in check, (
        f"the controller's healthcheck should fetch http://127.0.0.1:{port}/healthz, "
        f"but it runs {check!r}"
    )


def test_the_controller_database_url_matches_the_postgres_service(
    compose: dict[str, Any],
) -> None:
    pg_env = _env(_service(compose, "postgres"))
    raw = _env(_service(compose, "controller")).get("HPO_DATABASE_URL")
    assert raw, "service 'controller' sets no HPO_DATABASE_URL, so it would use SQLite"
    url = make_url(raw)
    expected = {
        "host": "postgres",
        "username": pg_env.get("POSTGRES_USER", "postgres"),
        "password": pg_env.get("POSTGRES_PASSWORD"),
        "database": pg_env.get("POSTGRES_DB", pg_env.get("POSTGRES_USER", "postgres")),
    }
    wrong = {k: getattr(url, k) for k, v in expected.items() if getattr(url, k) != v}
    assert not wrong, (
        f"HPO_DATABASE_URL {url.render_as_string(hide_password=True)} does not match the "
        f"postgres service: it has {wrong}, expected "
        f"{ {k: expected[k] for k in wrong} }"
    )
    assert url.get_backend_name() == "postgresql", (
        f"HPO_DATABASE_URL uses {url.drivername!r}; use postgresql+psycopg2"
    )
    assert url.port in (None, 5432), f"HPO_DATABASE_URL uses port {url.port}, postgres is on 5432"


def test_the_image_installs_the_project(dockerfile: list[tuple[str, str]]) -> None:
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    runs = " ".join(args for kw, args in dockerfile if kw == "RUN")
    assert re.search(r"pip install (\S+ )*\"?\.(\[[\w,]+\])?\"?(\s|$|&)", runs), (
        f"the Dockerfile never runs `pip install .`, so the `hpo` script is not in the image "
        f"(RUN lines: {runs!r})"
    )
    copied = " ".join(args for kw, args in dockerfile if kw in ("COPY", "ADD"))
    needed = ["pyproject.toml", pyproject["project"].get("readme", "pyproject.toml")]
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed += [
        d.name
        for d in sorted(ROOT.iterdir())
        if (d / "__init__.py").is_file() and f"{d.name}*" in patterns
    ]
    missing = [n for n in needed if not re.search(rf"(^|\s|/){re.escape(n)}(\s|/|$)", copied)]
    assert not missing, (
        f"the Dockerfile does not COPY {', '.join(missing)}, which `pip install .` needs "
        f"(COPY lines: {copied!r})"
    )


def test_the_image_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    user = _last(dockerfile, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), (
        f"the Dockerfile's last USER is {user!r}; the controller must not run as root"
    )


def test_the_project_installs_the_hpo_script() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    target = project.get("scripts", {}).get("hpo")
    assert target, f"pyproject's [project.scripts] has no 'hpo' (it has {project.get('scripts')})"
    module, _, attr = target.partition(":")
    assert callable(getattr(import_module(module), attr, None)), (
        f"the 'hpo' script points at {target}, which is not a callable"
    )
    try:
        installed = {
            e.name: e.value
            for e in distribution(project["name"]).entry_points
            if e.group == "console_scripts"
        }
    except PackageNotFoundError:
        pytest.fail(f"the package {project['name']!r} is not installed; run `make install`")
    assert installed.get("hpo") == target, (
        f"the installed package {project['name']!r} provides scripts {installed}, not "
        f"hpo = {target}; reinstall it with `pip install -e .`"
    )


def test_the_controller_is_the_ray_head_and_workers_reach_it(compose: dict[str, Any]) -> None:
    controller = _service(compose, "controller")
    head = _ray_start(controller)
    assert "--head" in head, f"the controller must start the Ray head, but runs ray start {head}"
    port = _flag(head, "--port") or "6379"
    assert _flag(_hpo_command(controller), "--ray-address") == "auto", (
        "`hpo serve` must join the Ray head it started (--ray-address auto)"
    )
    worker = _ray_start(_service(compose, "gpu-worker"))
    assert "--block" in worker, "a worker's `ray start` must --block or the container exits"
    assert _flag(worker, "--address") == f"controller:{port}", (
        f"the gpu-worker joins {_flag(worker, '--address')!r}, but the head listens on "
        f"controller:{port}"
    )
    public = _env(controller).get("HPO_PUBLIC_URL", "")
    hpo_port = _flag(_hpo_command(controller), "--port") or "8000"
    assert public == f"http://controller:{hpo_port}", (
        f"workers in other containers report to HPO_PUBLIC_URL={public!r}; it must be "
        f"http://controller:{hpo_port}"
    )


def test_the_gpu_worker_reserves_a_gpu_and_scales(compose: dict[str, Any]) -> None:
    worker = _service(compose, "gpu-worker")
    devices = worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    assert devices, "gpu-worker reserves no device under deploy.resources.reservations.devices"
    nvidia = [
        d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
    ]
    assert nvidia, f"gpu-worker reserves no NVIDIA GPU: {devices}"
    assert "container_name" not in worker, "a container_name stops --scale gpu-worker=N"
    assert not worker.get("ports"), "published host ports stop --scale gpu-worker=N"
    depends = worker.get("depends_on") or {}
    assert "controller" in depends, "gpu-worker must start after the controller (its Ray head)"
    controller = _service(compose, "controller")
    assert worker.get("image") == controller.get("image") and worker.get("image"), (
        "the controller and its workers must run the same image (same code, same workloads)"
    )


def test_the_image_has_what_the_workers_need(dockerfile: list[tuple[str, str]]) -> None:
    runs = " ".join(args for kw, args in dockerfile if kw == "RUN")
    assert re.search(r"pip install \S*\.\[[\w,]*workers", runs), (
        f"the image must install the workers extra (ray, torch, transformers): {runs!r}"
    )
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["workers"]
    for package in ("ray", "torch", "transformers"):
        assert any(e.startswith(package) for e in extras), f"the workers extra lacks {package}"


def test_there_are_no_default_passwords_or_keys(compose: dict[str, Any]) -> None:
    for service, variable in [("postgres", "POSTGRES_PASSWORD"), ("controller", "HPO_ADMIN_KEY")]:
        raw = str(_env(_service(compose, service), OPERATOR | {variable: "x"})[variable])
        assert raw == "x", f"{service} does not take {variable} from the operator's environment"
        with pytest.raises(Refused):
            _env(_service(compose, service), {k: v for k, v in OPERATOR.items() if k != variable})


def test_the_first_admin_key_reaches_the_controllers_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpo.settings import Settings

    for name, value in _env(_service(compose, "controller")).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.bootstrap_admin_key() == OPERATOR["HPO_ADMIN_KEY"]
    assert settings.database_url.startswith("postgresql")
    assert settings.data_dirs, "the controller allows no data root: no study could name a file"
    for service in ("controller", "gpu-worker"):
        mounts = [interpolate(str(v), OPERATOR) for v in _service(compose, service)["volumes"]]
        assert any(m.split(":")[1] == settings.data_dirs[0] for m in mounts), (
            f"{service} does not mount the data root {settings.data_dirs[0]}: {mounts}"
        )


def test_the_api_is_published_on_loopback_unless_the_operator_says_otherwise(
    compose: dict[str, Any],
) -> None:
    ports = [interpolate(str(p), OPERATOR) for p in _service(compose, "controller")["ports"]]
    assert ports == ["127.0.0.1:8000:8000"], ports
    wide = [
        interpolate(str(p), OPERATOR | {"HPO_BIND": "0.0.0.0"})
        for p in _service(compose, "controller")["ports"]
    ]
    assert wide == ["0.0.0.0:8000:8000"]
