#!/usr/bin/env bash
# Stage, here, what the full-shape GPU runs carry (tools/gpu_e2e/run_fullshape.sh is the other side).
#
#   tools/gpu_e2e/stage_fullshape.sh DEST [PYTHON]
#
# DEST is the checkout the device tool sends (its own .git/info/exclude gets /.fullshape/ and
# /.gpu-e2e/ so neither is tracked there). Writes DEST/.fullshape: the scripts, the profiles of
# tests/fixtures/gpu-fullshape/profiles, and model/ (tools/make_full_shape_model.py, run with
# PYTHON, which needs `tokenizers`; default: the vllm-0.33.0 engine venv). Hard-links this
# checkout's .gpu-e2e parts and kit (tools/gpu_e2e/build_parts.py) into DEST/.gpu-e2e.
set -euo pipefail
DEST=${1:?usage: stage_fullshape.sh DEST [PYTHON]}
PY=${2:-$HOME/.cache/launcher-engines/vllm-0.33.0/bin/python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ -e "$HERE/.gpu-e2e/kit/PARTS" ] || { echo "stage_fullshape: run tools/gpu_e2e/build_parts.py first" >&2; exit 1; }
EXCLUDE="$(git -C "$DEST" rev-parse --git-path info/exclude)"
case "$EXCLUDE" in /*) ;; *) EXCLUDE="$DEST/$EXCLUDE" ;; esac
mkdir -p "$(dirname "$EXCLUDE")"
for p in /.fullshape/ /.gpu-e2e/; do grep -qxF "$p" "$EXCLUDE" 2>/dev/null || echo "$p" >> "$EXCLUDE"; done

FS="$DEST/.fullshape"
rm -rf "$FS" && mkdir -p "$FS/tools/gpu_e2e" "$FS/profiles"
cp "$HERE/tools/make_full_shape_model.py" "$HERE/tools/make_tiny_model.py" "$FS/tools/"
cp "$HERE"/tools/gpu_e2e/{run_fullshape.sh,common.sh,stream_install.py,fullshape_budget.py,context_overhead.py} "$FS/tools/gpu_e2e/"
cp "$HERE"/tests/fixtures/gpu-fullshape/profiles/*.yaml "$FS/profiles/"
"$PY" "$HERE/tools/make_full_shape_model.py" --out "$FS/model" > /dev/null

if [ "$(cd "$DEST" && pwd -P)" != "$(cd "$HERE" && pwd -P)" ]; then  # DEST = this checkout: the parts are already there
  rm -rf "$DEST/.gpu-e2e" && mkdir -p "$DEST/.gpu-e2e"
  cp -al "$HERE/.gpu-e2e/kit" "$HERE"/.gpu-e2e/p[0-9]* "$DEST/.gpu-e2e/"
  # the driver runs `python3 -m launcher` from DEST: it needs this checkout's package and profiles there
  if [ ! -d "$DEST/launcher" ] || [ ! -d "$DEST/profiles" ]; then
    cp -r "$HERE/launcher" "$HERE/profiles" "$FS/"
    echo "stage_fullshape: $DEST has no launcher/ or profiles/: copied this checkout's into $FS (on the path there)"
  fi
fi
git -C "$DEST" status --porcelain --untracked-files=all | grep -E '\.fullshape|\.gpu-e2e' && { echo "stage_fullshape: not ignored in $DEST" >&2; exit 1; }
du -sh "$FS" "$DEST"/.gpu-e2e/* | sed 's/^/stage_fullshape: /'
