"""Engine schemas: one `vllm-<version>.json` per supported vLLM, written by tools/gen_engine_schema.py."""
