"""A stand-in `pynvml` for subprocess tests: it answers from a captured inventory file.

Put this folder first on PYTHONPATH and name the capture in LAUNCHER_TEST_NVML_INVENTORY; the
launcher's real probe (launcher/gpu.py) then reads these GPUs exactly as it reads NVML. The answers
come from tests/unit/test_gpu.py's fake, which is fed the launcher-inventory JSON of a real capture
(tests/fixtures/inventories/h200x2.json) or of a machine built from model-facts.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_gpu import fake_nvml  # noqa: E402

_capture = Path(os.environ["LAUNCHER_TEST_NVML_INVENTORY"])
globals().update({k: v for k, v in vars(fake_nvml(json.loads(_capture.read_text()))).items() if not k.startswith("__")})
