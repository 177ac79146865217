#!/usr/bin/env bash
# The GPU side of the 2 x H200 end-to-end run (tools/gpu_e2e/build_parts.py prepares, here, what
# it needs in .gpu-e2e/). One machine held, calls back to back (it stays warm ~30 s after each):
#   part K   carries .gpu-e2e/pK (+ .gpu-e2e/kit): copies part K to /tmp/wh, checks it; the first
#            call also starts, in the background, the unpack/install (stream_install.py) and the
#            tiny model (the recipe's generator, into /tmp/tiny-qwen35-mtp)
#   serve    carries the last part: waits for the install, records `launcher gpus --json`,
#            `launcher check` and `launcher render` of profiles/h200x2-tiny.yaml, then starts the
#            driver (below) in its own session and waits for it while the call's time lasts
#   collect  waits for the driver again (the serve call may end first: 10 minutes a call)
#   drive    (background) `launcher serve --profile h200x2-tiny --wait --smoke`; once it serves:
#            `launcher smoke --json` once more, /metrics, SIGTERM to launcher, its exit code
# Results land in /tmp/e2e and, at most 8 files, in $OUT.
set -uo pipefail
MODE=${1:?usage: run_remote.sh part K | serve | collect | drive}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WH=${GPU_E2E_WH:-/tmp/wh} SITE=${GPU_E2E_SITE:-/tmp/site} RES=${GPU_E2E_RES:-/tmp/e2e}
MODEL_DIR=/tmp/tiny-qwen35-mtp PROFILE=${GPU_E2E_PROFILE:-h200x2-tiny} URL=http://127.0.0.1:8000
CALL_BUDGET_S=${CALL_BUDGET_S:-540}
T_CALL=$(date +%s)
mkdir -p "$WH" "$RES"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
log() { echo "[$(date -u +%T)] $*" | tee -a "$RES/run.log"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# shellcheck source=tools/gpu_e2e/common.sh
. "$REPO/tools/gpu_e2e/common.sh"

start_background() {  # once per machine: unpack/install and the tiny model, in their own sessions
  start_installer "$REPO/tools/gpu_e2e" || return 1
  if [ ! -e "$WH/model.started" ]; then
    touch "$WH/model.started"
    # the image's own torch/transformers build it (no wheels needed); then launcher's marker,
    # which tells `launcher smoke` that the weights are random (output checks become n/a)
    setsid nohup bash -c "rm -rf $MODEL_DIR.tmp && env -u PYTHONPATH python3 $WH/kit/make_tiny_qwen35_mtp.py $MODEL_DIR.tmp \
      && printf '%s\n' '{\"random_weights\": true, \"about\": \"tiny random-weight Qwen3.5 + one MTP layer, made by the gpu-e2e recipe generator\"}' \
         > $MODEL_DIR.tmp/launcher-tiny-model.json && rm -rf $MODEL_DIR && mv $MODEL_DIR.tmp $MODEL_DIR && echo MODEL_OK" \
      > "$WH/model.log" 2>&1 < /dev/null &
    log "tiny model generator started (pid $!)"
  fi
}

wait_for() {  # wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN
  local deadline=$(( $(date +%s) + $3 ))
  until grep -qE "$2" "$1" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

export_results() {
  cp "$RES/run.log" "$OUT/" 2>/dev/null
  for f in serve.log summary.txt inventory.json check.json rendered.json smoke.json metrics.txt; do
    [ -e "$RES/$f" ] && cp "$RES/$f" "$OUT/"
  done
  ls -la "$OUT"
}

wait_driver() {  # until the driver is done or this call's time is nearly up
  local left=$(( CALL_BUDGET_S - ($(date +%s) - T_CALL) ))
  log "waiting up to $left s for the driver"
  local deadline=$(( $(date +%s) + left )) done=1 n=0
  until grep -q '^DONE' "$RES/summary.txt" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { done=0; break; }
    sleep 2; n=$(( n + 1 ))
    if [ $(( n % 15 )) = 0 ]; then  # what is under $OUT comes back even if the call is cut off
      export_results > /dev/null; grep -E "^launcher: (waiting|ready|start)" "$RES/serve.log" 2>/dev/null | tail -1
    fi
  done
  if [ "$done" = 1 ]; then
    log "driver done"; cat "$RES/summary.txt"
  else
    log "driver still running; call 'collect' next"
    grep -E "^launcher:" "$RES/serve.log" | tail -20
    tail -5 "$RES/serve.log"
  fi
  export_results
}

case "$MODE" in
part)
  K=${2:?part number}
  carry_part "$K" || exit 1
  start_background || exit 1
  if [ "$K" = 1 ]; then
    { nvidia-smi -L; nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv
      python3 -V; command -v nvcc && nvcc --version | tail -1; nproc; } 2>&1 | tee -a "$RES/run.log"
  fi
  tail -2 "$WH/install.status" 2>/dev/null; tail -1 "$WH/model.log" 2>/dev/null
  ;;
serve)
  K=${2:?last part number}
  carry_part "$K" || exit 1
  start_background || exit 1
  log "waiting for the install"
  wait_for "$WH/install.status" 'installed|FAILED' 300; cat "$WH/install.status" | tee -a "$RES/run.log"
  grep -q installed "$WH/install.status" || { tail -20 "$WH/install.log"; export_results; exit 1; }
  wait_for "$WH/model.log" 'MODEL_OK|Error|Traceback' 120
  tail -3 "$WH/model.log" | tee -a "$RES/run.log"
  grep -q MODEL_OK "$WH/model.log" || { tail -30 "$WH/model.log"; export_results; exit 1; }
  setup_env "$REPO"
  finish_install
  log "CUDA_HOME=${CUDA_HOME:-unset} MAX_JOBS=$MAX_JOBS"
  python3 -m launcher gpus --json > "$RES/inventory.json" 2>> "$RES/run.log"; log "launcher gpus --json: rc $?"
  python3 -m launcher check --profile "$PROFILE" 2>&1 | tee -a "$RES/run.log"; log "launcher check: rc ${PIPESTATUS[0]}"
  python3 -m launcher check --profile "$PROFILE" --json > "$RES/check.json" 2>> "$RES/run.log"
  python3 -m launcher render --profile "$PROFILE" --format json > "$RES/rendered.json" 2>> "$RES/run.log"
  python3 -m launcher render --profile "$PROFILE" 2>&1 | tee -a "$RES/run.log"
  rm -f "$RES/summary.txt"
  setsid nohup bash "$REPO/tools/gpu_e2e/run_remote.sh" drive >> "$RES/run.log" 2>&1 < /dev/null &
  log "driver started (pid $!)"
  wait_driver
  ;;
collect)
  wait_driver
  ;;
drive)
  setup_env "$REPO"
  S="$RES/summary.txt"
  note() { echo "$*" >> "$S"; }
  t0=$(date +%s.%N)
  python3 -m launcher serve --profile "$PROFILE" --wait --smoke > "$RES/serve.log" 2>&1 &
  LPID=$!
  note "launcher serve pid $LPID started $(date -u +%T)"
  # smoke done: serve says it keeps serving in the foreground; or it exited (a failure)
  until grep -q "launcher: serving in the foreground" "$RES/serve.log" 2>/dev/null || ! kill -0 "$LPID" 2>/dev/null; do
    sleep 1
  done
  if kill -0 "$LPID" 2>/dev/null; then
    note "serving after $(since "$t0") s (start, ready, smoke)"
    t=$(date +%s.%N)
    python3 -m launcher smoke --url "$URL" --json > "$RES/smoke.json" 2>> "$RES/run.log"
    note "second smoke (launcher smoke --json): rc $? in $(since "$t") s"
    python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('$URL/metrics', timeout=10).read().decode())" \
      > "$RES/metrics.txt" 2>> "$RES/run.log"
    grep -E '^vllm:spec_decode_num_(drafts|draft_tokens|accepted_tokens)(_per_pos)?_total' "$RES/metrics.txt" >> "$S"
    note "SIGTERM to launcher (pid $LPID) $(date -u +%T)"
    t=$(date +%s.%N)
    kill -TERM "$LPID"
    wait "$LPID"; rc=$?
    note "launcher exited with code $rc, $(since "$t") s after SIGTERM"
  else
    wait "$LPID"; rc=$?
    note "launcher serve exited early with code $rc"
  fi
  sleep 2
  note "processes left: $(pgrep -f 'vllm.entrypoints|VLLM::|EngineCore' 2>/dev/null | wc -l)"
  nvidia-smi --query-gpu=index,memory.used --format=csv >> "$S" 2>&1
  grep -E "^launcher:|^  (PASS|WARN|FAIL|N/A) |^smoke |^result: " "$RES/serve.log" >> "$S"
  note "DONE rc=$rc"
  ;;
*)
  echo "unknown mode $MODE" >&2; exit 2
  ;;
esac
