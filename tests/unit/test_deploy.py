"""Deployments beyond one box: topology rules, one command per node, and the TP8 scale-out advice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from launcher.errors import ProfileError
from launcher.fit.estimate import FitInput, estimate
from launcher.hardware.catalog import lookup
from launcher.model.facts import facts_for
from launcher.output.deploy import (
    MULTINODE_FLAGS,
    NodeCommand,
    Topology,
    format_node,
    format_plan,
    is_distributed,
    join_endpoint,
    node_command,
    plan,
    topology,
)
from launcher.output.render import option_pairs
from launcher.output.validate import command as render
from launcher.preflight.scale_out import scale_out_advice
from launcher.profile.load import resolve
from launcher.profile.schema import Profile, node_gpu_counts
from tests.helpers import FIXTURES

# vLLM 0.33.0's own parser, dumped (not launcher's schema): tests/fixtures/README.md.
SERVE_ARGS = FIXTURES / "vllm" / "vllm-0.33.0-serve-parser.json"

# A two-node engine: TP4 inside each node, PP2 across them (MTP off: it does not work with PP > 1).
TWO_NODES = """
extends: tp4
hardware: {gpu_count: 8}
parallel: {pipeline_parallel_size: 2}
speculative: {enabled: false}
deployment:
  nodes: 2
  nccl_socket_ifname: eth0
  hosts:
    - {ip: 10.1.0.1, gloo_socket_ifname: ens5}
    - {ip: 10.1.0.2, nccl_socket_ifname: ib0}
"""


def load(write_profile: Callable[..., Path], text: str, *sets: str) -> Profile:
    path = write_profile("p", text)
    return resolve(str(path), sets=sets, environ={}).profile


def refused(write_profile: Callable[..., Path], text: str, *sets: str) -> str:
    with pytest.raises(ProfileError) as info:
        load(write_profile, text, *sets)
    return str(info.value)


# ------------------------------------------------------------------------------- topology rules


@pytest.mark.parametrize(
    ("sets", "key", "words"),
    [
        (("deployment.hosts=[{ip: 10.1.0.1}]",), "deployment.hosts", "lists 1 hosts but deployment.nodes is 2"),
        (("deployment.gpus_per_node=2",), "deployment.gpus_per_node", "the nodes give 4 GPUs (2 + 2) but tensor x pipeline x data parallel = 4 x 2 x 1 = 8"),
        (("deployment.nodes=3", "deployment.hosts=none"), "deployment.nodes", "3 nodes do not split hardware.gpu_count 8"),
        (("parallel.tensor_parallel_size=8", "parallel.pipeline_parallel_size=1"), "parallel.tensor_parallel_size", "8 does not divide the 4 GPUs of node 0"),
        (("deployment.hosts=[{ip: 10.1.0.1}, {ip: 10.1.0.1}]",), "deployment.hosts", "ip 10.1.0.1 appears twice"),
        (("env.VLLM_HOST_IP=10.1.0.1",), "env.VLLM_HOST_IP", "differs per node"),
        (("deployment.hosts=[{ip: a, vllm_version: 0.32.0}, {ip: b}]",), "deployment.hosts.0.vllm_version",
         "node 0 has vLLM 0.32.0 but the profile targets 0.33.0"),
        (("deployment.hosts=[{ip: a}, {ip: b, model_path: /models/q}]",), "deployment.hosts.1.model_path", "vLLM loads one path on every node"),
        (("parallel.distributed_executor_backend=ray",), "parallel.distributed_executor_backend", "is ray but deployment.backend is mp"),
        (("speculative.enabled=true",), "parallel.pipeline_parallel_size", "MTP speculative decoding does not work with pipeline parallel > 1"),
    ],
)
def test_topology_rule_refuses(write_profile, sets: tuple[str, ...], key: str, words: str) -> None:
    message = refused(write_profile, TWO_NODES, *sets)
    assert f"{key}: " in message and words in message


def test_nodes_must_be_identical_for_tp_pp_over_nodes(write_profile) -> None:
    text = TWO_NODES.replace("hardware: {gpu_count: 8}", "hardware: {gpu_count: 12}").replace(
        "parallel: {pipeline_parallel_size: 2}", "parallel: {pipeline_parallel_size: 3}"
    )
    message = refused(write_profile, text, "deployment.hosts=[{ip: a, gpus: 8}, {ip: b, gpus: 4}]")
    assert "deployment.hosts: nodes differ (8, 4 GPUs)" in message


def test_data_parallel_over_nodes_points_at_replicas(write_profile) -> None:
    message = refused(
        write_profile, TWO_NODES, "parallel.pipeline_parallel_size=1", "parallel.data_parallel_size=2"
    )
    assert "parallel.data_parallel_size: " in message and "deployment.replicas" in message


def test_error_names_the_file_and_line(write_profile) -> None:
    text = TWO_NODES.replace("- {ip: 10.1.0.2, nccl_socket_ifname: ib0}", "- {ip: 10.1.0.1}")
    message = refused(write_profile, text)
    assert message.startswith(f"{write_profile('p', text)}:") and "deployment.hosts:" in message


def test_valid_layouts(write_profile) -> None:
    two = topology(load(write_profile, TWO_NODES))
    assert two == Topology(4, 2, 1, 2, (4, 4), 1, "mp")
    assert two.kind == "multi-node" and two.total_gpus == 8
    replicas = topology(resolve("dual-3090", sets=["deployment.replicas=3"], environ={}).profile)
    assert replicas.kind == "replicas" and replicas.total_gpus == 6 and replicas.node_gpus == (2,)
    assert topology(resolve("tp4x2", environ={}).profile).describe().startswith("one engine (tensor parallel 4 x data parallel 2)")


def test_local_gpu_count_is_per_node(write_profile) -> None:
    p = load(write_profile, TWO_NODES)
    assert p.hardware.gpu_count == 8 and node_gpu_counts(p) == (4, 4)
    assert node_gpu_counts(resolve("tp8", environ={}).profile) == (8,)
    with pytest.raises(ProfileError, match=r"ranks 0..1"):
        node_command(p, 2)


# ------------------------------------------------------------------------- one command per node


def test_each_node_gets_its_own_command(write_profile) -> None:
    p = load(write_profile, TWO_NODES)
    base = render(p)
    head, worker = plan(p).nodes
    for node in (head, worker):
        assert node.rendered is not None
        assert node.rendered.argv[: len(base.argv)] == base.argv  # same engine, model and options everywhere
    assert option_pairs(list(head.rendered.argv[len(base.argv):])) == [
        ("--nnodes", "2"), ("--node-rank", "0"), ("--master-addr", "10.1.0.1"), ("--master-port", "29501"),
    ]
    assert option_pairs(list(worker.rendered.argv[len(base.argv):])) == [
        ("--headless", None), ("--nnodes", "2"), ("--node-rank", "1"), ("--master-addr", "10.1.0.1"), ("--master-port", "29501"),
    ]
    assert head.serves_http and not worker.serves_http
    assert head.env == {"GLOO_SOCKET_IFNAME": "ens5", "NCCL_SOCKET_IFNAME": "eth0", "VLLM_HOST_IP": "10.1.0.1"}
    assert worker.env == {"NCCL_SOCKET_IFNAME": "ib0", "VLLM_HOST_IP": "10.1.0.2"}
    assert worker.rendered.env == worker.env


def test_no_command_is_a_template(write_profile) -> None:
    p = load(write_profile, TWO_NODES, "deployment.nodes=4", "parallel.tensor_parallel_size=2", "parallel.pipeline_parallel_size=4",
             "deployment.hosts=[{ip: a}, {ip: b}, {ip: c}, {ip: d}]")
    nodes = plan(p).nodes
    argvs = [n.rendered.argv for n in nodes if n.rendered]
    assert len(set(argvs)) == 4
    ranks = [a[a.index("--node-rank") + 1] for a in argvs]
    assert ranks == ["0", "1", "2", "3"]
    assert not any("$(" in t or "{" in t and "rank" in t for a in argvs for t in a)
    assert [n.env["VLLM_HOST_IP"] for n in nodes] == ["a", "b", "c", "d"]


def test_emitted_flags_exist_in_vllm_033_with_their_types(write_profile) -> None:
    actions = json.loads(SERVE_ARGS.read_text())["actions"]
    by_flag = {flag: a for a in actions for flag in a["option_strings"]}
    p = load(write_profile, TWO_NODES)
    base_len = len(render(p).argv)
    for node in plan(p).nodes:
        for flag, value in option_pairs(list(node.rendered.argv[base_len:])):
            action = by_flag[flag]
            if value is None:
                assert action["nargs"] == 0, flag
            elif action["type"] == "int":
                int(value)
            else:
                assert action["type"] == "str", flag
    ray = load(write_profile, TWO_NODES, "deployment.backend=ray")
    head = node_command(ray, 0)
    assert "ray" in by_flag["--distributed-executor-backend"]["metavar"]
    assert head.rendered.argv[-2:] == ("--distributed-executor-backend", "ray")


def test_ray_backend_starts_a_cluster_then_serves_from_the_head(write_profile) -> None:
    p = load(write_profile, TWO_NODES, "deployment.backend=ray", "deployment.ray_port=6380")
    head, worker = plan(p).nodes
    assert head.prelude == (("ray", "start", "--head", "--port", "6380", "--node-ip-address", "10.1.0.1"),)
    assert worker.prelude == (("ray", "start", "--address", "10.1.0.1:6380", "--node-ip-address", "10.1.0.2", "--block"),)
    assert worker.rendered is None
    assert not any(f in head.rendered.argv for f in MULTINODE_FLAGS)  # vLLM refuses --nnodes > 1 with ray
    shell = format_node(worker, "shell")
    assert shell.startswith("NCCL_SOCKET_IFNAME=ib0 VLLM_HOST_IP=10.1.0.2 ray start --address 10.1.0.1:6380")
    with pytest.raises(ProfileError, match="runs no vllm serve"):
        format_node(worker, "yaml")
    assert any("ray status" in n for n in plan(p).notes)


def test_plan_output_formats(write_profile) -> None:
    p = load(write_profile, TWO_NODES)
    shell = format_plan(plan(p), "shell")
    assert "# --- node 0 of 2: head, 10.1.0.1 (serves HTTP) ---" in shell
    assert "# --- node 1 of 2: worker, 10.1.0.2 (headless) ---" in shell
    data = json.loads(format_plan(plan(p), "json"))
    assert [n["node_rank"] for n in data["nodes"]] == [0, 1] and data["topology"]["kind"] == "multi-node"
    with pytest.raises(ProfileError, match="pick one with --node-rank"):
        format_plan(plan(p), "yaml")
    yaml_text = format_node(node_command(p, 1), "yaml")
    assert "headless: true" in yaml_text and "node-rank: 1" in yaml_text and "nnodes: 2" in yaml_text


def test_per_node_rendering_needs_the_hosts(write_profile) -> None:
    p = load(write_profile, TWO_NODES, "deployment.hosts=none")
    with pytest.raises(ProfileError, match="deployment.hosts: each node's command needs its address"):
        plan(p)


def test_extra_args_may_not_set_per_node_flags(write_profile) -> None:
    p = load(write_profile, TWO_NODES + "extra_args: ['--node-rank=1']\n")
    with pytest.raises(ProfileError, match="extra_args: --node-rank is set per node"):
        node_command(p, 0)


def test_one_machine_profiles_are_untouched() -> None:
    for name in ("dual-3090", "tp4", "tp8", "tp4x2"):
        p = resolve(name, environ={}).profile
        node = node_command(p, 0)
        assert node.rendered == render(p) and not is_distributed(p)
        with pytest.raises(ProfileError, match="applies to deployment.nodes > 1"):
            node_command(p, 1)


def test_replicas_run_the_same_command_behind_a_load_balancer() -> None:
    p = resolve("dual-3090", sets=["deployment.replicas=3", "deployment.load_balancer=litellm at http://lb:4000"], environ={}).profile
    the_plan = plan(p)
    assert len(the_plan.nodes) == 1 and the_plan.nodes[0].role == "replica"
    assert the_plan.nodes[0].rendered == render(p)
    assert "load balancer: litellm at http://lb:4000" in the_plan.notes
    with pytest.raises(ProfileError, match="3 independent replicas run the same command"):
        node_command(p, 1)


def test_shipped_multi_node_example_renders_both_nodes() -> None:
    p = resolve("tp4-pp2-2node", environ={}).profile
    head, worker = plan(p).nodes
    assert isinstance(head, NodeCommand) and head.host != worker.host
    assert "--speculative-config" not in head.rendered.argv  # MTP off with pipeline parallel
    assert node_gpu_counts(p)[0] == 4 and p.hardware.gpu_count == 8


def test_each_worker_knows_the_head_port_it_must_reach(write_profile) -> None:
    p = load(write_profile, TWO_NODES, "deployment.master_port=29611")
    assert join_endpoint(p, 0) is None  # the head waits for nobody before it starts
    assert join_endpoint(p, 1) == ("10.1.0.1", 29611)
    ray = load(write_profile, TWO_NODES, "deployment.backend=ray", "deployment.ray_port=6380")
    assert join_endpoint(ray, 1) == ("10.1.0.1", 6380)
    explicit = load(write_profile, TWO_NODES, "deployment.master_addr=head.internal")
    assert join_endpoint(explicit, 1) == ("head.internal", 29501)
    assert join_endpoint(resolve("dual-3090", environ={}).profile, 0) is None


def test_api_server_entrypoint_cannot_run_a_headless_node(write_profile) -> None:
    """vLLM's api_server module accepts --headless and ignores it: node 1 would start an engine of its own."""
    p = load(write_profile, TWO_NODES + "vllm: {command: [python, -m, vllm.entrypoints.openai.api_server], model_arg: flag}\n")
    with pytest.raises(ProfileError, match=r"vllm.command: python -m vllm.entrypoints.openai.api_server ignores --headless"):
        plan(p)
    cli_module = load(write_profile, TWO_NODES + "vllm: {command: [python, -m, vllm.entrypoints.cli.main, serve]}\n")
    worker = node_command(cli_module, 1)
    assert worker.rendered is not None and worker.rendered.argv[:5] == ("python", "-m", "vllm.entrypoints.cli.main", "serve",
                                                                       "havenoammo/Qwen3.6-27B-INT8-MTP")


def test_shipped_two_node_cpu_profile_runs_on_loopback() -> None:
    """cpu-tiny-2node: what CI starts for real (tests/engine/test_two_node_cpu.py)."""
    p = resolve("cpu-tiny-2node", environ={"HOME": "/home/operator"}).profile
    head, worker = plan(p).nodes
    assert (head.host, worker.host) == ("127.0.0.1", "127.0.0.2")
    assert worker.env == {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                          "VLLM_HOST_IP": "127.0.0.2"}
    assert worker.rendered is not None and worker.rendered.argv[-9:] == (
        "--headless", "--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1", "--master-port", "29501")
    assert "--enforce-eager" not in worker.rendered.argv  # the CPU build's later stages need the warm-up pass
    assert p.model.name.endswith("tiny-qwen3-next-mtp-4l") and p.parallel.pp == 2
    assert join_endpoint(p, 1) == ("127.0.0.1", 29501)


# ---------------------------------------------------------------------------- TP8 scale-out advice


def fit_on(gpu: str) -> Callable[[Profile], Any]:
    """fit_fn: the estimator on one catalog GPU, fed from the profile's own values."""
    model = lookup(gpu)

    def fit(p: Profile) -> Any:
        e = p.engine
        return estimate(
            FitInput(
                total_memory_bytes=model.cuda_total_bytes,
                compute_capability=model.compute_capability,
                gpu_name=model.nvml_name,
                nvml_total_memory_bytes=model.memory_total_bytes,
                gpu_memory_utilization=e.gpu_memory_utilization or 0.92,
                tensor_parallel_size=p.parallel.tensor_parallel_size or 1,
                pipeline_parallel_size=p.parallel.pipeline_parallel_size or 1,
                kv_cache_dtype=p.kv_cache.dtype or "auto",
                num_speculative_tokens=p.speculative.num_speculative_tokens if p.mtp_enabled and p.speculative else 0,
                max_model_len=e.max_model_len if isinstance(e.max_model_len, int) else 262144,
                language_model_only=bool(p.model.language_model_only),
                model=facts_for(p.facts_key),
            )
        )

    return fit


def test_tp8_advice_matches_the_worked_numbers_of_model_facts() -> None:
    tp8 = resolve("tp8", environ={}).profile
    seen: list[tuple[int, int, int]] = []
    base_fit = fit_on("A100 80GB")

    def fit(p: Profile) -> Any:
        seen.append((p.parallel.tensor_parallel_size, p.parallel.data_parallel_size or 1, p.hardware.gpu_count))
        return base_fit(p)

    advice = scale_out_advice(tp8, fit)
    assert advice is not None
    assert seen == [(8, 1, 8), (4, 1, 4)]  # one engine each, data parallel 1
    assert advice.kv_heads == 4 and advice.kv_head_copies == 2
    # docs/memory-model.md#worked-numbers (A100-80, k=2): TP4 ~28 and TP8 ~31 full-length requests.
    assert advice.current.concurrency == pytest.approx(31, rel=0.1)
    assert advice.alternative.concurrency_per_engine == pytest.approx(28, rel=0.1)
    assert advice.current.gpus == advice.alternative.gpus == 8
    assert advice.alternative.concurrency == pytest.approx(2 * advice.alternative.concurrency_per_engine)
    assert advice.gain > 1.7
    assert advice.profile == "tp4x2"
    assert advice.overrides == ("parallel.tensor_parallel_size=4", "parallel.data_parallel_size=2")
    message = advice.message
    assert "TP8 stores each of this model's 4 KV heads twice" in message
    assert f"about {advice.current.concurrency:.1f} full-length (262144-token) requests" in message
    assert f"TP4 holds about {advice.alternative.concurrency_per_engine:.1f} on 4 GPUs" in message
    assert "profile tp4x2" in message and "--set parallel.data_parallel_size=2" in message
    assert json.loads(json.dumps(advice.to_json()))["alternative"]["engines"] == 2


def test_shipped_tp4x2_is_the_advised_alternative() -> None:
    tp8 = resolve("tp8", environ={}).profile
    tp4x2 = resolve("tp4x2", environ={}).profile
    advice = scale_out_advice(tp8, fit_on("H100"))
    assert advice is not None and advice.profile == "tp4x2"
    assert tp4x2.parallel.tensor_parallel_size == advice.alternative.tensor_parallel_size
    assert tp4x2.parallel.data_parallel_size == advice.alternative.engines
    assert tp4x2.hardware.gpu_count == advice.alternative.gpus
    # the same profile with the overrides applied renders the same vLLM options as tp4x2
    via_sets = resolve("tp8", sets=[f"{o}" for o in advice.overrides], environ={}).profile
    assert render(via_sets).argv == render(tp4x2).argv
    assert scale_out_advice(tp4x2, fit_on("H100")) is None


@pytest.mark.parametrize("name", ["dual-3090", "tp4", "tp4x2"])
def test_no_advice_without_kv_head_replication(name: str) -> None:
    assert scale_out_advice(resolve(name, environ={}).profile, fit_on("H100")) is None


def test_no_advice_when_the_smaller_tp_does_not_start() -> None:
    # 8 x 24 GB at 55 % of the memory with bf16 KV: TP4 cannot hold one full-length request, TP8 can.
    sets = ["kv_cache.dtype=auto", "engine.gpu_memory_utilization=0.55"]
    p = resolve("tp8", sets=sets, environ={}).profile
    fit = fit_on("RTX 3090")
    assert fit(p).verdict != "does-not-fit"
    assert fit(resolve("tp4", sets=sets, environ={}).profile).verdict == "does-not-fit"
    assert scale_out_advice(p, fit) is None


# ------------------------------------------------------------------------------------ the CLI


def cli(*args: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from launcher.cli import cli as group

    return CliRunner().invoke(group, list(args))


def test_cli_node_rank_renders_that_node_only() -> None:
    worker = cli("render", "--profile", "tp4-pp2-2node", "--node-rank", "1")
    assert worker.exit_code == 0, worker.output
    assert worker.stdout.startswith("GLOO_SOCKET_IFNAME=eth0 \\\nNCCL_SOCKET_IFNAME=eth0 \\\nVLLM_HOST_IP=192.0.2.11 \\\nvllm serve ")
    assert "  --headless \\\n  --nnodes 2 \\\n  --node-rank 1 \\\n  --master-addr 192.0.2.10 \\\n  --master-port 29501\n" in worker.stdout
    assert "start order: any; node 0 alone serves HTTP (port 8000) once every node has joined at 192.0.2.10:29501" in worker.stderr
    assert "waits for 192.0.2.10:29501 to answer before it starts vLLM" in worker.stderr
    head = cli("render", "--profile", "tp4-pp2-2node", "--node-rank", "0", "--format", "json")
    data = json.loads(head.stdout)
    assert data["node_rank"] == 0 and data["env"]["VLLM_HOST_IP"] == "192.0.2.10" and "--headless" not in data["argv"]


def test_cli_without_node_rank_prints_every_node() -> None:
    result = cli("render", "--profile", "tp4-pp2-2node")
    assert result.exit_code == 0
    assert result.stdout.count("vllm serve havenoammo/Qwen3.6-27B-INT8-MTP") == 2
    assert "--node-rank 0" in result.stdout and "--node-rank 1" in result.stdout
    refused = cli("render", "--profile", "tp4-pp2-2node", "--format", "yaml")
    assert isinstance(refused.exception, ProfileError) and "pick one with --node-rank R" in str(refused.exception)


@pytest.mark.slow
def test_cli_bad_node_rank() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "launcher", "render", "--profile", "tp4-pp2-2node", "--node-rank", "2"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and p.stderr == "launcher: error: --node-rank 2: the profile has 2 nodes (ranks 0..1)\n"
    single = cli("render", "--profile", "tp8", "--node-rank", "1")
    assert isinstance(single.exception, ProfileError) and "applies to deployment.nodes > 1" in str(single.exception)


def test_cli_single_machine_output_is_unchanged_by_node_rank_zero() -> None:
    for fmt in ("shell", "json", "yaml", "env"):
        plain = cli("render", "--profile", "tp8", "--format", fmt)
        ranked = cli("render", "--profile", "tp8", "--format", fmt, "--node-rank", "0")
        assert plain.exit_code == ranked.exit_code == 0 and plain.stdout == ranked.stdout


def test_cli_set_turns_a_profile_into_a_multi_node_one() -> None:
    result = cli(
        "render", "--profile", "tp4", "--node-rank", "1",
        "--set", "deployment.nodes=2", "--set", "deployment.hosts=[{ip: 10.0.0.1}, {ip: 10.0.0.2}]",
        "--set", "hardware.gpu_count=8", "--set", "parallel.pipeline_parallel_size=2", "--set", "speculative.enabled=false",
    )
    assert result.exit_code == 0, result.output
    assert "VLLM_HOST_IP=10.0.0.2" in result.stdout and "--master-addr 10.0.0.1" in result.stdout


def test_serve_head_without_health_timeout_says_a_lost_node_would_hang_it() -> None:
    from launcher.commands.serve import HEAD_WITHOUT_WATCHDOG

    head = cli("serve", "--profile", "tp4-pp2-2node", "--node-rank", "0", "--dry-run")
    assert head.exit_code == 0, head.output
    assert f"launcher: note: {HEAD_WITHOUT_WATCHDOG}" in head.stderr
    watched = cli("serve", "--profile", "tp4-pp2-2node", "--node-rank", "0", "--dry-run", "--health-timeout", "30")
    assert watched.exit_code == 0, watched.output
    assert "node 0 without --health-timeout" not in watched.stderr
    worker = cli("serve", "--profile", "tp4-pp2-2node", "--node-rank", "1", "--dry-run")
    assert worker.exit_code == 0 and "node 0 without --health-timeout" not in worker.stderr
