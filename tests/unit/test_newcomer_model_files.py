"""Model files and disk (issue 17): the weights in the Hugging Face cache or a local path, room for the download,
HF_HUB_OFFLINE. Snapshots are gathered from real temporary directories laid out as huggingface_hub lays them out;
the checks are pure over the snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import LauncherError
from launcher.hardware.inventory import CachedModel, Storage, load_inventory
from launcher.preflight import model_files
from launcher.preflight.model_files import capture, gather, gather_for, model_checks, with_model_checks
from launcher.profile.load import resolve
from tests.helpers import FIXTURES

MODEL = "havenoammo/Qwen3.6-27B-INT8-MTP"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GB = 10**9
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def hub_model(cache: Path, *, shards: tuple[str, ...] = SHARDS, present: tuple[str, ...] = SHARDS, incomplete: int = 0,
              ref: str = "main", shard_bytes: int = 1000) -> Path:
    """models--ORG--NAME as huggingface_hub writes it: blobs, a snapshot of symlinks, refs/<ref> naming the commit."""
    repo = cache / f"models--{MODEL.replace('/', '--')}"
    snap = repo / "snapshots" / COMMIT
    blobs = repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(COMMIT)
    files = {"config.json": b"{}", "model.safetensors.index.json": json.dumps({
        "metadata": {"total_size": len(shards) * shard_bytes},
        "weight_map": {f"layer{i}.weight": shard for i, shard in enumerate(shards)},
    }).encode()}
    files.update({shard: b"x" * shard_bytes for shard in shards})
    for i, (name, data) in enumerate(files.items()):
        blob = blobs / f"blob{i}"
        if name in shards and name not in present:
            (snap / name).symlink_to(f"../../blobs/blob{i}")  # a dangling link: the blob never arrived
            continue
        blob.write_bytes(data)
        (snap / name).symlink_to(f"../../blobs/blob{i}")
    for i in range(incomplete):
        (blobs / f"partial{i}.incomplete").write_bytes(b"y" * 300)
    return snap


def profile(*sets: str) -> Any:
    return resolve("dual-3090", sets=sets, environ={}).profile


def statuses(results: tuple[Any, ...]) -> dict[str, str]:
    return {r.id: r.status for r in results}


def storage(state: str = "absent", *, free: int | None = 500 * GB, offline: bool = False, present: int = 0,
            expected: int | None = None, name: str = MODEL) -> Storage:
    models = () if state == "absent" and not present else (
        CachedModel(name=name, state=state, present_bytes=present, expected_bytes=expected),)  # type: ignore[arg-type]
    return Storage(hf_hub_cache="/srv/hf/hub", disk_free_bytes=free, disk_total_bytes=2000 * GB, hf_hub_offline=offline, models=models)


# ------------------------------------------------------------------ gathering from real directories


def test_complete_snapshot_in_the_cache(tmp_path: Path) -> None:
    snap = hub_model(tmp_path / "hub")
    s = gather(MODEL, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    (entry,) = s.models
    assert entry.state == "complete" and entry.location == str(snap) and entry.present_bytes == 2000 and not entry.missing
    assert s.hf_hub_cache == str(tmp_path / "hub") and s.disk_free_bytes and s.disk_total_bytes
    assert statuses(model_checks(profile(), s)) == {"model-files": "pass", "disk": "pass"}


@pytest.mark.parametrize(("env", "where"), [
    ({"HF_HUB_CACHE": "{t}/a"}, "{t}/a"),
    ({"HF_HOME": "{t}/b"}, "{t}/b/hub"),
    ({"XDG_CACHE_HOME": "{t}/c"}, "{t}/c/huggingface/hub"),
    ({"HF_HOME": "{t}/b", "HF_HUB_CACHE": "{t}/a"}, "{t}/a"),
])
def test_cache_location_follows_huggingface_hub(tmp_path: Path, env: dict[str, str], where: str) -> None:
    env = {k: v.format(t=tmp_path) for k, v in env.items()}
    assert gather(MODEL, env).hf_hub_cache == where.format(t=tmp_path)


def test_a_dangling_shard_and_an_unfinished_download_are_partial(tmp_path: Path) -> None:
    hub_model(tmp_path, present=SHARDS[:1], incomplete=1)
    (entry,) = gather(MODEL, {"HF_HUB_CACHE": str(tmp_path)}).models
    assert entry.state == "partial" and entry.missing == (SHARDS[1],)
    assert entry.present_bytes == 1000 + 300 and entry.unfinished_downloads == 1 and entry.expected_bytes == 2000


def test_revision_reads_its_own_ref(tmp_path: Path) -> None:
    hub_model(tmp_path, ref="v2")
    assert gather(MODEL, {"HF_HUB_CACHE": str(tmp_path)}).models[0].state == "absent"  # refs/main is not there
    assert gather(MODEL, {"HF_HUB_CACHE": str(tmp_path)}, revision="v2").models[0].state == "complete"
    assert gather(MODEL, {"HF_HUB_CACHE": str(tmp_path)}, revision=COMMIT).models[0].state == "complete"


def test_free_disk_is_read_where_the_cache_will_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    class Usage:
        total, used, free = 1000, 400, 600

    def usage(path: Path) -> Usage:
        seen.append(Path(path))
        return Usage()

    monkeypatch.setattr(model_files.shutil, "disk_usage", usage)
    s = gather(MODEL, {"HF_HOME": str(tmp_path / "not" / "yet")})  # the cache does not exist yet: its nearest parent's disk
    assert (s.disk_free_bytes, s.disk_total_bytes) == (600, 1000) and seen == [tmp_path]


def test_offline_is_read_as_huggingface_hub_reads_it(tmp_path: Path) -> None:
    for value, offline in (("1", True), ("ON", True), ("yes", True), ("true", True), ("0", False), ("", False)):
        assert gather(MODEL, {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": value}).hf_hub_offline is offline


def test_gather_for_applies_the_profiles_env_on_top(tmp_path: Path) -> None:
    hub_model(tmp_path / "theirs")
    p = profile(f"env.HF_HUB_CACHE={tmp_path / 'theirs'}", "env.HF_HUB_OFFLINE=1")
    s = gather_for(p, {"HF_HUB_CACHE": str(tmp_path / "mine")})
    assert s.hf_hub_cache == str(tmp_path / "theirs") and s.hf_hub_offline and s.models[0].state == "complete"


def test_download_dir_in_extra_args_replaces_the_cache(tmp_path: Path) -> None:
    hub_model(tmp_path / "dl")
    p = resolve("dual-3090", extra_args=("--download-dir", str(tmp_path / "dl")), environ={}).profile
    assert gather_for(p, {}).models[0].state == "complete"


# ------------------------------------------------------------------ the verdicts (pure)


def test_not_downloaded_yet_is_a_warning_with_the_download_command() -> None:
    files, disk = model_checks(profile(), storage())
    assert files.status == "warn" and "not downloaded yet" in files.message and "vLLM downloads it at start" in files.message
    assert f"hf download {MODEL}" in (files.fix or "")
    assert disk.status == "pass" and "33.9 GB" in disk.message


def test_absent_and_offline_fails() -> None:
    files, disk = model_checks(profile(), storage(offline=True))
    assert files.status == "fail" and "HF_HUB_OFFLINE is set (the environment)" in files.message
    assert "unset HF_HUB_OFFLINE" in (files.fix or "") and disk.status == "skip"


def test_offline_from_the_profile_is_named_as_such() -> None:
    files, _ = model_checks(profile("env.HF_HUB_OFFLINE=1"), storage())
    assert files.status == "fail" and "(the profile's env)" in files.message
    files, _ = model_checks(profile("env.HF_HUB_OFFLINE=0"), storage(offline=True))
    assert files.status == "warn"  # the profile turns it off for vLLM


def test_complete_and_offline_passes() -> None:
    assert statuses(model_checks(profile(), storage("complete", offline=True, present=34 * GB))) == {"model-files": "pass", "disk": "pass"}


@pytest.mark.parametrize(("free", "status"), [(10 * GB, "fail"), (34 * GB, "warn"), (37 * GB, "pass"), (None, "skip")])
def test_disk_room_for_the_download(free: int | None, status: str) -> None:
    (_, disk) = model_checks(profile(), storage(free=free))
    assert disk.status == status
    if status in ("fail", "warn"):
        assert "HF_HOME" in (disk.fix or "")


def test_a_partial_download_needs_only_the_rest() -> None:
    (_, disk) = model_checks(profile(), storage("partial", free=10 * GB, present=30 * GB, expected=34 * GB))
    assert disk.status == "pass" and "about 4.0 GB" in disk.message


def test_local_path_missing_incomplete_complete(tmp_path: Path) -> None:
    gone = profile(f"model.name={tmp_path / 'nowhere'}", "model.facts=" + MODEL)
    files, disk = model_checks(gone, gather_for(gone, {}))
    assert files.status == "fail" and "does not exist" in files.message and disk.status == "skip"

    snap = hub_model(tmp_path / "hub", present=SHARDS[:1])
    local = profile(f"model.name={snap}", "model.facts=" + MODEL)
    files, _ = model_checks(local, gather_for(local, {}))
    assert files.status == "fail" and SHARDS[1] in files.message

    whole = hub_model(tmp_path / "hub2")
    ok = profile(f"model.name={whole}", "model.facts=" + MODEL)
    assert model_checks(ok, gather_for(ok, {}))[0].status == "pass"


def test_dummy_load_format_needs_no_weight_files(tmp_path: Path) -> None:
    """The full-shape GPU runs serve a weightless directory with --load-format dummy: vLLM reads no weight file there."""
    snap = hub_model(tmp_path / "hub", present=())  # config and index, no shard at all
    for dummy in (("--load-format", "dummy"), ("--load_format=dummy",)):
        p = resolve("dual-3090", sets=(f"model.name={snap}", "model.facts=" + MODEL), extra_args=dummy, environ={}).profile
        files, disk = model_checks(p, gather_for(p, {}))
        assert (files.status, disk.status) == ("pass", "skip"), files.message
        assert "--load-format dummy" in files.message
    real = resolve("dual-3090", sets=(f"model.name={snap}", "model.facts=" + MODEL), extra_args=("--load-format", "safetensors"),
                   environ={}).profile
    assert model_checks(real, gather_for(real, {}))[0].status == "fail"
    gone = resolve("dual-3090", sets=(f"model.name={tmp_path / 'nowhere'}", "model.facts=" + MODEL),
                   extra_args=("--load-format", "dummy"), environ={}).profile
    assert model_checks(gone, gather_for(gone, {}))[0].status == "fail"  # vLLM still needs the config


def test_dummy_load_format_from_the_hub_needs_the_config_when_offline() -> None:
    p = resolve("dual-3090", extra_args=("--load-format", "dummy"), environ={}).profile
    assert statuses(model_checks(p, storage())) == {"model-files": "pass", "disk": "skip"}
    files, _ = model_checks(p, storage(offline=True))
    assert files.status == "fail" and "config.json" in files.message


def test_cpu_profiles_get_no_model_checks() -> None:
    assert model_checks(resolve("cpu-tiny", environ={}).profile, storage()) == ()


# ------------------------------------------------------------------ an inventory from another machine


def inventory_with(tmp_path: Path, snapshot: Storage | None) -> Path:
    data = json.loads((FIXTURES / "inventories" / "rtx3090x2-idle.json").read_text())
    if snapshot is not None:
        data["storage"] = snapshot.model_dump(mode="json", exclude_none=True)
    path = tmp_path / "host.json"
    path.write_text(json.dumps(data))
    return path


def test_an_old_inventory_loads_and_the_model_checks_skip_saying_why(tmp_path: Path) -> None:
    inv = load_inventory(inventory_with(tmp_path, None))
    assert inv.storage is None
    report = with_model_checks(_report(inv), profile(), inv)
    files, disk = report.results[-2:]
    assert (files.status, disk.status) == ("skip", "skip") and "launcher gpus --json" in files.message


def test_a_captured_inventory_describes_that_machine(tmp_path: Path) -> None:
    inv = load_inventory(inventory_with(tmp_path, storage("complete", present=34 * GB)))
    assert inv.storage is not None and inv.storage.model(MODEL) is not None
    report = with_model_checks(_report(inv), profile(), inv)
    assert [(r.id, r.status) for r in report.results[-2:]] == [("model-files", "pass"), ("disk", "pass")]
    offline = load_inventory(inventory_with(tmp_path, storage(offline=True)))
    assert with_model_checks(_report(offline), profile(), offline).results[-2].status == "fail"


def test_a_profile_that_moves_the_cache_cannot_be_judged_from_a_capture(tmp_path: Path) -> None:
    inv = load_inventory(inventory_with(tmp_path, storage("complete", present=34 * GB)))
    files, _ = with_model_checks(_report(inv), profile("env.HF_HOME=/data/hf"), inv).results[-2:]
    assert files.status == "skip" and "HF_HOME" in files.message
    same, _ = with_model_checks(_report(inv), profile("env.HF_HUB_CACHE=/srv/hf/hub"), inv).results[-2:]
    assert same.status == "pass"


def test_a_local_path_is_not_in_a_capture(tmp_path: Path) -> None:
    inv = load_inventory(inventory_with(tmp_path, storage("complete", present=34 * GB)))
    files, _ = with_model_checks(_report(inv), profile("model.name=/models/qwen", "model.facts=" + MODEL), inv).results[-2:]
    assert files.status == "skip" and "local path" in files.message


def _report(inv: Any) -> Any:
    from launcher.preflight.checks import Report

    return Report(())


def test_capture_lists_every_model_of_the_cache(tmp_path: Path) -> None:
    hub_model(tmp_path)
    other = tmp_path / "models--org--tiny" / "snapshots"
    other.mkdir(parents=True)
    s = capture({"HF_HUB_CACHE": str(tmp_path)})
    assert {(m.name, m.state) for m in s.models} == {(MODEL, "complete"), ("org/tiny", "absent")}


# ------------------------------------------------------------------ through the commands


def run(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(cli, list(args), **kwargs)


def live(name: str = "rtx3090x2-idle") -> Any:
    from launcher.live.runtime import Runtime

    inventory = load_inventory(FIXTURES / "inventories" / f"{name}.json")
    calls: list[Any] = []
    return Runtime(probe=lambda: inventory, exec_fn=calls.append), calls


def test_gpus_json_records_the_cache_and_check_reads_it_elsewhere(tmp_path: Path) -> None:
    hub_model(tmp_path / "hub")
    runtime, _ = live()
    out = run("gpus", "--json", obj=runtime, env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["storage"]["hf_hub_cache"] == str(tmp_path / "hub") and data["storage"]["hf_hub_offline"] is True
    assert data["storage"]["models"][0]["name"] == MODEL and data["storage"]["models"][0]["state"] == "complete"
    path = tmp_path / "host.json"
    path.write_text(out.stdout)
    checked = run("check", "--profile", "dual-3090", "--inventory", str(path), env={"HF_HUB_CACHE": str(tmp_path / "empty")})
    assert "PASS  model-files" in checked.stdout  # the captured host's cache, not this shell's
    table = run("gpus", "--inventory", str(path))
    assert f"model cache: {tmp_path / 'hub'}" in table.stdout and "HF_HUB_OFFLINE set" in table.stdout


def test_serve_refuses_when_offline_and_the_model_is_absent(tmp_path: Path) -> None:
    runtime, calls = live()
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = run("serve", "--profile", "dual-3090", "--set", "engine.max_model_len=131072", obj=runtime, env=env)
    assert isinstance(result.exception, LauncherError) and result.exception.exit_code == 3 and not calls
    assert "FAIL  model-files" in result.stderr and "model-files" in str(result.exception)
    anyway = run("serve", "--profile", "dual-3090", "--skip-checks", obj=runtime, env=env)
    assert anyway.exit_code == 0 and len(calls) == 1


def test_serve_warns_but_starts_when_vllm_may_download(tmp_path: Path) -> None:
    runtime, calls = live()
    result = run("serve", "--profile", "dual-3090", "--set", "engine.max_model_len=131072", obj=runtime,
                 env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": None})
    assert result.exit_code == 0 and len(calls) == 1
    assert "WARN  model-files" in result.stderr and "hf download" in result.stderr


def test_check_live_reads_this_machines_cache(tmp_path: Path) -> None:
    hub_model(tmp_path)
    runtime, _ = live()
    result = run("check", "--profile", "dual-3090", obj=runtime, env={"HF_HUB_CACHE": str(tmp_path)})
    assert "PASS  model-files" in result.stdout and "PASS  disk" in result.stdout
    data = json.loads(run("check", "--profile", "dual-3090", "--json", obj=runtime, env={"HF_HUB_CACHE": str(tmp_path)}).stdout)
    assert {r["id"]: r["status"] for r in data["results"]}["model-files"] == "pass"


def test_no_real_home_is_read(tmp_path: Path) -> None:
    """The gather reads only where the environment points (tests never touch ~/.cache/huggingface)."""
    s = gather(MODEL, {"HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")})
    assert s.hf_hub_cache.startswith(str(tmp_path)) and os.path.commonpath([s.hf_hub_cache, str(tmp_path)]) == str(tmp_path)
