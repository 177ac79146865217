"""Kubernetes manifests for a profile: Deployment + Service, or a LeaderWorkerSet for a multi-node engine. Pure.

The pod runs exactly the argv `launcher.output.validate.command` gives (exec form, no shell), plus what a cluster needs:
GPUs as `nvidia.com/gpu`, an in-memory /dev/shm, VLLM_HOST_IP from the pod IP, the Hugging Face token
(and the API key) from Secrets, and readiness only once /v1/models lists the served model. A multi-node
engine becomes one LeaderWorkerSet group per replica (leader = node 0; workers get `--headless` and their
rank from `$(LWS_WORKER_INDEX)`, the address of node 0 from `$(LWS_LEADER_ADDRESS)`, both set by the
LeaderWorkerSet controller in every pod, as in vLLM's own LWS example).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from launcher.defaults import DEFAULT_PORT as DEFAULT_API_PORT
from launcher.errors import ProfileError
from launcher.output.compile_cache import CONTAINER_ROOT, for_container
from launcher.output.deploy import MULTINODE_FLAGS, multinode_args
from launcher.output.render import SECRET_TARGET, Rendered, yaml_dump
from launcher.profile.schema import Profile
from launcher.profile.topology import deployment_of, topology

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
GPU_RESOURCE = "nvidia.com/gpu"
SHM_MOUNT = "/dev/shm"
HF_CACHE_MOUNT = "/root/.cache/huggingface"
# The device plugin picks a pod's GPUs; a host-side GPU selection would point at the wrong ones.
DROPPED_ENV = ("CUDA_VISIBLE_DEVICES",)
READINESS_SCRIPT = (
    "import json,os,sys,urllib.request as u;k=os.environ.get('VLLM_API_KEY');"
    "r=u.Request('http://127.0.0.1:{port}/v1/models',headers={{'Authorization':'Bearer '+k}} if k else {{}});"
    "ids=[m.get('id') for m in json.load(u.urlopen(r,timeout=5)).get('data',[])];"
    "sys.exit(0 if {model!r} in ids else 1)"
)
# Liveness: a one-token chat completion goes through the engine core (launcher/live/watchdog.py::probe does the same).
LIVENESS_SCRIPT = (
    "import json,os,urllib.request as u;k=os.environ.get('VLLM_API_KEY');"
    "h={{'Content-Type':'application/json',**({{'Authorization':'Bearer '+k}} if k else {{}})}};"
    "b=json.dumps({{'model':{model!r},'messages':[{{'role':'user','content':'ping'}}],'max_tokens':1}}).encode();"
    "u.urlopen(u.Request('http://127.0.0.1:{port}/v1/chat/completions',data=b,headers=h),timeout=18).read()"
)


@dataclass(frozen=True)
class Manifests:
    """The objects to apply, in order, and what the operator should know."""

    docs: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = field(default=())


def k8s_name(name: str) -> str:
    """A DNS-1123 label from a profile name (lower case, `-`, at most 40 characters so pod names still fit)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = "vllm-" + label
    return label[:40].rstrip("-") or "vllm"


# What the API server accepts (k8s.io/apimachinery/pkg/util/validation): a namespace is a DNS-1123 label
# (IsDNS1123Label), a Secret or PVC name a DNS-1123 subdomain (IsDNS1123Subdomain), a key inside a Secret
# a config map key (IsConfigMapKey). Checked before rendering, so `kubectl apply` never refuses a name.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_RULES = (
    ("namespace", _DNS1123_LABEL, 63, "a DNS-1123 label: lower-case letters, digits and '-', at most 63 characters"),
    ("hf_token_secret", _DNS1123_SUBDOMAIN, 253, "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253"),
    ("api_key_secret", _DNS1123_SUBDOMAIN, 253, "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253"),
    ("model_cache_pvc", _DNS1123_SUBDOMAIN, 253, "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253"),
    ("hf_token_key", _CONFIG_MAP_KEY, 253, "letters, digits, '-', '_' and '.', at most 253 characters"),
    ("api_key_key", _CONFIG_MAP_KEY, 253, "letters, digits, '-', '_' and '.', at most 253 characters"),
)


def check_names(k: Any) -> None:
    """Every Kubernetes name the profile gives is one the API server accepts (ProfileError, exit 2, otherwise)."""
    from launcher.errors import ProfileError
    from launcher.text import printable

    for key, pattern, limit, rule in _NAME_RULES:
        value = getattr(k, key, None)
        if value is None or not isinstance(value, str):
            continue
        if len(value) > limit or not pattern.fullmatch(value) or value in (".", ".."):
            raise ProfileError(f"deployment.kubernetes.{key}: {printable(repr(value), 80)} is not a Kubernetes name; it must be {rule}")


def image_of(profile: Profile) -> str:
    k = deployment_of(profile).kubernetes
    return k.image or f"vllm/vllm-openai:v{profile.vllm.version}"


def served_name(profile: Profile) -> str:
    """The id /v1/models lists: --served-model-name, else the model."""
    return profile.server.served_model_name or profile.model.name


def _labels(name: str, component: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "launcher"}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def k8s_escape(text: str) -> str:
    """Kubernetes expands `$(VAR)` in command, args and env values (and turns `$$` into `$`): keep text literal."""
    return re.sub(r"\$(?=[$(])", "$$", text)


def _escaped(rendered: Rendered) -> Rendered:
    """The argv and environment with every `$(` and `$$` kept literal for Kubernetes."""
    return replace(rendered, argv=tuple(k8s_escape(a) for a in rendered.argv), env={k: k8s_escape(v) for k, v in rendered.env.items()})


def secret_name(variable: str) -> str:
    """The Secret a secret-looking profile variable is read from in a cluster: WANDB_API_KEY -> wandb-api-key."""
    return k8s_name(variable.replace("_", "-"))


def _env(profile: Profile, rendered: Rendered) -> list[dict[str, Any]]:
    d = deployment_of(profile)
    k = d.kubernetes
    inside = for_container(rendered.env, profile.vllm.cache_dir if k.compile_cache_host_path else None)  # the volume's path
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in inside.items() if key not in DROPPED_ENV]
    for key, value in (("NCCL_SOCKET_IFNAME", d.nccl_socket_ifname), ("GLOO_SOCKET_IFNAME", d.gloo_socket_ifname)):
        if value and key not in rendered.env:
            env.append({"name": key, "value": k8s_escape(value)})
    env.append({"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": k.hf_token_secret, "key": k.hf_token_key, "optional": True}}})
    for target in rendered.env_from:
        if target == SECRET_TARGET:
            env.append({"name": target, "valueFrom": {"secretKeyRef": {"name": k.api_key_secret, "key": k.api_key_key}}})
        elif target != "HF_TOKEN":
            # A secret-looking variable of the profile: by reference to a Secret of its own, never its value.
            env.append({"name": target, "valueFrom": {"secretKeyRef": {"name": secret_name(target), "key": "value"}}})
    return env


def _volumes(profile: Profile) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    k = deployment_of(profile).kubernetes
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k.shm_size}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": SHM_MOUNT}]
    if k.model_cache_pvc:
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": k.model_cache_pvc}})
        mounts.append({"name": "hf-cache", "mountPath": HF_CACHE_MOUNT})
    elif k.model_cache_host_path:
        volumes.append({"name": "hf-cache", "hostPath": {"path": k.model_cache_host_path, "type": "DirectoryOrCreate"}})
        mounts.append({"name": "hf-cache", "mountPath": HF_CACHE_MOUNT})
    if k.compile_cache_host_path:  # beside the model cache: what vLLM and its kernels compiled (launcher.output.compile_cache)
        volumes.append({"name": "compile-cache", "hostPath": {"path": k.compile_cache_host_path, "type": "DirectoryOrCreate"}})
        mounts.append({"name": "compile-cache", "mountPath": CONTAINER_ROOT})
    return volumes, mounts


def cache_note(profile: Profile) -> str:
    """Where the pods keep the ~34 GB of weights, said loudly: without a cache every pod start downloads them."""
    k = deployment_of(profile).kubernetes
    if k.model_cache_pvc:
        return f"k8s: model cache: PersistentVolumeClaim {k.model_cache_pvc} at {HF_CACHE_MOUNT} (create it before applying)"
    if k.model_cache_host_path:
        return (f"k8s: model cache: hostPath {k.model_cache_host_path} on each node at {HF_CACHE_MOUNT}: the weights download once "
                "per node; a cluster that forbids hostPath needs deployment.kubernetes.model_cache_pvc instead")
    return ("k8s: WARNING: no model cache (model_cache_host_path: false): every pod start downloads the weights (~34 GB); "
            "set deployment.kubernetes.model_cache_pvc or model_cache_host_path")


def _probes(profile: Profile, port: int) -> dict[str, Any]:
    script = READINESS_SCRIPT.format(port=port, model=served_name(profile))
    return {
        # vLLM loads weights, profiles memory and captures graphs before it answers: allow 30 minutes.
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 180},
        # /health stays 200 while the engine core hangs (docs/runbook.md#what-happens-when): a one-token completion
        # is the probe; 4 misses 15 s apart (each up to 20 s) restart a hung engine within about 80 s.
        "livenessProbe": {"exec": {"command": ["python3", "-c", LIVENESS_SCRIPT.format(port=port, model=served_name(profile))]},
                          "periodSeconds": 15, "timeoutSeconds": 20, "failureThreshold": 4},
        "readinessProbe": {
            "exec": {"command": ["python3", "-c", script]},
            "periodSeconds": 10,
            "timeoutSeconds": 8,
            "failureThreshold": 3,
        },
    }


def _container(profile: Profile, rendered: Rendered, gpus: int, name: str, serves_http: bool) -> dict[str, Any]:
    port = profile.server.port or DEFAULT_API_PORT
    _, mounts = _volumes(profile)
    container: dict[str, Any] = {
        "name": name,
        "image": image_of(profile),
        "command": list(rendered.argv),
        "env": _env(profile, rendered),
        "resources": {"limits": {GPU_RESOURCE: str(gpus)}, "requests": {GPU_RESOURCE: str(gpus)}},
        "volumeMounts": mounts,
    }
    if serves_http:
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        container.update(_probes(profile, port))
    return container


def _pod_spec(profile: Profile, containers: list[dict[str, Any]]) -> dict[str, Any]:
    volumes, _ = _volumes(profile)
    # SIGTERM -> exit took under 10 s with requests in flight (vLLM's default --shutdown-timeout 0 aborts them);
    # the same 60 s grace as systemd's TimeoutStopSec and Compose's stop_grace_period.
    return {"containers": containers, "volumes": volumes, "terminationGracePeriodSeconds": 60}


def _metadata(profile: Profile, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    namespace = deployment_of(profile).kubernetes.namespace
    if namespace:
        meta["namespace"] = namespace
    return meta


def _service(profile: Profile, name: str, selector: dict[str, str]) -> dict[str, Any]:
    d = deployment_of(profile)
    port = profile.server.port or DEFAULT_API_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(profile, name, _labels(name)),
        "spec": {
            "type": d.kubernetes.service_type,
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def manifests(profile: Profile, name: str, source: str = "the profile") -> Manifests:
    """The objects for `profile`, named after it: Deployment + Service, or LeaderWorkerSet + Service.

    Every container's argv is `validate.command`'s (translated and checked for the profile's vLLM).
    """
    from launcher.output.validate import command

    topo = topology(profile)
    d = deployment_of(profile)
    check_names(d.kubernetes)
    checked = command(profile, source)
    # Every value written as is: `$(VAR)` in the profile must not pick up the container's variables (the token).
    base = _escaped(checked)
    obj = k8s_name(name)
    notes: list[str] = [topo.describe(), cache_note(profile)]
    if any(k in base.env for k in DROPPED_ENV):
        notes.append("k8s: CUDA_VISIBLE_DEVICES is left out; the device plugin gives each pod its GPUs")
    if SECRET_TARGET in base.env_from:
        notes.append(f"k8s: the API key comes from Secret {d.kubernetes.api_key_secret} (key {d.kubernetes.api_key_key})")
    for target in base.env_from:
        if target not in (SECRET_TARGET, "HF_TOKEN"):
            notes.append(f"k8s: {target} comes from Secret {secret_name(target)} (key value)")
    notes.append(
        f"k8s: the Hugging Face token comes from Secret {d.kubernetes.hf_token_secret} (key {d.kubernetes.hf_token_key}), "
        "if it exists: kubectl create secret generic "
        + shlex.join([*(["--namespace", d.kubernetes.namespace] if d.kubernetes.namespace else []), d.kubernetes.hf_token_secret,
                      f"--from-literal={d.kubernetes.hf_token_key}=hf_..."])
    )
    if not topo.multi_node:
        labels = _labels(obj, "server")
        pod = {
            "metadata": {"labels": labels},
            "spec": _pod_spec(profile, [_container(profile, base, topo.engine_gpus, "vllm", True)]),
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(profile, obj, labels),
            "spec": {
                "replicas": topo.replicas,
                "selector": {"matchLabels": labels},
                # A new pod needs GPUs the old one holds: replace one pod at a time instead of surging.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": pod,
            },
        }
        if topo.replicas > 1:
            notes.append(f"k8s: the Service spreads requests over the {topo.replicas} replicas (" + (d.load_balancer or "round robin") + ")")
        return Manifests((deployment, _service(profile, obj, labels)), tuple(notes))

    if d.backend != "mp":
        raise ProfileError(
            "deployment.backend: --format k8s renders vLLM's own multi-node mode (mp) in a LeaderWorkerSet; "
            "set deployment.backend: mp (Ray on Kubernetes needs its own cluster setup)"
        )
    for token in profile.extra_args:
        if token.split("=", 1)[0] in MULTINODE_FLAGS:
            raise ProfileError(f"extra_args: {token.split('=', 1)[0]} is set per pod by launcher; remove it")
    leader_addr = "$(LWS_LEADER_ADDRESS)"
    # The per-pod flags are checked like every other flag; the pod's own values (the leader's address,
    # the worker's index) are filled in by the LeaderWorkerSet, so a stand-in is checked and then replaced.
    # Escaped first, then the LeaderWorkerSet's own `$(LWS_*)` variables go in unescaped.
    leader = _placeholders(_escaped(command(profile, source, more=multinode_args(topo.nodes, "0", CHECK_ADDR, d.master_port, headless=False))),
                           {CHECK_ADDR: leader_addr})
    worker = _placeholders(_escaped(command(profile, source, more=multinode_args(topo.nodes, "1", CHECK_ADDR, d.master_port, headless=True))),
                           {CHECK_ADDR: leader_addr}, rank="$(LWS_WORKER_INDEX)")
    gpus = topo.node_gpus[0]
    leader_labels = {**_labels(obj, "leader"), "role": "leader"}
    worker_labels = {**_labels(obj, "worker"), "role": "worker"}
    lws = {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(profile, obj, _labels(obj)),
        "spec": {
            "replicas": topo.replicas,
            "leaderWorkerTemplate": {
                "size": topo.nodes,
                # A lost node breaks the torch.distributed group: restart the whole group together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": leader_labels},
                    "spec": _pod_spec(profile, [_container(profile, leader, gpus, "vllm-leader", True)]),
                },
                "workerTemplate": {
                    "metadata": {"labels": worker_labels},
                    "spec": _pod_spec(profile, [_container(profile, worker, gpus, "vllm-worker", False)]),
                },
            },
        },
    }
    selector = {"app.kubernetes.io/instance": obj, "role": "leader"}
    notes.append("k8s: needs the LeaderWorkerSet controller (leaderworkerset.x-k8s.io/v1) in the cluster")
    notes.append(f"k8s: one group = {topo.nodes} pods x {gpus} GPUs; the Service sends requests to each group's leader (node 0)")
    return Manifests((lws, _service(profile, obj, selector)), tuple(notes))


CHECK_ADDR = "127.0.0.1"  # stands in for $(LWS_LEADER_ADDRESS) while the argv is checked


def _placeholders(rendered: Rendered, values: dict[str, str], rank: str | None = None) -> Rendered:
    """The checked argv with stand-ins replaced by the LeaderWorkerSet's own variables (and --node-rank's value)."""
    argv = list(rendered.argv)
    for i, token in enumerate(argv):
        if i > 0 and argv[i - 1] == "--master-addr" and token in values:
            argv[i] = values[token]
        if rank is not None and i > 0 and argv[i - 1] == "--node-rank":
            argv[i] = rank
    return replace(rendered, argv=tuple(argv))


def to_yaml(m: Manifests) -> str:
    """The manifests as one multi-document YAML stream, for `kubectl apply -f -`."""
    header = "# Rendered by launcher. Apply with: kubectl apply -f THIS_FILE\n"
    body = "---\n".join(yaml_dump(doc) for doc in m.docs)
    return header + "---\n" + body
