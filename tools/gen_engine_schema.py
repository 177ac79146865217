#!/usr/bin/env python3
"""Write launcher's engine schema (every `vllm serve` option + late-validated values) from an installed vLLM.

Run it with the Python of a vLLM virtual environment, never with launcher's own:

    VLLM_TARGET_DEVICE=cpu $VENV/bin/python tools/gen_engine_schema.py \
        --out launcher/engines/vllm-0.33.0.json

A thin wrapper: the introspection is library code, launcher/engine/introspect.py, which
`launcher engines learn` runs the same way for a version launcher does not ship. It is loaded by
path (stdlib and vLLM only), so the vLLM environment needs none of launcher's dependencies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

INTROSPECT = Path(__file__).resolve().parent.parent / "launcher" / "engine" / "introspect.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launcher_engine_introspect", INTROSPECT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_introspect = _load()
FORMAT = _introspect.FORMAT
build_parsers = _introspect.build_parsers
classify_type = _introspect.classify_type
collect_options = _introspect.collect_options
dumps = _introspect.dumps
generate = _introspect.generate
late_validated = _introspect.late_validated
main = _introspect.main
parse_cli = _introspect.parse_cli
resolve_device_type = _introspect.resolve_device_type
_prepare_import = _introspect.prepare_import  # tools/vllm_parse_batch.py calls it by this name
_distribution = _introspect.distribution

if __name__ == "__main__":
    sys.exit(main())
