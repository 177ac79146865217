"""`launcher fit` as a newcomer reads it (issue 17): labelled per-engine and whole-deployment figures,
GPU memory variants and custom cards, the memory bar."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from tests.helpers import REPO


def fit(*args: str) -> str:
    result = CliRunner().invoke(cli, ["fit", *args])
    assert result.exit_code in (0, 3), result.output
    return result.stdout


def fit_json(*args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(fit(*args, "--json"))


def test_tp4x2_shows_per_engine_and_whole_deployment_labelled() -> None:
    text = fit("--profile", "tp4x2", "--gpu", "RTX 3090", "--count", "8")
    per = re.search(r"pool \(per engine\): .* ([\d.]+) requests at 262144 at once", text)
    whole = re.search(r"pool \(whole deployment, 2 engines: data parallel 2\): .* ([\d.]+) requests at 262144", text)
    assert per and whole, text
    assert float(whole.group(1)) == pytest.approx(2 * float(per.group(1)), abs=0.011)
    tp8 = re.search(r"pool \(one engine\): .* ([\d.]+) requests", fit("--profile", "tp8", "--gpu", "RTX 3090", "--count", "8"))
    assert tp8 and float(whole.group(1)) > float(tp8.group(1)) > float(per.group(1))  # tp4x2 no longer looks worse


def test_json_carries_the_deployment_figures() -> None:
    data = fit_json("--profile", "tp4x2", "--gpu", "H100")
    assert data["deployment"]["engines"] == 2
    assert data["deployment"]["kv_cache_tokens"] == 2 * data["kv_cache"]["tokens"]
    one = fit_json("--profile", "tp4", "--gpu", "H100")["deployment"]
    assert one["engines"] == 1 and one["layout"] == "one engine"


def test_replicas_count_as_engines() -> None:
    data = fit_json("--profile", "tp4", "--gpu", "H100", "--set", "deployment.replicas=3")
    assert data["deployment"]["engines"] == 3
    assert data["deployment"]["concurrency_at_max_len"] == pytest.approx(3 * data["concurrency_at_max_len"], abs=1e-3)


def _worked_numbers() -> dict[str, tuple[float, float, float]]:
    text = (REPO / "docs" / "multi-node.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| 8 x ([^|]+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)", text, re.M)
    assert rows, "docs/multi-node.md lost its worked-numbers table"
    return {gpu.strip(): (float(a), float(b), float(c)) for gpu, a, b, c in rows}


@pytest.mark.parametrize("gpu", sorted(_worked_numbers()))
def test_multi_node_worked_numbers_are_fit_figures(gpu: str) -> None:
    """docs/multi-node.md's TP8 / TP4 / tp4x2 columns are what `fit` prints (tp4x2: the whole deployment)."""
    tp8, tp4, tp4x2 = _worked_numbers()[gpu]
    assert round(fit_json("--profile", "tp8", "--gpu", gpu)["concurrency_at_max_len"], 1) == tp8
    assert round(fit_json("--profile", "tp4", "--gpu", gpu)["concurrency_at_max_len"], 1) == tp4
    assert round(fit_json("--profile", "tp4x2", "--gpu", gpu)["deployment"]["concurrency_at_max_len"], 1) == tp4x2


def test_check_kv_fit_says_per_engine_for_data_parallel() -> None:
    from launcher.fit.fit_profile import kv_fit_check
    from launcher.hardware.inventory import load_inventory
    from launcher.profile.load import resolve
    from tests.helpers import FIXTURES

    inv = load_inventory(FIXTURES / "inventories" / "h100x8.json")
    result = kv_fit_check(resolve("tp4x2").profile, inv.gpus[:4])
    assert "requests at full length per engine (" in result.message and "for the 2 engines of data parallel 2)" in result.message
    assert "per engine" not in kv_fit_check(resolve("tp4").profile, inv.gpus[:4]).message


# ------------------------------------------------------------------ memory variants and any card


@pytest.mark.parametrize("typed", ["RTX 4090 48GB", "4090 48G", "rtx 4090 48 GiB", "RTX 4090D 48GB"])
def test_modded_48gb_4090_is_a_known_variant(typed: str) -> None:
    from launcher.hardware.catalog import GIB, lookup

    model = lookup(typed)
    assert model.key == "RTX 4090 48GB" and model.compute_capability == (8, 9)
    assert 47 * GIB < model.cuda_total_bytes < model.memory_total_bytes
    assert lookup("RTX 4090").memory_total_bytes < 25 * GIB  # the plain name stays the 24 GB card


def test_an_inventory_of_a_48gb_4090_gets_the_variants_cuda_total() -> None:
    from launcher.hardware.catalog import cuda_total_from_nvml, lookup

    variant = lookup("RTX 4090 48GB")
    total, _, how = cuda_total_from_nvml("NVIDIA GeForce RTX 4090", variant.memory_total_bytes)
    assert total == variant.cuda_total_bytes and "RTX 4090 48GB" in how
    total24, _, how24 = cuda_total_from_nvml("NVIDIA GeForce RTX 4090", lookup("RTX 4090").memory_total_bytes)
    assert total24 == lookup("RTX 4090").cuda_total_bytes and "(RTX 4090)" in how24


def test_fit_on_a_48gb_4090_holds_more_than_on_a_24gb_one() -> None:
    big = fit_json("--profile", "dual-3090", "--gpu", "RTX 4090 48GB")
    small = fit_json("--profile", "dual-3090", "--gpu", "RTX 4090")
    assert big["gpu"]["compute_capability"] == [8, 9]
    assert big["kv_cache"]["tokens"] > 3 * small["kv_cache"]["tokens"]


def test_any_card_from_memory_and_compute_capability() -> None:
    from launcher.hardware.catalog import DEFAULT_DRIVER_RESERVED_BYTES, GIB

    data = fit_json("--profile", "dual-3090", "--gpu-memory", "48", "--compute-capability", "8.9")
    assert data["gpu"]["cuda_total_bytes"] == 48 * GIB - DEFAULT_DRIVER_RESERVED_BYTES
    assert data["gpu"]["compute_capability"] == [8, 9]
    variant = fit_json("--profile", "dual-3090", "--gpu", "RTX 4090", "--gpu-memory", "96")
    assert variant["gpu"]["compute_capability"] == [8, 9] and variant["gpu"]["cuda_total_bytes"] > 95 * GIB


@pytest.mark.parametrize(("args", "message"), [
    (("--gpu-memory", "48"), "--gpu-memory needs --compute-capability X.Y"),
    (("--compute-capability", "8.9"), "--compute-capability describes a card together with --gpu-memory"),
    (("--gpu-memory", "48", "--compute-capability", "eight"), "compute capability like"),
])
def test_an_incomplete_card_is_a_usage_error(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["fit", "--profile", "dual-3090", *args])
    assert result.exit_code == 2 or getattr(result.exception, "exit_code", None) == 2
    assert message in (result.output + str(result.exception))


def test_unknown_size_of_a_known_card_suggests_the_variant_flags() -> None:
    from launcher.errors import ProfileError
    from launcher.hardware.catalog import lookup

    with pytest.raises(ProfileError) as exc:
        lookup("RTX 4090 96GB")
    assert "--gpu 'RTX 4090' --gpu-memory 96" in str(exc.value)
    assert "--gpu-memory GIB --compute-capability X.Y" in str(exc.value)


# ------------------------------------------------------------------ the memory bar


@pytest.mark.parametrize(("profile", "gpu"), [("dual-3090", "RTX 3090"), ("tp4", "H200"), ("tp8", "A100-80GB")])
def test_memory_bar_is_proportional_and_its_legend_is_the_terms(profile: str, gpu: str) -> None:
    from launcher.fit.estimate import BAR_WIDTH, GIB, bar_parts, memory_bar
    from launcher.fit.fit_profile import fit_profile

    result = fit_profile(resolve_profile(profile), gpu)
    bar_line, legend = memory_bar(result)
    bar = bar_line.split("[", 1)[1].split("]", 1)[0]
    assert len(bar) == BAR_WIDTH
    parts = dict(bar_parts(result))
    total = result.inputs.total_memory_bytes
    assert sum(parts.values()) == total
    for role, letter in (("weights", "W"), ("activations", "A"), ("graphs", "G"), ("kv", "K"), ("free", ".")):
        assert abs(bar.count(letter) - parts[role] / total * BAR_WIDTH) < 1.0, (role, bar)
    assert f"W weights {result.weights.bytes / GIB:.2f}" in legend and f"K KV cache {result.kv_available.bytes / GIB:.2f}" in legend
    assert re.fullmatch(r"W*A*G*K*\.*", bar)  # in memory order, left to right


def resolve_profile(name: str):  # type: ignore[no-untyped-def]
    from launcher.profile.load import resolve

    return resolve(name, environ={}).profile


def test_fit_text_shows_the_bar_next_to_the_numbers() -> None:
    text = fit("--profile", "dual-3090", "--gpu", "RTX 3090")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  memory per GPU ["))
    assert lines[at + 1].strip().startswith("W weights") and lines[at + 3].lstrip().startswith("term")
