"""`render` outputs a newcomer applies as they are (issue 17): plain Kubernetes manifests with a model cache."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from launcher.k8s import manifests, to_yaml
from launcher.load import list_profiles, resolve, shipped_profiles_dir

SHIPPED = sorted(list_profiles([shipped_profiles_dir()]))


@pytest.mark.parametrize("name", SHIPPED)
def test_k8s_yaml_has_no_anchors_and_reads_back_as_the_manifests(name: str) -> None:
    resolved = resolve(name, environ={})
    m = manifests(resolved.profile, resolved.name)
    text = to_yaml(m)
    assert "&id" not in text and "*id" not in text
    assert [d for d in yaml.safe_load_all(text) if d] == list(m.docs)


def test_k8s_labels_are_written_out_where_they_are_used() -> None:
    text = to_yaml(manifests(resolve("dual-3090", environ={}).profile, "dual-3090"))
    assert text.count("app.kubernetes.io/instance: dual-3090") >= 4  # Deployment, selector, pod template, Service


def _pod(name: str, *sets: str) -> dict:  # type: ignore[type-arg]
    docs = manifests(resolve(name, sets=sets, environ={}).profile, name).docs
    dep = docs[0]
    spec = dep["spec"]["template"]["spec"] if dep["kind"] == "Deployment" else dep["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    return spec  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["dual-3090", "tp4-pp2-2node"])
def test_model_cache_by_default_is_a_host_directory_per_node(name: str) -> None:
    spec = _pod(name)
    assert {"name": "hf-cache", "hostPath": {"path": "/var/cache/huggingface", "type": "DirectoryOrCreate"}} in spec["volumes"]
    assert {"name": "hf-cache", "mountPath": "/root/.cache/huggingface"} in spec["containers"][0]["volumeMounts"]


def test_a_pvc_replaces_the_host_directory_and_false_turns_the_cache_off_loudly() -> None:
    spec = _pod("dual-3090", "deployment.kubernetes.model_cache_pvc=models")
    caches = [v for v in spec["volumes"] if v["name"] == "hf-cache"]
    assert caches == [{"name": "hf-cache", "persistentVolumeClaim": {"claimName": "models"}}]
    off = _pod("dual-3090", "deployment.kubernetes.model_cache_host_path=false")
    assert not [v for v in off["volumes"] if v["name"] == "hf-cache"]
    result = CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--format", "k8s",
                                      "--set", "deployment.kubernetes.model_cache_host_path=false"])
    assert result.exit_code == 0 and "WARNING: no model cache" in result.stderr and "~34 GB" in result.stderr
    default = CliRunner().invoke(cli, ["render", "--profile", "dual-3090", "--format", "k8s"])
    assert "k8s: model cache: hostPath /var/cache/huggingface" in default.stderr


def test_a_relative_host_path_is_refused() -> None:
    from launcher.errors import ProfileError

    with pytest.raises(ProfileError):
        resolve("dual-3090", sets=("deployment.kubernetes.model_cache_host_path=cache",), environ={})
