"""`launcher render --format k8s`: manifests checked offline against the Kubernetes API schemas.

Deployment and Service: kubernetes-validate's strict schemas (unknown fields refused). LeaderWorkerSet:
the schema vendored in tests/fixtures/k8s (README there says what it was written from), whose pod
templates point into the same strict Kubernetes definitions.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import pytest
import yaml
from click.testing import CliRunner
from referencing import Registry, Resource

from launcher.cli import cli
from launcher.errors import ProfileError
from launcher.output.k8s import READINESS_SCRIPT, k8s_name, manifests, to_yaml
from launcher.output.validate import command as render  # the checked command, as every output gets it
from launcher.profile.load import list_profiles, resolve, shipped_profiles_dir

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "k8s"
LWS_SCHEMA = FIXTURES / "leaderworkerset-leaderworkerset-v1.json"
# The oldest and the newest Kubernetes kubernetes-validate 1.37 carries a schema for that we check.
K8S_VERSIONS = ("1.29", "1.37")
SHIPPED = sorted(list_profiles([shipped_profiles_dir()]))


def _schema_version(version: str) -> str:
    """The newest schema set kubernetes-validate has that is not newer than `version` (as it picks itself)."""
    return [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= version][-1]


@functools.lru_cache(maxsize=None)
def _lws_validator(version: str) -> jsonschema.protocols.Validator:
    """The vendored LWS schema, resolving pod templates into the strict core definitions of `version`."""
    schema_dir = f"kubernetes-json-schema/v{_schema_version(version)}-local-strict"
    defs = kv_utils.schema_contents(f"{schema_dir}/_definitions.json", version)
    schema = json.loads(LWS_SCHEMA.read_text())
    registry = Registry().with_resources([(defs["$id"], Resource.from_contents(defs)), (schema["$id"], Resource.from_contents(schema))])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc: dict[str, Any], version: str) -> None:
    """Raise jsonschema.ValidationError when `doc` does not match the API schema of `version`."""
    if doc["kind"] == "LeaderWorkerSet":
        _lws_validator(version).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def docs_for(name: str, *sets: str) -> list[dict[str, Any]]:
    resolved = resolve(name, sets=sets, environ={})
    return list(manifests(resolved.profile, resolved.name).docs)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


CASES = [(name, ()) for name in SHIPPED] + [
    ("dual-3090", ("deployment.replicas=3", "server.api_key_env=MY_KEY", "deployment.kubernetes.model_cache_pvc=hf-cache")),
    ("tp4-pp2-2node", ("deployment.replicas=2", "deployment.kubernetes.namespace=llm")),
    ("tp4", ("deployment.nodes=2", "deployment.gpus_per_node=2", "parallel.tensor_parallel_size=2",
             "parallel.pipeline_parallel_size=2", "speculative.enabled=false")),
]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "sets"), CASES, ids=[f"{n}{'+' if s else ''}{len(s) or ''}" for n, s in CASES])
def test_manifests_validate_against_the_api_schemas(name: str, sets: tuple[str, ...], version: str) -> None:
    docs = docs_for(name, *sets)
    assert [d["kind"] for d in docs][-1] == "Service"
    for doc in docs:
        validate(doc, version)


def test_the_validators_refuse_what_the_api_refuses() -> None:
    deployment, _ = docs_for("tp4")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate(typo, "1.37")
    lws, _ = docs_for("tp4-pp2-2node")
    for mutate in (
        lambda d: d["spec"]["leaderWorkerTemplate"].pop("workerTemplate"),
        lambda d: d["spec"]["leaderWorkerTemplate"].update(size=0),
        lambda d: d["spec"]["leaderWorkerTemplate"].update(restartPolicy="Always"),
        lambda d: d["spec"].update(replica=1),
        lambda d: d["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0].update(gpus=4),
        lambda d: d["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"].pop("containers"),
    ):
        bad = copy.deepcopy(lws)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "1.37")


def test_deployment_runs_the_rendered_command_with_gpus_shm_secret_and_readiness() -> None:
    profile = resolve("dual-3090", environ={}).profile
    kinds = by_kind(docs_for("dual-3090"))
    dep, svc = kinds["Deployment"], kinds["Service"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"] == list(render(profile).argv)
    assert c["image"] == "vllm/vllm-openai:v0.33.0"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    env = env_of(c)
    assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin assigns the GPUs
    assert env["VLLM_HOST_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["spec"]["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    probe = c["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["python3", "-c"] and "/v1/models" in probe[2] and repr(profile.model.name) in probe[2]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    assert dep["spec"]["replicas"] == 1


def test_api_key_and_cache_come_from_the_cluster() -> None:
    kinds = by_kind(docs_for("dual-3090", "deployment.replicas=3", "server.api_key_env=MY_KEY",
                             "deployment.kubernetes.model_cache_pvc=hf-cache"))
    dep = kinds["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert dep["spec"]["replicas"] == 3
    assert env_of(c)["VLLM_API_KEY"] == {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}
    assert "MY_KEY" not in json.dumps(c)
    assert {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"} in c["volumeMounts"]


def test_multi_node_becomes_a_leader_worker_set() -> None:
    profile = resolve("tp4-pp2-2node", environ={}).profile
    base = list(render(profile).argv)
    kinds = by_kind(docs_for("tp4-pp2-2node"))
    lws, svc = kinds["LeaderWorkerSet"], kinds["Service"]
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2 and lws["spec"]["replicas"] == 1
    (leader,) = tmpl["leaderTemplate"]["spec"]["containers"]
    (worker,) = tmpl["workerTemplate"]["spec"]["containers"]
    assert leader["command"][: len(base)] == base == worker["command"][: len(base)]
    assert leader["command"][len(base):] == ["--nnodes", "2", "--node-rank", "0", "--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port", "29501"]
    assert worker["command"][len(base):] == [
        "--headless", "--nnodes", "2", "--node-rank", "$(LWS_WORKER_INDEX)", "--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port", "29501",
    ]
    for c in (leader, worker):
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "4"}
        assert env_of(c)["VLLM_HOST_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert env_of(c)["NCCL_SOCKET_IFNAME"] == "eth0"
    assert "readinessProbe" in leader and "readinessProbe" not in worker and "ports" not in worker
    leader_labels = tmpl["leaderTemplate"]["metadata"]["labels"]
    worker_labels = tmpl["workerTemplate"]["metadata"]["labels"]
    assert all(leader_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert not all(worker_labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_ray_multi_node_is_not_rendered_for_kubernetes() -> None:
    with pytest.raises(ProfileError, match="deployment.backend: --format k8s renders vLLM's own multi-node mode"):
        docs_for("tp4-pp2-2node", "deployment.backend=ray")


@pytest.mark.parametrize(("name", "label"), [("tp4x2", "tp4x2"), ("My_Profile.v2", "my-profile-v2"), ("2node", "vllm-2node")])
def test_names_are_dns_labels(name: str, label: str) -> None:
    assert k8s_name(name) == label


# ------------------------------------------------------------- the readiness probe, run for real


class _Models(http.server.BaseHTTPRequestHandler):
    listed: list[str] = []
    key: str | None = None

    def do_GET(self) -> None:  # noqa: N802
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.listed]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def models_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _probe(server: http.server.HTTPServer, model: str, listed: list[str], key: str | None, env_key: str | None) -> int:
    _Models.listed, _Models.key = listed, key
    script = READINESS_SCRIPT.format(port=server.server_address[1], model=model)
    env = {"VLLM_API_KEY": env_key} if env_key else {}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_readiness_probe_passes_only_once_the_model_is_listed(models_server) -> None:
    model = "havenoammo/Qwen3.6-27B-INT8-MTP"
    assert _probe(models_server, model, [model], None, None) == 0
    assert _probe(models_server, model, [], None, None) != 0
    assert _probe(models_server, model, ["other"], None, None) != 0
    assert _probe(models_server, model, [model], "s3cret", "s3cret") == 0
    assert _probe(models_server, model, [model], "s3cret", None) != 0


# ------------------------------------------------------------------------------------ the CLI


def test_cli_writes_a_yaml_stream_and_notes() -> None:
    result = CliRunner().invoke(cli, ["render", "--profile", "tp4-pp2-2node", "--format", "k8s"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["kind"] for d in docs] == ["LeaderWorkerSet", "Service"]
    assert "needs the LeaderWorkerSet controller" in result.stderr
    assert to_yaml(manifests(resolve("tp4-pp2-2node", environ={}).profile, "tp4-pp2-2node")) == result.stdout


def test_cli_refuses_node_rank_with_k8s() -> None:
    result = CliRunner().invoke(cli, ["render", "--profile", "tp4-pp2-2node", "--format", "k8s", "--node-rank", "1"])
    assert result.exit_code == 2 and "--node-rank does not apply to --format k8s" in result.output
