# Shared by run_remote.sh and run_fullshape.sh (sourced, not run): carrying the wheel parts, the
# streaming install, the environment that puts the installed wheels first, and the two fixes the
# install needs on the GPU image. The caller defines log() and sets REPO (the checkout that
# carries .gpu-e2e/), WH (where the parts land), SITE (the install target).

carry_part() {  # copy .gpu-e2e/pK into $WH, check it, mark it readable for stream_install.py
  local k=$1 d="$REPO/.gpu-e2e/p$1" f
  [ -d "$d" ] || { log "FATAL: $d not carried"; return 1; }
  for f in "$d"/core.tar.xz.part[0-9][0-9]; do
    cp "$f" "$WH/$(basename "$f").tmp" && mv -f "$WH/$(basename "$f").tmp" "$WH/$(basename "$f")"
    cp "$f.sha256" "$WH/"
    (cd "$WH" && sha256sum -c --quiet "$(basename "$f").sha256") || { log "FATAL: part $k checksum"; return 1; }
    touch "$WH/$(basename "$f").ok"
    log "part $k: $(basename "$f") ($(stat -c %s "$f") bytes) ok"
  done
}

start_installer() {  # start_installer DIR: once per machine, stream_install.py (from DIR) in its own session
  if [ -d "$REPO/.gpu-e2e/kit" ] && [ ! -e "$WH/kit/PARTS" ]; then
    mkdir -p "$WH/kit" && cp -r "$REPO/.gpu-e2e/kit/." "$WH/kit/" && cp "$1"/*.py "$WH/kit/"
  fi
  [ -e "$WH/kit/PARTS" ] || { log "FATAL: .gpu-e2e/kit was never carried"; return 1; }
  if [ ! -e "$WH/installer.started" ]; then
    touch "$WH/installer.started"
    setsid nohup python3 "$WH/kit/stream_install.py" "$WH" "$SITE" "$(cat "$WH/kit/PARTS")" \
      "$WH/kit/SHA256SUMS.stored" > "$WH/install.log" 2>&1 < /dev/null &
    log "installer started (pid $!), $(cat "$WH/kit/PARTS") parts expected"
  fi
}

setup_env() {  # setup_env LAUNCHER_ROOT: the installed wheels first on the path, launcher from that checkout
  # launcher from that checkout, else from the staged copy (.fullshape/launcher, stage_fullshape.sh)
  local root=$1
  [ -d "$root/launcher" ] || root=$root/.fullshape
  export PYTHONPATH=$SITE:$SITE/nvidia_cutlass_dsl/python_packages:$root
  local c cuda=""
  for c in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13.0; do
    [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && [ -e "$c/include/cuda_runtime.h" ] && { cuda=$c; break; }
  done
  [ -n "$cuda" ] && export CUDA_HOME=$cuda
  export PATH=$SITE/bin${cuda:+:$cuda/bin}:$PATH
  export MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
}

finish_install() {  # after the install and setup_env: the recipe's two fixes
  # cuda.tile (for flashinfer.comm) sits in the 'cuda' namespace; if the image's cuda/ shadows
  # it, merge the image's entries into $SITE/cuda
  if ! python3 -c 'import cuda.tile, cuda.bindings' 2>/dev/null; then
    local rsp e
    rsp=$(env -u PYTHONPATH python3 -c 'import cuda.bindings, os; print(os.path.dirname(os.path.dirname(cuda.bindings.__file__)))' 2>/dev/null)
    if [ -n "$rsp" ] && [ -d "$rsp" ]; then
      for e in "$rsp"/*; do [ -e "$SITE/cuda/$(basename "$e")" ] || ln -s "$e" "$SITE/cuda/"; done
      log "merged the image's $rsp into $SITE/cuda"
    fi
  fi
  # profiles run `vllm serve`; pip --target writes no console script into $SITE/bin
  if ! command -v vllm >/dev/null; then
    printf '#!/bin/sh\nexec python3 -m vllm.entrypoints.cli.main "$@"\n' > "$SITE/bin/vllm" && chmod +x "$SITE/bin/vllm"
    log "no vllm console script: wrote $SITE/bin/vllm (python3 -m vllm.entrypoints.cli.main)"
  fi
  log "vllm: $(command -v vllm)"
}
