"""deploy/kubernetes/, checked without a cluster: every manifest against the Kubernetes schemas
(``kubernetes-validate``) and the RayCluster against KubeRay's own CRD schema (vendored in
``deploy/kubernetes/schemas``), and the commands, ports, images and environment against what
``hpo serve``, its settings and the Dockerfile really take."""

from __future__ import annotations

import gzip
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller.cli import build_parser
from hpo.settings import Settings
from tests.test_compose import COMPOSE, _env, _hpo_command

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return found


DOCS = _documents()


def _one(kind: str) -> dict[str, Any]:
    matching = [doc for _, doc in DOCS if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind} in deploy/kubernetes, found {len(matching)}"
    return matching[0]


def _crd_schema() -> dict[str, Any]:
    with gzip.open(DEPLOY / "schemas" / "ray.io_rayclusters.v1.json.gz") as raw:
        return dict(json.load(raw)["schema"])


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted({name for name, _ in DOCS})
    assert {doc["metadata"].get("namespace", kustomization["namespace"]) for _, doc in DOCS} == {
        kustomization["namespace"]
    }


@pytest.mark.parametrize(
    "doc", [doc for _, doc in DOCS if doc["kind"] != "RayCluster"], ids=lambda d: d["kind"]
)
def test_every_kubernetes_object_validates_against_the_kubernetes_schema(doc) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {exc.path}")


def _unknown_fields(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Fields the CRD's schema does not know (Kubernetes would drop them without a word)."""
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}.{key}")
            else:
                found += _unknown_fields(item, schema["properties"][key], f"{where}.{key}")
        return found
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return [
            problem
            for key, item in value.items()
            for problem in _unknown_fields(item, schema["additionalProperties"], f"{where}.{key}")
        ]
    if isinstance(value, list) and "items" in schema:
        return [
            problem
            for i, item in enumerate(value)
            for problem in _unknown_fields(item, schema["items"], f"{where}[{i}]")
        ]
    return []


def test_the_raycluster_validates_against_kuberays_crd_schema() -> None:
    cluster = _one("RayCluster")
    schema = _crd_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cluster), key=str)
    assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    assert _unknown_fields(cluster, schema, "RayCluster") == []


def test_the_crd_check_catches_a_misspelt_field() -> None:
    cluster = _one("RayCluster")
    broken = {**cluster, "spec": {**cluster["spec"], "workerGroupSpec": []}}
    assert _unknown_fields(broken, _crd_schema(), "RayCluster") == [
        "RayCluster.spec.workerGroupSpec"
    ]
    wrong_type = {**cluster, "spec": {**cluster["spec"], "enableInTreeAutoscaling": "yes"}}
    assert list(jsonschema.Draft7Validator(_crd_schema()).iter_errors(wrong_type))


def _container(pod_template: dict[str, Any]) -> dict[str, Any]:
    containers = pod_template["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_head_runs_no_trials_and_the_workers_hold_gpus_within_bounds() -> None:
    spec = _one("RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in str(_container(head["template"])["resources"])
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    resources = _container(gpu["template"])["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"


def _script(container: dict[str, Any]) -> list[list[str]]:
    assert container["command"] == ["/bin/sh", "-c"]
    steps = [shlex.split(step) for step in " ".join(container["args"]).split("&&")]
    return [step[1:] if step[:1] == ["exec"] else step for step in steps]


def _flag(words: list[str], name: str) -> str | None:
    for i, word in enumerate(words):
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
        if word == name and i + 1 < len(words):
            return words[i + 1]
    return None


def test_the_controller_runs_a_real_hpo_serve_that_joins_the_ray_head() -> None:
    controller = _container(_one("Deployment")["spec"]["template"])
    ray_start, serve = _script(controller)
    args = build_parser().parse_args(serve[1:])  # the real parser: a wrong flag fails here
    assert serve[:2] == ["hpo", "serve"] and args.host == "0.0.0.0"
    assert args.ray_address == "auto", "the driver uses the Ray node started in its own pod"
    cluster = _one("RayCluster")
    head = _container(cluster["spec"]["headGroupSpec"]["template"])
    gcs = next(p["containerPort"] for p in head["ports"] if p["name"] == "gcs")
    assert ray_start[:2] == ["ray", "start"]
    assert _flag(ray_start, "--address") == f"{cluster['metadata']['name']}-head-svc:{gcs}"
    assert _flag(ray_start, "--num-cpus") == "0" and _flag(ray_start, "--num-gpus") == "0"


def test_ports_probes_and_service_agree_with_hpo_serve() -> None:
    controller = _container(_one("Deployment")["spec"]["template"])
    args = build_parser().parse_args(_script(controller)[1][1:])
    (port,) = controller["ports"]
    assert port["containerPort"] == args.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert controller[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    service = _one("Service")
    (published,) = service["spec"]["ports"]
    assert published["targetPort"] == port["name"]
    assert service["spec"]["selector"] == _one("Deployment")["spec"]["selector"]["matchLabels"]
    public = next(e["value"] for e in controller["env"] if e["name"] == "HPO_PUBLIC_URL")
    namespace = service["metadata"]["namespace"]
    assert public == f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:" + str(
        published["port"]
    )


def _settings_env() -> set[str]:
    return {f"HPO_{name.upper()}" for name in Settings.model_fields}


def test_every_hpo_variable_is_one_the_settings_read() -> None:
    controller = _container(_one("Deployment")["spec"]["template"])
    names = {e["name"] for e in controller["env"]}
    assert {"HPO_DATABASE_URL", "HPO_ADMIN_KEY", "HPO_PUBLIC_URL"} <= names
    assert {n for n in names if n.startswith("HPO_")} <= _settings_env()
    secrets = {
        e["valueFrom"]["secretKeyRef"]["name"] for e in controller["env"] if "valueFrom" in e
    }
    assert secrets == {"hpo"}, "the README tells the operator to create the Secret `hpo`"
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["controller"]
    variables = {"POSTGRES_PASSWORD": "x", "HPO_ADMIN_KEY": "y" * 32}
    assert {n for n in _env(compose, variables) if n.startswith("HPO_")} <= _settings_env()
    build_parser().parse_args(_hpo_command(compose))


def test_one_image_everywhere_and_it_is_the_dockerfiles() -> None:
    cluster = _one("RayCluster")["spec"]
    images = {
        _container(cluster["headGroupSpec"]["template"])["image"],
        *(_container(g["template"])["image"] for g in cluster["workerGroupSpecs"]),
        _container(_one("Deployment")["spec"]["template"])["image"],
    }
    assert len(images) == 1, f"the controller and every Ray pod must run one image: {images}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hpo"]' in dockerfile and "EXPOSE 8000" in dockerfile
    assert '".[workers' in dockerfile, "Ray and the workloads are in the image"


def test_the_kubernetes_check_catches_a_misspelt_field() -> None:
    deployment = _one("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
