"""What each known vLLM's `vllm serve` accepts: checks and translations in milliseconds, no vLLM import.

The knowledge lives in engine schemas (`launcher/engines/vllm-<version>.json`, shipped, generated
from a real install by tools/gen_engine_schema.py; or learned from the installed vLLM by
`launcher engines learn` into the user's cache). `check_argv` replays what `vllm serve` does
with an argv: the `FlexibleArgumentParser.parse_args` preprocessing (`--model` moved to the
positional slot, `_`/`-` in flag names, `-O3`, dotted JSON keys), Python 3.11 argparse (prefix
abbreviations, `--flag=value`, nargs, type conversion, choices), then the checks vLLM makes before
it loads a model (attention backend, KV cache dtype, parsers, speculative method, the serve-time
rules). tests/engine/ proves that the verdicts agree with the real parser of every shipped version.

One concern per module:
  schemas     loading the JSON schemas (shipped, learned), versions, nearest_version
  values      value types: ports of the `type=` callables vLLM gives argparse, choices
  preprocess  FlexibleArgumentParser's rewriting of the argv
  parsing     the argparse port (abbreviations, nargs, positionals) over the preprocessed argv
  rules       the serve rules vLLM checks after parsing (late-validated values, serve args)
  check       check_argv / ensure_valid: the stages above in order
  translate   translate_argv: an argv for one version rewritten for another
  diff        diff_versions: what changed between two versions
  behaviour   how each version behaves beyond its flags (attention backends, start-up memory check,
              capture and profiling rules), read from behaviour-<version>.json

The lowest stage (docs/architecture.md): imports only the base modules (launcher.errors, .defaults).
  installed   which vLLM will run (package metadata, no import); what serve and check do with it
  learn       `launcher engines learn`: run introspect.py with the installed vLLM's Python
  introspect  the introspection itself (runs inside the vLLM's Python: stdlib and vLLM only)
"""

from launcher.engine.check import check_argv, ensure_valid
from launcher.engine.diff import EngineDiff, diff_versions
from launcher.engine.findings import ERROR, WARNING, Finding, errors
from launcher.engine.schemas import (
    DEFAULT_VERSION,
    LEARNED,
    SHIPPED,
    EngineSchema,
    NearestVersion,
    Option,
    learned_dir,
    learned_versions,
    load_engine,
    nearest_version,
    origin_of,
    resolve_version,
    shipped_versions,
    supported_versions,
)
from launcher.engine.translate import translate_argv

__all__ = [
    "DEFAULT_VERSION", "ERROR", "LEARNED", "SHIPPED", "WARNING",
    "EngineDiff", "EngineSchema", "Finding", "NearestVersion", "Option",
    "check_argv", "diff_versions", "ensure_valid", "errors", "learned_dir", "learned_versions", "load_engine",
    "nearest_version", "origin_of", "resolve_version", "shipped_versions", "supported_versions", "translate_argv",
]
