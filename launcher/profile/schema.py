"""The profile schema: pydantic v2 models for the YAML a person writes. No I/O here."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from launcher.defaults import DEFAULT_VLLM_VERSION

# Environment variables that look like they hold a secret (by name or value): rendered by reference, never
# expanded into argv. One rule for every format, in launcher/text.py.
from launcher.text import SECRET_NAME, looks_secret  # noqa: F401

# Upstream vllm#37035: num_speculative_tokens > 4 crashes the GDN spec-decode path.
MAX_SPECULATIVE_TOKENS = 4
# vllm#51679: these XML tool parsers swallow </think> unless the qwen3 reasoning parser runs.
TOOL_PARSERS_NEEDING_QWEN3_REASONING = ("qwen3_xml", "qwen3_coder")


# Largest whole number a profile value may hold: exact in a float and in every JSON reader (2**53).
MAX_INT = 2**53
# Longest context accepted: 64 x this model's 262144 positions; 10**30 tokens is a typo, not a context.
MAX_CONTEXT_TOKENS = 1 << 24


class StrictModel(BaseModel):
    """Base for every block: unknown keys are refused, values are never coerced silently, NaN/Infinity refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _flag(name: str) -> dict[str, Any]:
    """Field metadata: the vLLM flag a field renders to, when it is not `--<field-name>`."""
    return {"flag": name}


def _no_render() -> dict[str, Any]:
    return {"render": False}


PositiveInt = Annotated[int, Field(ge=1)]


def parse_compute_capability(value: Any) -> Any:
    """"8.6", 8.6 or [8, 6] -> (8, 6): YAML turns 8.0 into a float, hand-written JSON may use either."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{value:.1f}"
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", value)
        if not match:
            raise ValueError(f'expected a compute capability like "8.6" or [8, 6], got {value!r}')
        return (int(match.group(1)), int(match.group(2)))
    if isinstance(value, list):
        return tuple(value)
    return value


def _json_object(value: Any) -> Any:
    """JSON-valued flags may be written as a YAML mapping or as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object ({...})")
    return value


JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]


def _context_length(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CONTEXT_TOKENS):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CONTEXT_TOKENS:
        raise ValueError(f"{value} tokens is beyond any context (at most {MAX_CONTEXT_TOKENS})")
    raise ValueError("expected a positive whole number of tokens or 'auto'")


_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")


def host_address(value: Any) -> Any:
    """An IP address (v4 or v6) or a DNS name: what goes into VLLM_HOST_IP, --master-addr and the node headers."""
    if not isinstance(value, str):
        return value
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) <= 253 and _DNS_NAME.fullmatch(value) and not value.replace(".", "").isdigit():
        return value
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:56] + "...'"
    raise ValueError(f"{shown} is not an IP address or a DNS name")


HostAddress = Annotated[str, BeforeValidator(host_address)]


ContextLength = Annotated[Union[int, str], BeforeValidator(_context_length)]


class Hardware(StrictModel):
    """What the profile needs from the machine; the preflight checks these against real GPUs."""

    device: Annotated[
        Literal["cuda", "cpu"],
        Field(description='"cuda" (NVIDIA GPUs, preflighted through NVML) or "cpu" (a CPU build of vLLM: no GPU checks, never picked by `auto`).'),
    ] = "cuda"
    gpu_count: Annotated[
        int,
        Field(
            ge=1,
            le=64,
            description="GPUs one copy of the engine uses in all, over all its nodes: tensor x pipeline x data parallel. "
            "With deployment.nodes > 1 each machine provides deployment.gpus_per_node of them (default gpu_count / nodes), "
            "which is what a preflight on one machine compares; deployment.replicas multiplies the total.",
        ),
    ]
    min_memory_gib: Annotated[
        float,
        Field(gt=0, description="Minimum total memory per GPU in GiB, as CUDA/NVML reports it (an RTX 3090 reports 23.69)."),
    ]
    min_compute_capability: Annotated[
        tuple[int, int],
        Field(description='Minimum CUDA compute capability, written "8.0" or [8, 0]. This model needs 8.0 (bf16, FlashInfer).'),
    ] = (8, 0)
    min_driver: Annotated[
        str,
        Field(
            pattern=r"^\d+(\.\d+){0,2}$",
            description='Minimum NVIDIA driver, e.g. "580" (CUDA 13 builds of vLLM 0.33 need 580 or newer).',
        ),
    ] = "580"

    @field_validator("min_compute_capability", mode="before")
    @classmethod
    def _parse_cc(cls, value: Any) -> Any:
        return parse_compute_capability(value)

    @field_validator("min_driver", mode="before")
    @classmethod
    def _driver_str(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value


class Vllm(StrictModel):
    """Which vLLM the profile targets and how it is started."""

    version: Annotated[
        str, Field(pattern=r"^\d+\.\d+(\.\d+)?$", description="vLLM version the command is written for (the container pins 0.33.0).")
    ] = DEFAULT_VLLM_VERSION
    command: Annotated[
        tuple[str, ...],
        Field(
            min_length=1,
            description='The program and arguments that start the server, e.g. ["vllm", "serve"], or '
            '["python", "-m", "vllm.entrypoints.openai.api_server"] for builds whose console script is broken.',
        ),
    ] = ("vllm", "serve")
    model_arg: Annotated[
        Literal["positional", "flag"],
        Field(description='How the model is passed: "positional" after `vllm serve`, or "flag" as `--model X` (api_server entrypoint).'),
    ] = "positional"
    cache_dir: Annotated[
        Optional[str],
        Field(
            min_length=1,
            description="One directory for everything vLLM and its kernels compile: vLLM's own cache (torch.compile), Triton, "
            "FlashInfer's JIT and the CUDA driver's cache, set in vLLM's environment; kept, a restart loads instead of "
            "compiling. Default: $VLLM_CACHE_ROOT, else $XDG_CACHE_HOME/vllm, else ~/.cache/vllm (vLLM's own rule).",
        ),
    ] = None

    @field_validator("command", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache_dir(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path (or start with ~ or $VAR): CUDA and Triton do not resolve a relative one")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        """`v0.33.0` is 0.33.0; a number (YAML reads 0.33 as one) or a malformed string gets a plain message."""
        if isinstance(value, str) and re.fullmatch(r"v?\d+\.\d+(\.\d+)?", value.strip()):
            return value.strip().removeprefix("v")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError('write the vLLM version as a quoted string such as "0.33.0" (a bare 0.33 is read as a number)')
        raise ValueError('expected a vLLM version such as "0.33.0" (`launcher engines` lists the known ones)')


class Model(StrictModel):
    """The checkpoint to serve."""

    name: Annotated[str, Field(min_length=1, description="Hugging Face model id or a local path.", json_schema_extra=_no_render())]
    facts: Annotated[
        Optional[str],
        Field(
            description="Known model whose facts (heads, sizes) apply, for a local copy of it; defaults to `name`.",
            json_schema_extra=_no_render(),
        ),
    ] = None
    revision: Annotated[Optional[str], Field(description="Model revision (branch, tag or commit) to load.")] = None
    tokenizer: Annotated[Optional[str], Field(description="Tokenizer id or path, when it differs from the model.")] = None
    trust_remote_code: Annotated[Optional[bool], Field(description="Allow the checkpoint's own Python code to run.")] = None
    language_model_only: Annotated[
        Optional[bool],
        Field(description="Skip the vision tower (about 0.9 GB and the encoder profiling pass); this model is served text-only."),
    ] = None
    dtype: Annotated[
        Optional[Literal["auto", "bfloat16", "float16", "half", "float32"]],
        Field(description="Activation dtype; `auto` takes the checkpoint's (bfloat16)."),
    ] = None
    quantization: Annotated[Optional[str], Field(description="Quantization method; normally read from the checkpoint.")] = None

    @field_validator("name")
    @classmethod
    def _not_an_option(cls, value: str) -> str:
        if value.startswith("-"):
            raise ValueError("must not start with '-' (vLLM would read the model as an option)")
        return value


class Parallel(StrictModel):
    """How the model is spread over GPUs."""

    tensor_parallel_size: Annotated[
        Optional[PositiveInt], Field(description="GPUs per model copy (tensor parallel). Valid for this model: 1, 2, 4, 8.")
    ] = None
    pipeline_parallel_size: Annotated[
        Optional[PositiveInt], Field(description="Pipeline stages. MTP speculative decoding does not work with more than 1.")
    ] = None
    data_parallel_size: Annotated[Optional[PositiveInt], Field(description="Model copies behind one API server (data parallel).")] = None
    disable_custom_all_reduce: Annotated[
        Optional[bool], Field(description="Use NCCL instead of vLLM's custom all-reduce (needed without GPU peer-to-peer).")
    ] = None
    distributed_executor_backend: Annotated[
        Optional[Literal["mp", "ray", "uni", "external_launcher"]], Field(description="How workers are started.")
    ] = None

    @property
    def tp(self) -> int:
        """Tensor parallel size as vLLM resolves it (unset = 1)."""
        return self.tensor_parallel_size or 1

    @property
    def pp(self) -> int:
        return self.pipeline_parallel_size or 1

    @property
    def dp(self) -> int:
        return self.data_parallel_size or 1

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp


class Engine(StrictModel):
    """Engine memory and scheduling knobs; keys are vLLM's own argument names."""

    gpu_memory_utilization: Annotated[
        Optional[float], Field(gt=0, le=1, description="Share of each GPU's total memory vLLM may use (vLLM 0.33 default 0.92).")
    ] = None
    max_model_len: Annotated[
        Optional[ContextLength],
        Field(description='Context length (prompt + output) in tokens, or "auto" for the largest that fits.'),
    ] = None
    max_num_seqs: Annotated[Optional[PositiveInt], Field(description="Most requests scheduled at once; small values save memory.")] = None
    max_num_batched_tokens: Annotated[Optional[PositiveInt], Field(description="Most tokens in one scheduler step (prefill chunk).")] = None
    enable_chunked_prefill: Annotated[Optional[bool], Field(description="Split long prefills into chunks.")] = None
    enable_prefix_caching: Annotated[
        Optional[bool],
        Field(description="Reuse KV of shared prefixes. With MTP on this model it can corrupt state (vllm#43559)."),
    ] = None
    async_scheduling: Annotated[
        Optional[bool], Field(description="Overlap scheduling with execution (vllm#52873: turn off if MTP acceptance collapses).")
    ] = None
    performance_mode: Annotated[
        Optional[Literal["balanced", "interactivity", "throughput"]], Field(description="vLLM's tuning preset.")
    ] = None
    attention_backend: Annotated[
        Optional[str], Field(description="Attention kernel, e.g. FLASHINFER (the only fp8-KV route below compute capability 8.9).")
    ] = None
    skip_mm_profiling: Annotated[Optional[bool], Field(description="Skip the multimodal memory profiling pass.")] = None
    enforce_eager: Annotated[Optional[bool], Field(description="Disable CUDA graphs (slower, less memory).")] = None
    max_cudagraph_capture_size: Annotated[Optional[PositiveInt], Field(description="Largest batch captured as a CUDA graph.")] = None
    mamba_block_size: Annotated[Optional[PositiveInt], Field(description="Gated DeltaNet state block size; needs prefix caching.")] = None
    mamba_cache_mode: Annotated[
        Optional[str], Field(description="Deprecated in vLLM 0.33 and without effect (prefix caching decides); values align, none.")
    ] = None
    mamba_ssm_cache_dtype: Annotated[Optional[str], Field(description="dtype of the recurrent state (the model asks for float32).")] = None
    gdn_prefill_backend: Annotated[Optional[str], Field(description="Gated DeltaNet prefill kernel (e.g. triton, to avoid FlashInfer JIT).")] = None
    compilation_config: Annotated[Optional[JsonObject], Field(description="vLLM compilation config, rendered as JSON.")] = None
    kv_cache_metrics: Annotated[Optional[bool], Field(description="Export KV cache usage metrics.")] = None
    seed: Annotated[Optional[int], Field(description="Random seed.")] = None


class KvCache(StrictModel):
    """The KV cache."""

    dtype: Annotated[
        Optional[str],
        Field(description="KV cache dtype: auto (bf16), fp8 / fp8_e4m3 / fp8_e5m2 (half the attention memory).", json_schema_extra=_flag("--kv-cache-dtype")),
    ] = None
    memory_bytes: Annotated[
        Optional[PositiveInt],
        Field(
            description="Fixed KV cache size in bytes; skips profiling and ignores gpu_memory_utilization.",
            json_schema_extra=_flag("--kv-cache-memory-bytes"),
        ),
    ] = None


class Speculative(StrictModel):
    """Speculative decoding; rendered as one `--speculative-config` JSON value."""

    enabled: Annotated[bool, Field(description="Turn speculation on or off without deleting the block.", json_schema_extra=_no_render())] = True
    method: Annotated[str, Field(min_length=1, description='Method; "mtp" uses the checkpoint\'s own multi-token-prediction layer.')] = "mtp"
    num_speculative_tokens: Annotated[
        int,
        Field(ge=1, le=MAX_SPECULATIVE_TOKENS, description="Draft tokens per step (1-4; above 4 the GDN path crashes, vllm#37035)."),
    ] = 2
    extra: Annotated[
        JsonObject, Field(description="More keys for --speculative-config, passed through as JSON.", json_schema_extra=_no_render())
    ] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _no_validated_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # `extra` adds keys to --speculative-config; it may not replace one this block validates (k's 1-4 cap,
        # vllm#37035) nor one `fit` computes with: the rendered JSON would differ from what was checked.
        validated = {name.replace("_", "").lower(): name for name in cls.model_fields if name != "extra"}
        for key in value:
            hit = validated.get(str(key).replace("_", "").replace("-", "").lower())
            if hit is not None:
                raise ValueError(f"{str(key)[:60]!r} is validated by this block: set speculative.{hit} instead of putting it in extra")
        return value

    def config(self) -> dict[str, Any]:
        return {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens, **self.extra}


class Chat(StrictModel):
    """Chat behaviour: parsers, tool calling and the chat template."""

    reasoning_parser: Annotated[Optional[str], Field(description="Separates the model's thinking from the answer (qwen3).")] = None
    tool_call_parser: Annotated[Optional[str], Field(description="Extracts tool calls (qwen3_xml; needs reasoning_parser qwen3).")] = None
    enable_auto_tool_choice: Annotated[Optional[bool], Field(description='Let the model decide to call tools (tool_choice "auto").')] = None
    chat_template: Annotated[Optional[str], Field(description="Chat template file or inline template; default: the checkpoint's.")] = None
    default_chat_template_kwargs: Annotated[
        Optional[JsonObject], Field(description="Default keyword arguments for the chat template, e.g. enable_thinking.")
    ] = None
    override_generation_config: Annotated[
        Optional[JsonObject], Field(description="Default sampling parameters, e.g. temperature, top_p, top_k, min_p.")
    ] = None


class Server(StrictModel):
    """The OpenAI-compatible HTTP server."""

    host: Annotated[Optional[HostAddress], Field(description="Address to listen on (an IP address or a DNS name).")] = None
    port: Annotated[Optional[int], Field(ge=1, le=65535, description="Port to listen on (vLLM default 8000).")] = None
    served_model_name: Annotated[Optional[str], Field(description="Model name clients use in requests.")] = None
    api_key_env: Annotated[
        Optional[str],
        Field(
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
            description="Name of an environment variable holding the API key. It reaches vLLM as VLLM_API_KEY, never in argv.",
            json_schema_extra=_no_render(),
        ),
    ] = None
    enable_prompt_tokens_details: Annotated[Optional[bool], Field(description="Report cached prompt tokens in usage.")] = None
    uvicorn_log_level: Annotated[
        Optional[Literal["critical", "error", "warning", "info", "debug", "trace"]], Field(description="HTTP server log level.")
    ] = None


class Host(StrictModel):
    """One machine of a multi-node engine, in node-rank order (the first is rank 0, the head)."""

    ip: Annotated[
        HostAddress,
        Field(
            min_length=1,
            description="This node's address on the network the nodes share. Becomes its VLLM_HOST_IP (unique per node); "
            "the first host's is the default deployment.master_addr.",
        ),
    ]
    gpus: Annotated[
        Optional[PositiveInt],
        Field(description="GPUs this node gives the engine; default deployment.gpus_per_node. Tensor x pipeline parallel over nodes needs identical nodes."),
    ] = None
    nccl_socket_ifname: Annotated[
        Optional[str], Field(description="NCCL_SOCKET_IFNAME on this node (e.g. eth0, or ^lo,docker0); default deployment.nccl_socket_ifname.")
    ] = None
    gloo_socket_ifname: Annotated[
        Optional[str], Field(description="GLOO_SOCKET_IFNAME on this node; default deployment.gloo_socket_ifname.")
    ] = None
    vllm_version: Annotated[
        Optional[str],
        Field(description="The vLLM installed on this node, written down to be checked: it must equal vllm.version (every node runs the same engine)."),
    ] = None
    model_path: Annotated[
        Optional[str],
        Field(description="Where this node has the checkpoint, written down to be checked: it must equal model.name (vLLM loads one path on every node)."),
    ] = None


class Kubernetes(StrictModel):
    """What `launcher render --format k8s` needs beyond the vLLM command."""

    image: Annotated[
        Optional[str], Field(min_length=1, description="Container image with vLLM; default vllm/vllm-openai:v<vllm.version>. Pin a digest in production.")
    ] = None
    namespace: Annotated[Optional[str], Field(description="Namespace of every object; default: the one kubectl uses.")] = None
    hf_token_secret: Annotated[
        str, Field(min_length=1, description="Secret holding the Hugging Face token, read as HF_TOKEN (optional: public checkpoints start without it).")
    ] = "hf-token"
    hf_token_key: Annotated[str, Field(min_length=1, description="Key of the token inside hf_token_secret.")] = "token"
    api_key_secret: Annotated[
        str, Field(min_length=1, description="Secret holding the API key, read as VLLM_API_KEY when server.api_key_env is set.")
    ] = "vllm-api-key"
    api_key_key: Annotated[str, Field(min_length=1, description="Key of the API key inside api_key_secret.")] = "api-key"
    shm_size: Annotated[
        str,
        Field(pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$", description="Size of the in-memory /dev/shm (NCCL and vLLM's workers use shared memory), e.g. 16Gi."),
    ] = "16Gi"
    model_cache_pvc: Annotated[
        Optional[str],
        Field(description="PersistentVolumeClaim mounted at /root/.cache/huggingface, so pods share downloaded weights (same model path everywhere)."),
    ] = None
    model_cache_host_path: Annotated[
        Union[Literal[False], Annotated[str, Field(pattern=r"^/")]],
        Field(description="Without model_cache_pvc: this directory of each node is the pods' Hugging Face cache (hostPath, created "
              "if missing), so the ~34 GB download happens once per node, not once per pod. false: no cache volume."),
    ] = "/var/cache/huggingface"
    compile_cache_host_path: Annotated[
        Union[Literal[False], Annotated[str, Field(pattern=r"^/")]],
        Field(description="This directory of each node is the pods' compile cache (vllm.cache_dir inside the pod: torch.compile, "
              "Triton, FlashInfer, CUDA; hostPath, created if missing), so a restarted pod loads its kernels instead of compiling "
              "them. false: none (every pod start compiles)."),
    ] = "/var/cache/vllm-compile"
    service_type: Annotated[
        Literal["ClusterIP", "NodePort", "LoadBalancer"], Field(description="Type of the Service in front of the API server(s).")
    ] = "ClusterIP"


class Deployment(StrictModel):
    """Beyond one `vllm serve` on one machine: independent replicas, one engine over several nodes, Kubernetes."""

    replicas: Annotated[
        PositiveInt,
        Field(description="Independent copies of the whole engine, each its own vllm serve (its own machine or pod) behind a load balancer."),
    ] = 1
    nodes: Annotated[
        PositiveInt,
        Field(description="Machines one engine spans (vLLM multi-node: pipeline stages across nodes, tensor parallel within each). 1 = one machine."),
    ] = 1
    gpus_per_node: Annotated[
        Optional[PositiveInt], Field(description="GPUs each node gives the engine; default hardware.gpu_count / nodes.")
    ] = None
    backend: Annotated[
        Literal["mp", "ray"],
        Field(
            description="How a multi-node engine starts: mp (vLLM's own: --nnodes/--node-rank/--master-addr, --headless on the "
            "other nodes) or ray (a Ray cluster, then one vllm serve --distributed-executor-backend ray on the head)."
        ),
    ] = "mp"
    master_addr: Annotated[
        Optional[HostAddress], Field(description="Address the other nodes reach the head on (mp: --master-addr; ray: the Ray head); default hosts[0].ip.")
    ] = None
    master_port: Annotated[int, Field(ge=1, le=65535, description="torch.distributed port on the head (mp: --master-port).")] = 29501
    ray_port: Annotated[int, Field(ge=1, le=65535, description="Ray head port (ray backend).")] = 6379
    hosts: Annotated[
        tuple[Host, ...],
        Field(description="One entry per node in node-rank order; needed to render each node's own command (not for Kubernetes)."),
    ] = ()
    nccl_socket_ifname: Annotated[Optional[str], Field(description="NCCL_SOCKET_IFNAME for every node without its own.")] = None
    gloo_socket_ifname: Annotated[Optional[str], Field(description="GLOO_SOCKET_IFNAME for every node without its own.")] = None
    load_balancer: Annotated[
        str,
        Field(description="Notes on what spreads requests over the replicas (e.g. a router URL); printed with the rendered commands."),
    ] = ""
    kubernetes: Annotated[Kubernetes, Field(description="Kubernetes settings for --format k8s.")] = Field(default_factory=Kubernetes)

    @field_validator("hosts", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @property
    def head_address(self) -> Optional[str]:
        """--master-addr / the Ray head: the explicit address, else the first host's."""
        return self.master_addr or (self.hosts[0].ip if self.hosts else None)


class Deviation(StrictModel):
    """One place where the profile knowingly departs from the model card, and why."""

    card: Annotated[str, Field(description="What the model card says, e.g. `--mamba-cache-mode all`.")]
    rendered: Annotated[str, Field(description="What this profile renders instead (or `(dropped)`).")]
    why: Annotated[str, Field(description="The reason, with the upstream fact behind it.")]


class Profile(StrictModel):
    """A hardware profile: everything needed to check a machine and start vLLM on it."""

    extends: Annotated[Optional[str], Field(description="Name or path of a base profile whose values this one overrides.")] = None
    description: Annotated[str, Field(description="One or two sentences for `launcher profiles` and `explain`.")] = ""
    hardware: Annotated[Hardware, Field(description="What the machine must provide.")]
    vllm: Annotated[Vllm, Field(description="Target vLLM version and entrypoint.")] = Field(default_factory=Vllm)
    model: Annotated[Model, Field(description="The checkpoint.")]
    parallel: Annotated[Parallel, Field(description="Tensor, pipeline and data parallelism.")] = Field(default_factory=Parallel)
    engine: Annotated[Engine, Field(description="Engine memory and scheduling.")] = Field(default_factory=Engine)
    kv_cache: Annotated[KvCache, Field(description="KV cache.")] = Field(default_factory=KvCache)
    speculative: Annotated[Optional[Speculative], Field(description="Speculative decoding (MTP).")] = None
    chat: Annotated[Chat, Field(description="Parsers, tools and chat template.")] = Field(default_factory=Chat)
    server: Annotated[Server, Field(description="HTTP server.")] = Field(default_factory=Server)
    deployment: Annotated[
        Optional[Deployment],
        Field(description="Replicas, multi-node (vLLM native or Ray) and Kubernetes; absent = one vllm serve on one machine."),
    ] = None
    env: Annotated[
        dict[str, str],
        Field(description="Environment variables for vLLM, e.g. CUDA_VISIBLE_DEVICES. Numbers become strings, true/false become 1/0."),
    ] = Field(default_factory=dict)
    extra_args: Annotated[
        tuple[str, ...], Field(description="Escape hatch: more vLLM arguments, appended verbatim and checked against the engine schema.")
    ] = ()
    deviations: Annotated[
        tuple[Deviation, ...], Field(description="Knowing departures from the model card, printed when rendering.")
    ] = ()

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsafe_values(cls, data: Any) -> Any:
        _check_values(data, "")
        return data

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        # YAML numbers and booleans reach env as int/float/bool; the process environment wants strings.
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(item, bool):
                    item = "1" if item else "0"
                elif isinstance(item, (int, float)):
                    item = str(item)
                out[key] = item
            return out
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value

    @field_validator("extra_args", "deviations", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @property
    def mtp_enabled(self) -> bool:
        return self.speculative is not None and self.speculative.enabled

    @property
    def facts_key(self) -> str:
        return self.model.facts or self.model.name

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Profile":
        rules = [
            _rule_valid_tp,
            _rule_gpu_count,
            _rule_mtp_pipeline,
            _rule_deployment,
            _rule_auto_tool_choice,
            _rule_xml_parser_reasoning,
            _rule_mamba_block_size,
            _rule_json_dicts,
        ]
        for rule in rules:
            rule(self)
        return self


def _check_values(value: Any, key: str, depth: int = 0) -> None:
    """What no flag, file or JSON reader can carry: NUL and lone surrogates in text, NaN/Infinity, absurd integers."""
    if depth > 64:
        raise RuleError(key, "nested too deep")
    if isinstance(value, dict):
        for k, item in value.items():
            _check_values(item, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_values(item, f"{key}.{i}", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise RuleError(key, "contains a NUL character, which no command line or environment can carry")
        if any("\ud800" <= c <= "\udfff" for c in value):
            raise RuleError(key, "contains text that is not valid Unicode (a lone surrogate)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise RuleError(key, f"{value} is not a number a profile can hold (NaN and Infinity are refused)")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise RuleError(key, f"the number is absurdly large (more than {MAX_INT})")


class RuleError(ValueError):
    """A cross-field rule failed; `key` is the dotted key to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _rule_valid_tp(p: Profile) -> None:
    from launcher.model.facts import MODEL_FACTS

    facts = MODEL_FACTS.get(p.facts_key)
    tp = p.parallel.tp
    if facts is not None and tp not in facts.valid_tensor_parallel_sizes:
        valid = ", ".join(str(v) for v in facts.valid_tensor_parallel_sizes)
        raise RuleError(
            "parallel.tensor_parallel_size",
            f"{tp} does not divide this model's heads ({facts.num_attention_heads} query, "
            f"{facts.linear_num_key_heads}/{facts.linear_num_value_heads} Gated DeltaNet); valid: {valid}",
        )


def _rule_gpu_count(p: Profile) -> None:
    world = p.parallel.world_size
    if world != p.hardware.gpu_count:
        raise RuleError(
            "hardware.gpu_count",
            f"is {p.hardware.gpu_count} but tensor_parallel_size x pipeline_parallel_size x data_parallel_size = {world}; make them equal",
        )


def _rule_mtp_pipeline(p: Profile) -> None:
    if p.mtp_enabled and p.parallel.pp > 1:
        raise RuleError(
            "parallel.pipeline_parallel_size",
            "MTP speculative decoding does not work with pipeline parallel > 1 (vllm#49355); use tensor parallel or set speculative.enabled: false",
        )


# Variables each node of a multi-node engine must set for itself (vLLM docs; docs/multi-node.md#rendering).
PER_NODE_ENV = ("VLLM_HOST_IP",)


def node_gpu_counts(p: Profile) -> tuple[int, ...]:
    """GPUs each node of one engine gives, in node-rank order (one entry for a one-machine engine)."""
    d = p.deployment
    if d is None:
        return (p.hardware.gpu_count,)
    default = d.gpus_per_node or p.hardware.gpu_count // d.nodes
    if d.hosts:
        return tuple(h.gpus or default for h in d.hosts)
    return (default,) * d.nodes


def _rule_deployment(p: Profile) -> None:
    d = p.deployment
    if d is None:
        return
    par = p.parallel
    tp, pp, dp = par.tp, par.pp, par.dp
    if d.hosts and len(d.hosts) != d.nodes:
        raise RuleError("deployment.hosts", f"lists {len(d.hosts)} hosts but deployment.nodes is {d.nodes}; give one entry per node, head first")
    if d.nodes > 1 and d.gpus_per_node is None and not d.hosts and p.hardware.gpu_count % d.nodes:
        raise RuleError(
            "deployment.nodes",
            f"{d.nodes} nodes do not split hardware.gpu_count {p.hardware.gpu_count} evenly; set deployment.gpus_per_node",
        )
    counts = node_gpu_counts(p)
    given = sum(counts)
    world = par.world_size
    if world != given:
        key = "deployment.hosts" if any(h.gpus for h in d.hosts) else "deployment.gpus_per_node"
        raise RuleError(
            key,
            f"the nodes give {given} GPUs ({' + '.join(map(str, counts))}) but tensor x pipeline x data parallel = "
            f"{tp} x {pp} x {dp} = {world}; make them equal",
        )
    for rank, count in enumerate(counts):
        if count % tp:
            raise RuleError(
                "parallel.tensor_parallel_size",
                f"{tp} does not divide the {count} GPUs of node {rank}; tensor parallel stays within a node "
                "(pipeline parallel spans nodes)",
            )
    if d.nodes > 1:
        _rule_multi_node(p, d, counts)
    _rule_hosts_agree(p, d)


def _rule_multi_node(p: Profile, d: Deployment, counts: tuple[int, ...]) -> None:
    if len(set(counts)) > 1:
        raise RuleError(
            "deployment.hosts",
            f"nodes differ ({', '.join(map(str, counts))} GPUs); tensor x pipeline parallel over nodes needs identical nodes",
        )
    if (p.parallel.data_parallel_size or 1) > 1:
        raise RuleError(
            "parallel.data_parallel_size",
            "data parallel across nodes is not rendered; for more copies of the engine use deployment.replicas "
            "(independent servers behind a load balancer)",
        )
    ips = [h.ip for h in d.hosts]
    dup = next((ip for ip in ips if ips.count(ip) > 1), None)
    if dup is not None:
        raise RuleError("deployment.hosts", f"ip {dup} appears twice; every node needs its own VLLM_HOST_IP")
    for name in PER_NODE_ENV:
        if name in p.env:
            raise RuleError(f"env.{name}", "differs per node; give each node's address as deployment.hosts[].ip instead")
    backend = p.parallel.distributed_executor_backend
    if backend is not None and backend != d.backend:
        raise RuleError(
            "parallel.distributed_executor_backend",
            f"is {backend} but deployment.backend is {d.backend}; a multi-node engine uses the deployment's backend",
        )


def _rule_hosts_agree(p: Profile, d: Deployment) -> None:
    for i, host in enumerate(d.hosts):
        if host.vllm_version is not None and host.vllm_version != p.vllm.version:
            raise RuleError(
                f"deployment.hosts.{i}.vllm_version",
                f"node {i} has vLLM {host.vllm_version} but the profile targets {p.vllm.version}; every node must run the same engine",
            )
        if host.model_path is not None and host.model_path != p.model.name:
            raise RuleError(
                f"deployment.hosts.{i}.model_path",
                f"node {i} has the model at {host.model_path} but model.name is {p.model.name}; vLLM loads one path on every node",
            )


def _rule_auto_tool_choice(p: Profile) -> None:
    if p.chat.enable_auto_tool_choice and not p.chat.tool_call_parser:
        raise RuleError("chat.enable_auto_tool_choice", "needs chat.tool_call_parser (vLLM refuses auto tool choice without a parser)")


def _rule_xml_parser_reasoning(p: Profile) -> None:
    parser = p.chat.tool_call_parser
    if parser in TOOL_PARSERS_NEEDING_QWEN3_REASONING and p.chat.reasoning_parser != "qwen3":
        raise RuleError(
            "chat.reasoning_parser",
            f"must be qwen3 when chat.tool_call_parser is {parser} (without it </think> is swallowed, vllm#51679)",
        )


def _rule_mamba_block_size(p: Profile) -> None:
    if p.engine.mamba_block_size is not None and p.engine.enable_prefix_caching is not True:
        raise RuleError("engine.mamba_block_size", "needs engine.enable_prefix_caching: true (vLLM refuses it otherwise)")


def _rule_json_dicts(p: Profile) -> None:
    # Dict values are rendered with json.dumps; refuse what JSON cannot carry (e.g. YAML dates).
    for key, value in (
        ("engine.compilation_config", p.engine.compilation_config),
        ("chat.default_chat_template_kwargs", p.chat.default_chat_template_kwargs),
        ("chat.override_generation_config", p.chat.override_generation_config),
        ("speculative.extra", p.speculative.extra if p.speculative else None),
    ):
        if value is None:
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RuleError(key, f"cannot be written as JSON: {exc}") from None


def profile_json_schema() -> dict[str, Any]:
    """JSON Schema of a profile file, for editors (yaml-language-server) and `launcher schema`;
    shipped as profiles/profile.schema.json (a test keeps the two equal).

    It describes one file, not the layered result: a file that `extends` another inherits what it
    leaves out, so no key of a mapping section is required here (launcher checks the layered
    profile); list items (hosts, deviations) are written whole and keep their required keys. A
    compute capability may be written "8.0", as launcher reads it.
    """
    schema = Profile.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "launcher profile"
    for node in _mapping_sections(schema, schema):
        node.pop("required", None)
    cc = schema["$defs"]["Hardware"]["properties"]["min_compute_capability"]
    array = {k: cc.pop(k) for k in ("type", "prefixItems", "minItems", "maxItems")}
    cc["anyOf"] = [{"type": "string", "pattern": r"^[0-9]+\.[0-9]+$"}, array]
    return schema


def _mapping_sections(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas reached from `node` through properties (not through list items)."""
    found = [node]
    for sub in node.get("properties", {}).values():
        for alt in [sub, *sub.get("anyOf", [])]:
            ref = alt.get("$ref", "")
            if ref.startswith("#/$defs/"):
                found += _mapping_sections(root["$defs"][ref.removeprefix("#/$defs/")], root)
    return found


# The blocks whose fields become vLLM flags, in render order (output.render and profile.load read them).
FLAG_SECTIONS = ("parallel", "engine", "kv_cache", "model", "chat", "server")


def flag_for(field_name: str, extra: Any) -> str:
    """The vLLM flag a profile field renders as: its `flag` schema extra, else --field-name."""
    if isinstance(extra, dict) and "flag" in extra:
        return str(extra["flag"])
    return "--" + field_name.replace("_", "-")
