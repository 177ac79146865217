"""A stand-in `pynvml` for subprocess tests: it answers from a captured inventory file.

Put this folder (tests/fakes/pythonpath) first on PYTHONPATH and name the capture in
LAUNCHER_TEST_NVML_INVENTORY (tests.fakes.nvml_env() builds both); launcher's real probe
(launcher/hardware/gpu.py) then reads those GPUs exactly as it reads NVML. The answers come from
tests/fakes/nvml.py, loaded here by its path: the subprocess has no `tests` package on its path,
and this module must not change sys.path.
"""

import importlib.util
import json
import os
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_launcher_tests_fake_nvml", Path(__file__).resolve().parents[1] / "nvml.py")
assert _spec is not None and _spec.loader is not None
_fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fake)

_capture = Path(os.environ["LAUNCHER_TEST_NVML_INVENTORY"])
globals().update({k: v for k, v in vars(_fake.fake_nvml(json.loads(_capture.read_text()))).items() if not k.startswith("__")})
