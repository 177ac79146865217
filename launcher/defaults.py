"""Constants more than one layer needs: units, vLLM's defaults launcher relies on, launcher's default target."""

GIB = 1 << 30
MIB = 1 << 20

DEFAULT_VLLM_VERSION = "0.33.0"  # the vLLM a profile targets unless it says otherwise (vllm.version)
DEFAULT_PORT = 8000  # vLLM's own default for --port (entrypoints/openai/cli_args.py)
DEFAULT_HOST = "0.0.0.0"  # what a server listens on in the rendered container/cluster outputs when server.host is unset
