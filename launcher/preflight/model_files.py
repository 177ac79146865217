"""Model files and disk: is the checkpoint already here, is there room to download it, may vLLM download it.

`gather()` and `capture()` are the only I/O (they read the Hugging Face cache or a local directory and
the file system's free space into an `inventory.Storage` snapshot); `model_checks()` is pure over that
snapshot, so a snapshot captured on a GPU host (`launcher gpus --json`) is checked anywhere.

How vLLM finds weights (huggingface_hub's cache layout, which vLLM uses for a model id): the hub cache is
HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub
(vLLM's `--download-dir` replaces it); a model lives in `models--ORG--NAME/snapshots/<commit>/`, the commit
named by `refs/<revision>` (main by default), its files symlinks into `blobs/`, an interrupted download
leaving `blobs/*.incomplete`. A local directory is used as it is. The safetensors files a checkpoint
needs are the values of `model.safetensors.index.json`'s `weight_map` (or one `model.safetensors`).
HF_HUB_OFFLINE is true for 1/ON/YES/TRUE (huggingface_hub's own test); offline, a model missing from
the cache makes vLLM stop at start instead of downloading.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

from launcher.hardware.inventory import CachedModel, Storage
from launcher.model.weights import INDEX_NAME, SINGLE_FILE, hf_hub_cache
from launcher.preflight.checks import CheckResult

if TYPE_CHECKING:
    from launcher.hardware.inventory import Inventory
    from launcher.preflight.checks import Report
    from launcher.profile.schema import Profile

GB = 10**9
# Free space kept beyond the download itself: 5 % of it, at least 2 GB (logs, compile caches, the OS).
DISK_MARGIN_FRACTION = 0.05
DISK_MARGIN_MIN = 2 * GB
CACHE_VARIABLES = ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_true(value: Optional[str]) -> bool:
    """huggingface_hub's reading of a boolean variable (constants._is_true)."""
    return value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE")


def download_command(model: str, revision: Optional[str] = None) -> str:
    """The command that fetches a model into the cache vLLM reads (huggingface_hub's `hf`, 1.0 and later)."""
    return f"hf download {model}" + (f" --revision {revision}" if revision else "")


def is_local(name: str) -> bool:
    """A local path rather than a Hugging Face id (vLLM uses an existing directory as it is)."""
    return name.startswith(("/", ".", "~")) or name.count("/") != 1


# ------------------------------------------------------------------------ I/O: the snapshot


def _weight_files(directory: Path) -> tuple[Optional[set[str]], Optional[int]]:
    """(the safetensors files the checkpoint needs, their bytes per the index), or (None, None) without weights metadata."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            files = {str(f) for f in (data.get("weight_map") or {}).values()}
            total = data.get("metadata", {}).get("total_size")
            # 1e400 reads as Infinity and NaN is a float too: neither is a size
            sized = isinstance(total, (int, float)) and not isinstance(total, bool) and math.isfinite(total) and 0 <= total < 2**63
            return files, int(total) if sized else None
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            return None, None
    if (directory / SINGLE_FILE).is_file():
        return {SINGLE_FILE}, None
    return None, None


def inspect_directory(name: str, kind: str, directory: Optional[Path], unfinished: int = 0, partial_bytes: int = 0) -> CachedModel:
    """One checkpoint directory: complete when every weight file the index names is a readable file."""
    if directory is None or not directory.is_dir():
        return CachedModel(name=name, kind=kind, state="absent", location=str(directory) if directory else None,  # type: ignore[arg-type]
                           present_bytes=partial_bytes, unfinished_downloads=unfinished)
    files, expected = _weight_files(directory)
    if not files:
        any_weights = sorted(p.name for p in directory.glob("*.safetensors"))
        return CachedModel(name=name, kind=kind, state="partial" if any_weights else "absent", location=str(directory),  # type: ignore[arg-type]
                           present_bytes=partial_bytes, missing=(INDEX_NAME,), unfinished_downloads=unfinished)
    present = [f for f in sorted(files) if (directory / f).is_file()]  # a symlink into blobs/ counts once its blob exists
    missing = tuple(f for f in sorted(files) if f not in present)
    size = sum((directory / f).stat().st_size for f in present)
    state = "complete" if not missing else ("partial" if present or partial_bytes else "absent")
    return CachedModel(name=name, kind=kind, state=state, location=str(directory), present_bytes=size + partial_bytes,  # type: ignore[arg-type]
                       expected_bytes=expected, missing=missing, unfinished_downloads=unfinished)


def _hub_entry(cache: Path, model: str, revision: Optional[str]) -> CachedModel:
    org, _, repo_name = model.partition("/")
    repo = cache / f"models--{org}--{repo_name}"
    blobs = list((repo / "blobs").glob("*.incomplete")) if (repo / "blobs").is_dir() else []
    unfinished_bytes = sum(b.stat().st_size for b in blobs)
    snapshot: Optional[Path] = None
    wanted = revision or "main"
    if _COMMIT.match(wanted):
        snapshot = repo / "snapshots" / wanted
    elif (repo / "refs" / wanted).is_file():
        snapshot = repo / "snapshots" / (repo / "refs" / wanted).read_text(encoding="utf-8").strip()
    return inspect_directory(model, "hub", snapshot, len(blobs), unfinished_bytes)


def _disk(path: Path) -> tuple[Optional[int], Optional[int]]:
    """(free, total) bytes of the file system that holds `path` (or would: its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None, None
    return usage.free, usage.total


def cache_dir(environ: Mapping[str, str], download_dir: Optional[str] = None) -> Path:
    """The hub cache vLLM reads for a model id (vLLM's `--download-dir` replaces it)."""
    return Path(download_dir).expanduser() if download_dir else hf_hub_cache(environ)


def gather(model: str, environ: Mapping[str, str], revision: Optional[str] = None, download_dir: Optional[str] = None) -> Storage:
    """This machine, for one model: the cache (or local path), the disk under it, offline mode (the only I/O)."""
    cache = cache_dir(environ, download_dir)
    if is_local(model):
        entry = inspect_directory(model, "local", Path(model).expanduser())
    else:
        entry = _hub_entry(cache, model, revision)
    free, total = _disk(cache)
    return Storage(hf_hub_cache=str(cache), disk_free_bytes=free, disk_total_bytes=total,
                   hf_hub_offline=is_true(environ.get("HF_HUB_OFFLINE")), models=(entry,))


def capture(environ: Mapping[str, str]) -> Storage:
    """Every model in this machine's hub cache, for an inventory (`launcher gpus --json`)."""
    cache = cache_dir(environ)
    models = []
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*--*")):
            org, _, name = repo.name[len("models--"):].partition("--")
            models.append(_hub_entry(cache, f"{org}/{name}", None))
    free, total = _disk(cache)
    return Storage(hf_hub_cache=str(cache), disk_free_bytes=free, disk_total_bytes=total,
                   hf_hub_offline=is_true(environ.get("HF_HUB_OFFLINE")), models=tuple(models))


def profile_environment(profile: "Profile", environ: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM starts in: this one, then the profile's own `env` on top."""
    return {**environ, **profile.env}


def gather_for(profile: "Profile", environ: Optional[Mapping[str, str]] = None) -> Storage:
    """gather() for a profile's model, in the environment vLLM would get."""
    env = profile_environment(profile, os.environ if environ is None else environ)
    return gather(profile.model.name, env, profile.model.revision, _download_dir(profile))


def _extra_value(profile: "Profile", flag: str) -> Optional[str]:
    """The value of vLLM flag `--a-b` (also `--a_b`, `--a-b=V`) among the profile's extra args; the last one wins, as in argparse."""
    args = list(profile.extra_args)
    names = (flag, "--" + flag[2:].replace("-", "_"))
    found = None
    for i, token in enumerate(args):
        name, eq, value = token.partition("=")
        if name in names and eq:
            found = value
        elif token in names and i + 1 < len(args):
            found = args[i + 1]
    return found


def _download_dir(profile: "Profile") -> Optional[str]:
    """vLLM's --download-dir among the profile's extra args (it replaces the hub cache for the weights)."""
    return _extra_value(profile, "--download-dir")


def dummy_weights(profile: "Profile") -> bool:
    """`--load-format dummy`: vLLM allocates random weights and reads no weight file
    (vllm/model_executor/model_loader/dummy_loader.py::DummyModelLoader.download_model is a no-op; the
    config and tokenizer are still read)."""
    return _extra_value(profile, "--load-format") == "dummy"


# ------------------------------------------------------------------------ pure: the checks


def _size_text(n: int) -> str:
    return f"{n / GB:.1f} GB"


def expected_download(profile: "Profile", entry: Optional[CachedModel]) -> Optional[int]:
    """Bytes still to download: the index's total (else the shipped facts' size) minus what is on disk."""
    from launcher.model.facts import facts_for, is_known

    total = entry.expected_bytes if entry is not None else None
    if total is None and is_known(profile.facts_key):
        facts = facts_for(profile.facts_key)
        total = facts.weights_main_bytes + facts.weights_mtp_bytes
    if total is None:
        return None
    return max(0, total - (entry.present_bytes if entry is not None else 0))


def model_checks(profile: "Profile", storage: Optional[Storage], skip_reason: str = "", where: str = "here") -> tuple[CheckResult, ...]:
    """`model-files` and `disk` for a profile, from a snapshot (None: both skip, with `skip_reason`)."""
    if profile.hardware.device == "cpu":
        return ()
    if storage is None:
        why = skip_reason or "no model cache snapshot"
        return (CheckResult("model-files", "skip", why), CheckResult("disk", "skip", "not recorded either (see model-files)"))
    name = profile.model.name
    entry = storage.model(name)
    local = is_local(name)
    if entry is None and local:
        why = (f"{name} is a local path; {where} records the Hugging Face cache only: run `launcher check` on the GPU host "
               "to check the path")
        return (CheckResult("model-files", "skip", why), CheckResult("disk", "skip", why))
    mismatch = _cache_mismatch(profile, storage)
    if mismatch:
        return (CheckResult("model-files", "skip", mismatch), CheckResult("disk", "skip", mismatch))
    offline, origin = _offline(profile, storage)
    if dummy_weights(profile):
        return _dummy_checks(entry, name, local, offline, origin)
    files = _local_check(entry, name) if local else _hub_check(entry, name, profile.model.revision, storage, offline, origin)
    return files, _disk_check(profile, entry, storage, offline, local)


def _dummy_checks(entry: Optional[CachedModel], name: str, local: bool, offline: bool, origin: str) -> tuple[CheckResult, CheckResult]:
    """--load-format dummy: only config.json and the tokenizer are read, so missing weight files are no failure."""
    disk = CheckResult("disk", "skip", "--load-format dummy: no weights are downloaded")
    if local and (entry is None or (entry.state == "absent" and not entry.missing)):
        return _local_check(entry, name), disk  # no directory at all: vLLM still needs its config.json
    if not local and (entry is None or entry.state == "absent") and offline:
        return CheckResult(
            "model-files", "fail",
            f"{name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set ({origin}): with --load-format dummy vLLM "
            "still reads config.json and the tokenizer, and may not download them",
            fix=f"download them where there is network (`{download_command(name)} config.json`), or unset HF_HUB_OFFLINE",
        ), disk
    return CheckResult("model-files", "pass",
                       f"{name}: --load-format dummy: vLLM allocates random weights and reads only the config and tokenizer"), disk


def _cache_mismatch(profile: "Profile", storage: Storage) -> str:
    """A profile that moves the cache (its env or download_dir) away from the one a snapshot recorded."""
    moved = [k for k in CACHE_VARIABLES if k in profile.env] + (["--download-dir"] if _download_dir(profile) else [])
    if not moved or str(cache_dir(profile.env, _download_dir(profile))) == storage.hf_hub_cache:
        return ""
    return (f"the profile sets {', '.join(moved)}, so vLLM reads another cache than the recorded {storage.hf_hub_cache}: "
            "check on the GPU host")


def _offline(profile: "Profile", storage: Storage) -> tuple[bool, str]:
    if "HF_HUB_OFFLINE" in profile.env:
        return is_true(profile.env["HF_HUB_OFFLINE"]), "the profile's env"
    return storage.hf_hub_offline, "the environment"


def _local_check(entry: Optional[CachedModel], name: str) -> CheckResult:
    if entry is None or (entry.state == "absent" and not entry.missing):  # no such directory
        return CheckResult(
            "model-files", "fail",
            f"{name} does not exist here; vLLM would take it for a Hugging Face id and stop",
            fix="copy the checkpoint there, or set model.name to its Hugging Face id",
        )
    if entry.state == "complete":
        return CheckResult("model-files", "pass", f"{name}: every weight file the index names is there ({_size_text(entry.present_bytes)})")
    missing = ", ".join(entry.missing[:3]) + (f" and {len(entry.missing) - 3} more" if len(entry.missing) > 3 else "")
    return CheckResult(
        "model-files", "fail",
        f"{name} is incomplete: missing {missing}; vLLM stops when it loads the weights",
        fix=f"copy the missing files into {name} (the index {INDEX_NAME} names every weight file)",
    )


def _hub_check(entry: Optional[CachedModel], name: str, revision: Optional[str], storage: Storage, offline: bool, origin: str) -> CheckResult:
    state = entry.state if entry is not None else "absent"
    if state == "complete":
        assert entry is not None
        return CheckResult("model-files", "pass",
                           f"{name} is in the Hugging Face cache: {entry.location} ({_size_text(entry.present_bytes)})")
    have = entry.present_bytes if entry is not None else 0
    what = "not downloaded yet" if state == "absent" else f"only partly downloaded ({_size_text(have)} on disk"
    if state != "absent":
        n = len(entry.missing) if entry is not None else 0
        what += f", {n} weight file{'s' * (n != 1)} missing)"
    where = f"the Hugging Face cache {storage.hf_hub_cache}"
    get = download_command(name, revision)
    if offline:
        return CheckResult(
            "model-files", "fail",
            f"{name} is {what} in {where}, and HF_HUB_OFFLINE is set ({origin}): vLLM may not download it and stops at start",
            fix=f"download it where there is network (`{get}`, then copy the cache here), or unset HF_HUB_OFFLINE",
        )
    return CheckResult(
        "model-files", "warn",
        f"{name} is {what} in {where}: vLLM downloads it at start (about 34 GB; the start waits for it)",
        fix=f"download it first: `{get}` (same HF_HOME / HF_HUB_CACHE as vLLM), so the start does not wait",
    )


def _disk_check(profile: "Profile", entry: Optional[CachedModel], storage: Storage, offline: bool, local: bool) -> CheckResult:
    free = storage.disk_free_bytes
    if local:
        return CheckResult("disk", "skip", "a local model path: nothing is downloaded")
    if entry is not None and entry.state == "complete":
        room = f"; {_size_text(free)} free" if free is not None else ""
        return CheckResult("disk", "pass", f"nothing to download{room}")
    if offline:
        return CheckResult("disk", "skip", "HF_HUB_OFFLINE: nothing will be downloaded")
    need = expected_download(profile, entry)
    if need is None:
        return CheckResult("disk", "skip", f"the size of {profile.model.name} is unknown to launcher (no index in the cache yet)")
    if free is None:
        return CheckResult("disk", "skip", f"the free space under {storage.hf_hub_cache} could not be read")
    margin = max(DISK_MARGIN_MIN, int(DISK_MARGIN_FRACTION * need))
    text = f"the download needs about {_size_text(need)}; {_size_text(free)} free under {storage.hf_hub_cache}"
    fix = (f"free {_size_text(need + margin - free)} or more on that file system, or point HF_HOME (HF_HUB_CACHE) at a disk "
           "with room")
    if free < need:
        return CheckResult("disk", "fail", text + ": the download would fill the disk and vLLM stops", fix=fix)
    if free < need + margin:
        return CheckResult("disk", "warn", text + f": less than {_size_text(margin)} would be left", fix=fix)
    return CheckResult("disk", "pass", text)


def skip_reason_for(inventory_source: Optional[str]) -> str:
    """Why an inventory file without a storage snapshot cannot say anything about model files."""
    return (f"not recorded in {inventory_source or 'the inventory'} (an older capture): `launcher gpus --json` on the GPU host "
            "records its model cache and disk")


def with_model_checks(
    report: "Report",
    profile: "Profile",
    inventory: Optional["Inventory"] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> "Report":
    """The report plus `model-files` and `disk`: for this machine (inventory None or read live), else from the
    inventory file's snapshot (skipped, with why, when it has none)."""
    import dataclasses

    if profile.hardware.device == "cpu":
        return report
    if inventory is None or inventory.source == "nvml":
        results = model_checks(profile, gather_for(profile, environ))
    else:
        where = f"the inventory {inventory.source}" if inventory.source else "the inventory"
        why = (f"{inventory.described} has no disk or model cache: `launcher check` on the GPU host checks them" if inventory.described
               else skip_reason_for(inventory.source))
        results = model_checks(profile, inventory.storage, why, where)
    return dataclasses.replace(report, results=report.results + results)
