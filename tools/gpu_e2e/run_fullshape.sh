#!/usr/bin/env bash
# The GPU side of the full-shape runs (issues "Measure, don't estimate" and "launcher bench"):
# vLLM 0.25.1 on 2 x H200 serving the real Qwen3.6-27B-INT8-MTP shape with dummy weights, started
# through `launcher serve` with four budgets, with vLLM's own memory accounting (DEBUG lines)
# and NVML recorded, plus `vllm bench serve` speed runs with MTP k=2 and MTP off.
#
# Here, once: python3 tools/gpu_e2e/build_parts.py; then tools/gpu_e2e/stage_fullshape.sh DEST
# copies what travels into DEST/.fullshape and DEST/.gpu-e2e (DEST = the checkout the device
# tool sends). There, one machine (kind nvidia-h200-x2), calls back to back:
#   part 1 carries .fullshape, .gpu-e2e/p1, .gpu-e2e/kit: starts the unpack/install in the
#          background, then measures CUDA context + NCCL + cuBLAS at TP1 and TP2 (idle GPUs)
#   part K carries .gpu-e2e/pK (K = 2 ... N-1)
#   go N   carries the last part: waits for the install, starts the driver in its own session
#          and exports results while the call lasts
#   collect  waits for the driver and exports results again (until DONE)
# The driver (mode `drive`), one start at a time, GPUs idle in between:
#   a  fullshape-24gb-tp2-mtp   u for a 3090's budget (fullshape_budget.py), --smoke
#   c  fullshape-h200-tp2-mtp   u 0.95; then the MTP k=2 speed runs (bench label mtp-k2)
#   b  fullshape-48gb-tp1       u for an RTX A6000's budget, GPU 0 only
#   d  fullshape-h200-tp2-nomtp u 0.95, MTP off; then the MTP-off speed runs (mtp-off)
#   e  fullshape-48gb-tp1-nopc  (b) with prefix caching off        } out-of-sample checks of the
#   f  fullshape-h200-tp2-mtp-m2048 (c) with 2048 batched tokens    } estimator (FS_RUNS="e f")
#   tune  one GPU (any card, GPU 0): `launcher tune` of fullshape-1gpu-tp1-card over FlashInfer and
#         FLASH_ATTN x MTP off / k=2 (the first start is cold), then the first candidate again with
#         the caches kept (the warm restart); $OUT gets tune.tgz (issues "decode path / tune" and
#         "ready means fast"; evidence in tests/fixtures/gpu-tune/)
#   m1, m3  memory-only starts of the one-GPU profile (FLASH_ATTN; MTP k=1, 4 sequences, 1024
#         batched tokens / MTP k=3, 64 sequences, 16384 batched tokens): out-of-sample starts of the
#         memory estimate, predicted before they run (tests/fixtures/gpu-tune/predictions.txt)
# Each start: nvidia-smi before / at ready, a 0.5 s NVML timeline, the whole serve log, /metrics.
# $OUT gets at most 8 files: common.tgz (driver log, inventory, budgets, context measurement)
# and one NAME.tgz per finished start or bench label.
set -uo pipefail
MODE=${1:?usage: run_fullshape.sh part K | go N | collect | drive}
FS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)   # .fullshape
REPO=$(cd "$FS/.." && pwd)
WH=${FS_WH:-/tmp/wh} SITE=${FS_SITE:-/tmp/site} RES=${FS_RES:-/tmp/fs}
MODEL_DIR=/tmp/qwen3.6-27b-int8-mtp-shape URL=http://127.0.0.1:8000
CALL_BUDGET_S=${CALL_BUDGET_S:-560}
RUNS=${FS_RUNS:-"a c b d"}
T_CALL=$(date +%s)
mkdir -p "$WH" "$RES/out" "$RES/runs" "$RES/bench"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log() { echo "[$(date -u +%T)] $*" >> "$RES/driver.log"; [ "$MODE" = drive ] || echo "[$(date -u +%T)] $*"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
fetch() { python3 -c "import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())" "$1"; }
# shellcheck source=tools/gpu_e2e/common.sh
. "$FS/tools/gpu_e2e/common.sh"
nvsmi() { nvidia-smi --query-gpu=index,name,memory.total,memory.reserved,memory.used,memory.free --format=csv,nounits; }

wait_idle() {  # until every GPU's NVML used memory is under 1 GiB (or $1 seconds)
  local deadline=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | awk '$1 > 1024 { busy = 1 } END { exit busy }' && return 0
    sleep 1
  done
  log "WARNING: GPUs not idle after $1 s: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader | tr '\n' ' ')"
}

export_results() {
  (cd "$RES" && tar czf "$RES/out/common.tgz" driver.log driver.out inventory.json budget-*.json context-overhead.json install.log 2>/dev/null)
  cp "$RES"/out/*.tgz "$OUT/" 2>/dev/null
  ls -la "$OUT" | tail -n +2
}

bench() {  # bench LABEL PROFILE TP K: the bench helper's contract (_notes/bench-args.md), C = 1, 4, 16
  local label=$1 profile=$2 tp=$3 k=$4 d="$RES/bench/$1" models root served c n t
  mkdir -p "$d"
  models=$(fetch "$URL/v1/models")
  root=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"][0]["root"])' "$models")
  served=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"][0]["id"])' "$models")
  python3 - "$d/meta.json" "$served" "$profile" "$tp" "$k" "$label" <<'EOF'
import json, sys
path, served, profile, tp, k, label = sys.argv[1:]
import subprocess
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"], capture_output=True, text=True).stdout.strip()
json.dump({"url": "http://127.0.0.1:8000", "model": served, "profile": profile, "gpu": gpu or None,
           "tensor_parallel_size": int(tp), "mtp_k": int(k), "input_len": 1024, "output_len": 256,
           "num_prompts": None, "vllm_version": "0.25.1",
           "label": f"{gpu} TP{tp} " + (f"MTP k={k}" if int(k) else "MTP off") + " (full shape, dummy weights)"},
          open(path, "w"), indent=1)
EOF
  # warm-up outside the evidence: kernels still compiled on a first request land here, not in c1
  t=$(date +%s.%N)
  vllm bench serve --backend openai --base-url "$URL" --endpoint /v1/completions --model "$root" \
    --served-model-name "$served" --tokenizer "$root" --dataset-name random --random-input-len 1024 \
    --random-output-len 16 --ignore-eos --num-prompts 4 --max-concurrency 4 --temperature 0 --seed 1 \
    --disable-tqdm > "$RES/bench/$label.warmup.log" 2>&1
  log "bench $label: warm-up rc $? in $(since "$t") s"
  for c in 1 4 16; do
    n=$(( 4 * c > 8 ? 4 * c : 8 ))
    fetch "$URL/metrics" > "$d/c$c.metrics-before.txt"
    t=$(date +%s.%N)
    vllm bench serve \
      --backend openai --base-url "$URL" --endpoint /v1/completions \
      --model "$root" --served-model-name "$served" --tokenizer "$root" \
      --dataset-name random --random-input-len 1024 --random-output-len 256 --ignore-eos \
      --num-prompts "$n" --max-concurrency "$c" --request-rate inf \
      --temperature 0 --seed 0 \
      --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
      --save-result --result-dir "$d" --result-filename "c$c.json" \
      --disable-tqdm > "$RES/bench/$label.c$c.log" 2>&1
    log "bench $label c$c (n $n): rc $? in $(since "$t") s; $(grep -E 'Output token throughput' "$RES/bench/$label.c$c.log" | tr -s ' ')"
    fetch "$URL/metrics" > "$d/c$c.metrics-after.txt"
  done
  (cd "$RES/bench" && tar czf "$RES/out/bench-$label.tgz" "$label" "$label".*.log)
}

run_one() {  # run_one NAME PROFILE UTIL SMOKE BENCH_LABEL TP K
  local name=$1 profile=$2 u=$3 smoke=$4 label=$5 tp=$6 k=$7 d="$RES/runs/$1" t0 lp tl rc started=0 ready_s=""
  mkdir -p "$d"
  wait_idle 120
  nvsmi > "$d/nvml-before.csv"
  nvidia-smi --query-gpu=timestamp,index,memory.used --format=csv,noheader,nounits -lms 500 > "$d/nvml-timeline.csv" 2>&1 &
  tl=$!
  local args=(--profile "$FS/profiles/$profile.yaml" --wait --wait-timeout "${WAIT_S:-540}")
  [ -n "$u" ] && args+=(--set "engine.gpu_memory_utilization=$u")
  [ "$smoke" = smoke ] && args+=(--smoke)
  log "start $name: launcher serve ${args[*]}"
  t0=$(date +%s.%N)
  python3 -m launcher serve "${args[@]}" > "$d/serve.log" 2>&1 &
  lp=$!
  until grep -q "launcher: serving in the foreground" "$d/serve.log" 2>/dev/null || ! kill -0 "$lp" 2>/dev/null; do sleep 1; done
  if kill -0 "$lp" 2>/dev/null; then
    started=1; ready_s=$(since "$t0")
    log "start $name: serving after $ready_s s"
    nvsmi > "$d/nvml-ready.csv"
    fetch "$URL/metrics" > "$d/metrics-ready.txt" 2>/dev/null
    [ -n "$label" ] && bench "$label" "$profile" "$tp" "$k"
    kill -TERM "$lp"
  fi
  wait "$lp"; rc=$?
  kill "$tl" 2>/dev/null
  log "start $name: launcher exit $rc (started $started)"
  printf '{"name": "%s", "profile": "%s", "utilization": "%s", "smoke": "%s", "started": %s, "serving_after_s": %s, "launcher_exit": %s}\n' \
    "$name" "$profile" "${u:-profile}" "$smoke" "$started" "${ready_s:-null}" "$rc" > "$d/state.json"
  (cd "$RES/runs" && tar czf "$RES/out/$name.tgz" "$name")
}

run_tune() {  # launcher tune on GPU 0, then the first candidate again with the caches kept
  local t="$RES/tune" prof="$FS/profiles/fullshape-1gpu-tp1-card.yaml" rc
  mkdir -p "$t"
  wait_idle 120
  log "tune: launcher tune --profile fullshape-1gpu-tp1-card (FLASHINFER, FLASH_ATTN x MTP off, k=2)"
  python3 -m launcher tune --profile "$prof" --mtp "${TUNE_MTP:-2,off}" --backends "${TUNE_BACKENDS:-FLASHINFER,FLASH_ATTN}" \
    --dir "$t/run" --json "$t/report.json" --chart "$t/chart.svg" --out "$t/winner.yaml" --num-prompts 6 --output-len 128 \
    --budget "${TUNE_BUDGET:-30}" --wait-timeout 900 > "$t/tune.out" 2> "$t/tune.err"; rc=$?
  log "tune: rc $rc; $(grep -E '^winner' "$t/tune.out")"
  (cd "$RES" && tar czf "$RES/out/tune.tgz" tune)
  wait_idle 120
  log "tune: warm restart of the first candidate, the card's FLASHINFER MTP k=2 (compile and kernel caches kept)"
  python3 -m launcher tune --profile "$prof" --mtp 2 --backends FLASHINFER \
    --dir "$t/warm" --json "$t/warm-report.json" --num-prompts 6 --output-len 128 --wait-timeout 900 > "$t/warm.out" 2> "$t/warm.err"; rc=$?
  log "tune: warm restart rc $rc"
  (cd "$RES" && tar czf "$RES/out/tune.tgz" tune)
}

run_mem() {  # run_mem NAME SETS...: a memory-only start (ready, then SIGTERM): vLLM's KV figures for the estimate
  local name=$1 d="$RES/runs/$1" lp; shift
  mkdir -p "$d"; wait_idle 120
  local args=(--profile "$FS/profiles/fullshape-1gpu-tp1-card.yaml" --wait --wait-timeout 600)
  local s; for s in "$@"; do args+=(--set "$s"); done
  log "mem $name: launcher serve ${args[*]}"
  python3 -m launcher serve "${args[@]}" > "$d/serve.log" 2>&1 &
  lp=$!
  until grep -q "launcher: serving in the foreground" "$d/serve.log" 2>/dev/null || ! kill -0 "$lp" 2>/dev/null; do sleep 1; done
  kill -TERM "$lp" 2>/dev/null; wait "$lp"
  log "mem $name: $(grep -E 'Available KV cache memory|GPU KV cache size' "$d/serve.log" | tr -s ' ' | head -2 | tr '\n' ' ')"
  (cd "$RES/runs" && tar czf "$RES/out/$name.tgz" "$name")
}

wait_driver() {  # until the driver is done or this call's time is nearly up
  local left=$(( CALL_BUDGET_S - ($(date +%s) - T_CALL) )) n=0
  log "waiting up to $left s for the driver"
  local deadline=$(( $(date +%s) + left ))
  until grep -q '^DONE' "$RES/driver.done" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 2; n=$(( n + 1 ))
    [ $(( n % 15 )) = 0 ] && export_results > /dev/null
  done
  grep -q '^DONE' "$RES/driver.done" 2>/dev/null && log "driver done" || log "driver still running; call 'collect' next"
  tail -25 "$RES/driver.log"
  export_results
}

case "$MODE" in
part)
  K=${2:?part number}
  carry_part "$K" || exit 1
  start_installer "$FS/tools/gpu_e2e" || exit 1
  if [ "$K" = 1 ] && [ "${FS_CONTEXT:-1}" = 1 ]; then  # FS_CONTEXT=0: skip the (already recorded) measurement
    { nvsmi; nvidia-smi topo -m; python3 -V; nproc; } 2>&1 | tee -a "$RES/driver.log"
    PYTHONPATH=$REPO timeout 240 python3 "$FS/tools/gpu_e2e/context_overhead.py" --tp 1 2 --out "$RES/context-overhead.json" 2>&1 | tee -a "$RES/driver.log"
    export_results > /dev/null
  fi
  tail -2 "$WH/install.status" 2>/dev/null || true
  ;;
go)
  K=${2:?last part number}
  carry_part "$K" || exit 1
  start_installer "$FS/tools/gpu_e2e" || exit 1
  log "waiting for the install"
  deadline=$(( $(date +%s) + 300 ))
  until grep -qE 'installed|FAILED' "$WH/install.status" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; do sleep 1; done
  tee -a "$RES/driver.log" < "$WH/install.status"
  cp "$WH/install.log" "$RES/install.log" 2>/dev/null
  grep -q installed "$WH/install.status" || { tail -20 "$WH/install.log"; export_results; exit 1; }
  # the driver runs from a private copy: later calls re-sync the checkout under it
  rm -rf /tmp/fsrepo && mkdir -p /tmp/fsrepo && tar -C "$REPO" --exclude=./.gpu-e2e --exclude=./.git -cf - . | tar -C /tmp/fsrepo -xf -
  rm -f "$RES/driver.done"
  setsid nohup bash /tmp/fsrepo/.fullshape/tools/gpu_e2e/run_fullshape.sh drive > "$RES/driver.out" 2>&1 < /dev/null &
  log "driver started (pid $!)"
  wait_driver
  ;;
collect)
  wait_driver
  ;;
drive)
  setup_env "$REPO"
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # NVLink multicast off
  finish_install
  rm -rf "$MODEL_DIR" && cp -r "$FS/model" "$MODEL_DIR" || { echo DONE > "$RES/driver.done"; exit 1; }
  python3 -m launcher gpus --json > "$RES/inventory.json" 2>> "$RES/driver.log"
  for card in "RTX 3090" "RTX A6000"; do
    python3 "$FS/tools/gpu_e2e/fullshape_budget.py" --card "$card" > "$RES/budget-${card// /-}.json"
    log "budget $card: $(cat "$RES/budget-${card// /-}.json")"
  done
  util() { python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["utilization"]))' "$1"; }
  for r in $RUNS; do
    case "$r" in
    a) WAIT_S=720 run_one a fullshape-24gb-tp2-mtp "$(util "$RES/budget-RTX-3090.json")" smoke "" 2 2 ;;
    c) run_one c fullshape-h200-tp2-mtp "" nosmoke mtp-k2 2 2 ;;
    b) run_one b fullshape-48gb-tp1 "$(util "$RES/budget-RTX-A6000.json")" nosmoke "" 1 0 ;;
    d) run_one d fullshape-h200-tp2-nomtp "" nosmoke mtp-off 2 0 ;;
    e) run_one e fullshape-48gb-tp1-nopc "" nosmoke "" 1 0 ;;
    f) run_one f fullshape-h200-tp2-mtp-m2048 "" nosmoke "" 2 2 ;;
    tune) run_tune ;;
    m1) run_mem m1 engine.attention_backend=FLASH_ATTN speculative.num_speculative_tokens=1 engine.max_num_seqs=4 \
          engine.max_num_batched_tokens=1024 ;;
    m3) run_mem m3 engine.attention_backend=FLASH_ATTN speculative.num_speculative_tokens=3 engine.max_num_seqs=64 \
          engine.max_num_batched_tokens=16384 engine.gpu_memory_utilization=0.9 ;;
    esac
  done
  log "all runs done"
  echo DONE > "$RES/driver.done"
  ;;
*)
  echo "unknown mode $MODE" >&2; exit 2
  ;;
esac
