"""What a new user with 2 x RTX 3090 still tripped over (issue 30, "What a new user with 2 x 3090 still trips over")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.profile.load import resolve, shipped_profiles_dir

# ------------------------------------------------------------------ 3: a user profile extending the shipped one of its name


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_user_profile_shadowing_a_shipped_name_extends_the_shipped_one(tmp_path: Path) -> None:
    mine = _write(tmp_path / "my" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_model_len: 131072\n")
    by_name = resolve("dual-3090", profiles_dirs=[str(mine.parent)], environ={})
    assert by_name.path == mine
    assert by_name.profile.engine.max_model_len == 131072  # the one value changed
    assert by_name.profile.parallel.tp == 2 and by_name.profile.engine.attention_backend == "FLASHINFER"  # the rest shipped
    sources = [layer.source for layer in by_name.layers]
    assert str(shipped_profiles_dir() / "dual-3090.yaml") in sources and str(mine) in sources
    by_path = resolve(str(mine), profiles_dirs=[str(mine.parent)], environ={})
    assert by_path.profile.engine.max_model_len == 131072


def test_two_user_directories_each_extend_the_next_of_the_name(tmp_path: Path) -> None:
    a = _write(tmp_path / "a" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_num_seqs: 8\n")
    b = _write(tmp_path / "b" / "dual-3090.yaml", "extends: dual-3090\nengine:\n  max_model_len: 65536\n")
    p = resolve("dual-3090", profiles_dirs=[str(a.parent), str(b.parent)], environ={}).profile
    assert (p.engine.max_num_seqs, p.engine.max_model_len, p.parallel.tp) == (8, 65536, 2)


def test_a_name_with_no_further_profile_is_still_a_cycle(tmp_path: Path) -> None:
    lone = _write(tmp_path / "u" / "lonely.yaml", "extends: lonely\n")
    with pytest.raises(ProfileError, match="`extends` cycle"):
        resolve("lonely", profiles_dirs=[str(lone.parent)], environ={})


# ------------------------------------------------------------------ 4: fit and check say what they mean, once

INVENTORIES = Path(__file__).resolve().parent.parent / "fixtures" / "inventories"


def _cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process as `launcher.cli.main` ends it: (exit code, stdout + the error line on stderr)."""
    from click.testing import CliRunner

    from launcher.cli import cli
    from launcher.errors import LauncherError

    result = CliRunner().invoke(cli, list(args))
    out = result.stdout + result.stderr
    code = result.exit_code
    if isinstance(result.exception, LauncherError):
        out += f"launcher: error: {result.exception}\n"
        code = result.exception.exit_code
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return code, out


def test_the_cuda_graph_line_carries_its_verdict() -> None:
    code, out = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090")
    assert code == 3
    line = next(x for x in out.splitlines() if "while vLLM measures its CUDA graphs" in x)
    peak, low, high = (float(v) for v in re.findall(r"= ([\d.]+) GiB of ([\d.]+)-([\d.]+) GiB free", line)[0])
    assert peak > high  # 24.25 GiB needed, at most 23.34 free: the line must say what that means
    assert re.search(r"GiB free: (marginal|does-not-fit): more than is free", line), line
    _, small = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", "--set", "engine.max_num_seqs=5")
    assert re.search(r"throw-away KV blocks \+ graphs = [\d.]+ GiB of [\d.]+-[\d.]+ GiB free: fits$", small, re.M)


def test_fewer_sequences_are_offered_with_their_cost_after_the_shorter_context() -> None:
    from launcher.fit.fit_profile import fit_profile, fix_hint

    profile = resolve("dual-3090", environ={}).profile
    hint = fix_hint(profile, fit_profile(profile, "RTX 3090"))
    first, second = hint.split("; or ")[:2]
    assert re.fullmatch(r"--set engine\.max_model_len=\d+", first)
    m = re.fullmatch(r"to keep 262,144 tokens, --set engine\.max_num_seqs=(\d+) \(at most (\d+) requests at once instead of 256; "
                     r"room for ([\d.]+) at full length\)", second)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) < 256 and float(m.group(3)) >= 1


def test_check_prints_the_failure_reason_once_and_calls_a_warning_a_warning() -> None:
    code, out = _cli("check", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "rtx3090x2-idle.json"))
    assert code == 3
    assert out.count("one 262,144-token request needs") == 1, out
    assert "launcher: error: profile dual-3090 cannot run here: kv-fit failed" in out
    fix = next(x for x in out.splitlines() if x.startswith("Fix all at once"))
    assert "still not passing" not in fix and fix.endswith("still warns: p2p (no profile value changes it)")
    assert "WARN  p2p" in out


# ------------------------------------------------------------------ 2: check and profiles take --gpu MODEL --count N


def test_check_on_two_3090s_from_the_table_agrees_with_fit_and_with_a_real_capture() -> None:
    import json

    code, out = _cli("check", "--profile", "dual-3090", "--gpu", "RTX 3090", "--count", "2", "--json")
    assert code == 3
    report = json.loads(out[: out.rindex("}") + 1])
    by_id = {r["id"]: r for r in report["results"]}
    assert by_id["kv-fit"]["status"] == "fail" and by_id["driver"]["status"] == "skip"
    assert by_id["p2p"]["status"] == "warn"  # GeForce: no P2P, so launcher adds NCCL_P2P_DISABLE=1 as on the real machine
    _, fit_out = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", "--json")
    fitted = json.loads(fit_out[: fit_out.rindex("}") + 1])
    assert by_id["kv-fit"]["data"]["max_model_len_fit"] == fitted["max_model_len_fit"]  # one estimate, one answer
    _, captured = _cli("check", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "rtx3090x2-idle.json"), "--json")
    real = {r["id"]: r for r in json.loads(captured[: captured.rindex("}") + 1])["results"]}
    assert {k: v["status"] for k, v in real.items() if k not in ("driver", "model-files", "disk")} == \
        {k: v["status"] for k, v in by_id.items() if k not in ("driver", "model-files", "disk")}
    # the count defaults to the profile's, and too few cards fail the count check
    code, text = _cli("check", "--profile", "dual-3090", "--gpu", "RTX 3090", "--count", "1")
    assert code == 3 and "FAIL  gpu-count" in text and "(--gpu: 1 x RTX 3090 from the GPU table, idle)" in text


def test_profiles_groups_by_two_3090s_from_the_table() -> None:
    import json

    code, out = _cli("profiles", "--gpu", "RTX 3090", "--count", "2", "--format", "json")
    assert code == 0
    groups = json.loads(out)
    assert "dual-3090" in [r["name"] for r in groups["smaller-context"]]
    assert "tp8" in [r["name"] for r in groups["not-runnable"]]
    code, out = _cli("profiles", "--gpu", "RTX 3090")
    assert code == 2 and "--count" in out


def test_the_inventory_schema_lists_the_p2p_values() -> None:
    import jsonschema

    from launcher.hardware.inventory import P2P_STATUSES, inventory_json_schema

    schema = inventory_json_schema()
    text = str(schema["$defs"]["Link"]["properties"]["p2p_read"])
    assert all(status in text for status in P2P_STATUSES)
    base = {"driver_version": "580.95.05", "cuda_driver_version": 13000, "gpus": []}
    jsonschema.validate({**base, "links": [{"gpus": [0, 1], "p2p_read": "error: lost"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "links": [{"gpus": [0, 1], "p2p_read": "yes"}]}, schema)


# ------------------------------------------------------------------ 5: requests at once at 32k, 64k, 128k


def _json(out: str) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(out[: out.rindex("}") + 1])


def test_fit_shows_requests_at_once_by_context_length_as_fit_itself_computes_them() -> None:
    _, out = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", "--json")
    rows = _json(out)["concurrency_by_length"]
    assert [r["max_model_len"] for r in rows] == [32768, 65536, 131072, 262144]
    for row in rows:  # each row is what `fit` says with max_model_len set to that length
        _, one = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090", "--json", "--set", f"engine.max_model_len={row['max_model_len']}")
        single = _json(one)
        assert row["concurrency"] == single["concurrency_at_max_len"] and row["verdict"] == single["kv_verdict"]
        assert row["requests_at_once"] == (0 if row["verdict"] == "does-not-fit" else min(int(row["concurrency"]), 256))
    assert rows[0]["requests_at_once"] > rows[2]["requests_at_once"] >= 1 and rows[3]["verdict"] == "does-not-fit"
    _, text = _cli("fit", "--profile", "dual-3090", "--gpu", "RTX 3090")
    table = text[text.index("requests at once by context length"):].splitlines()[2:6]
    assert [int(line.split()[0].replace(",", "")) for line in table] == [32768, 65536, 131072, 262144]


def test_check_shows_the_table_under_kv_fit() -> None:
    code, text = _cli("check", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "rtx3090x2-idle.json"))
    lines = text.splitlines()
    kv = next(i for i, line in enumerate(lines) if line.startswith("FAIL  kv-fit"))
    assert "requests at once by context length" in lines[kv + 2]
    assert lines[kv + 4].split()[:1] == ["32,768"] and lines[kv + 7].split()[-1] == "does-not-fit"
    _, out = _cli("check", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "rtx3090x2-idle.json"), "--json")
    assert [r["max_model_len"] for r in _json(out)["concurrency_by_length"]] == [32768, 65536, 131072, 262144]


# ------------------------------------------------------------------ 1: the note where the command is printed; no restart loop


def _invoke(*args: str, obj: object = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from launcher.cli import cli

    return CliRunner().invoke(cli, list(args), obj=obj, env=env)


def _largest_on_admitted_cards() -> int:
    """What the fit stage says for dual-3090 on the smallest cards its hardware block admits (not a constant)."""
    from launcher.fit.fit_profile import fit_profile
    from launcher.fit.lengths import smallest_admitted

    profile = resolve("dual-3090", environ={}).profile
    cards = smallest_admitted(profile)
    assert {"RTX 3090", "RTX 4090"} <= {m.key for m in cards}
    return min(fit_profile(profile, m).max_model_len_fit for m in cards)


@pytest.mark.parametrize("fmt", ["shell", "json", "env", "yaml", "compose", "k8s", "systemd"])
def test_render_of_dual_3090_says_its_context_does_not_fit_24_gb(fmt: str) -> None:
    import yaml

    result = _invoke("render", "--profile", "dual-3090", "--format", fmt)
    assert result.exit_code == 0, result.output
    largest = f"{_largest_on_admitted_cards():,}"
    note = next(line for line in result.stderr.splitlines() if "max_model_len 262,144 does not fit" in line)
    assert note.startswith("launcher: note: ") and f"the largest context that starts there is {largest}" in note
    assert "--set engine.max_model_len=" in note
    if fmt in ("compose", "k8s", "systemd"):  # the file itself carries it, as a comment
        first = result.stdout.splitlines()[0]
        assert first == "# " + note and f"is {largest}" in first
    if fmt in ("compose", "k8s"):
        assert list(yaml.safe_load_all(result.stdout))  # still YAML
    fits = _invoke("render", "--profile", "dual-3090", "--format", fmt, "--set", "engine.max_model_len=131072")
    assert fits.exit_code == 0 and "131,072 does not fit" not in fits.output and "launcher: note: max_model_len" not in fits.output


def test_render_with_an_inventory_names_its_gpus_and_a_big_machine_gets_no_note() -> None:
    small = _invoke("render", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "rtx3090x2-idle.json"))
    assert "does not fit the GPUs of" in small.stderr and "is 185,600" in small.stderr
    big = _invoke("render", "--profile", "dual-3090", "--inventory", str(INVENTORIES / "h200x2.json"))
    assert big.exit_code == 0 and "does not fit" not in big.stderr


def test_serve_dry_run_without_gpus_says_it_too() -> None:
    from launcher.errors import HardwareError
    from launcher.live.runtime import Runtime

    def no_nvml():  # type: ignore[no-untyped-def]
        raise HardwareError("NVML cannot be read")

    result = _invoke("serve", "--profile", "dual-3090", "--dry-run", obj=Runtime(probe=no_nvml, exec_fn=[].append))
    assert result.exit_code == 0 and "the GPU preflight could not run" in result.stderr
    assert f"the largest context that starts there is {_largest_on_admitted_cards():,}" in result.stderr


def test_the_unit_does_not_restart_on_a_failure_no_retry_heals() -> None:
    from launcher.hardware.inventory import load_inventory
    from launcher.live.runtime import Runtime

    unit = _invoke("render", "--profile", "dual-3090", "--format", "systemd").stdout
    directives = dict(line.split("=", 1) for line in unit.splitlines() if line and not line.startswith(("#", "[")))
    assert directives["RestartPreventExitStatus"].split() == ["2", "6"]
    assert "Environment=LAUNCHER_LASTING_FAILURE_EXIT=6" in unit.splitlines()
    env = {"LAUNCHER_LASTING_FAILURE_EXIT": "6"}  # as the unit runs `launcher serve`
    idle = load_inventory(INVENTORIES / "rtx3090x2-idle.json")
    calls: list = []  # type: ignore[type-arg]
    does_not_fit = _invoke("serve", "--profile", "dual-3090", obj=Runtime(probe=lambda: idle, exec_fn=calls.append), env=env)
    assert getattr(does_not_fit.exception, "exit_code", None) == 6 and not calls  # kv-fit: the same on every restart
    plain = _invoke("serve", "--profile", "dual-3090", obj=Runtime(probe=lambda: idle, exec_fn=calls.append))
    assert getattr(plain.exception, "exit_code", None) == 3  # outside the unit exit 3 stays
    busy = load_inventory(INVENTORIES / "rtx3090x2-desktop.json")  # Xorg holds memory: only memory-free fails
    held = _invoke("serve", "--profile", "dual-3090", "--set", "engine.max_model_len=65536", "--set", "engine.gpu_memory_utilization=0.97",
                   obj=Runtime(probe=lambda: busy, exec_fn=calls.append), env=env)
    assert "FAIL  memory-free" in held.stderr and "FAIL  kv-fit" not in held.stderr, held.stderr
    assert getattr(held.exception, "exit_code", None) == 3  # another process may let go: systemd retries
