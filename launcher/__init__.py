"""launcher: hardware profiles rendered into exact `vllm serve` commands for Qwen3.6-27B-INT8-MTP."""

__version__ = "0.1.0"
