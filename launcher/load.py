"""Loading: find profile files, read YAML strictly, layer bases/env/overrides, validate once."""

from __future__ import annotations

import copy
import difflib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import yaml

from launcher.errors import ProfileError, located

if TYPE_CHECKING:
    from launcher.schema import Profile

PROFILES_DIR_ENV = "LAUNCHER_PROFILES_DIR"
ENV_PREFIX = "LAUNCHER__"  # LAUNCHER__ENGINE__MAX_MODEL_LEN=32768 -> engine.max_model_len
ENV_SET = "LAUNCHER_SET"  # "engine.max_model_len=32768 server.port=9000"
ENV_EXTRA_ARGS = "LAUNCHER_EXTRA_ARGS"  # "--enforce-eager --seed 1"
DELETE = object()  # a `none`/`null` override removes the key, so the default applies again


def shipped_profiles_dir() -> Path:
    """Profiles installed with the package, or the checkout's `profiles/` in a source tree."""
    here = Path(__file__).resolve().parent
    installed = here / "profiles"
    if installed.is_dir():
        return installed
    return here.parent / "profiles"


def search_dirs(profiles_dirs: Sequence[str | os.PathLike[str]] = (), environ: Mapping[str, str] | None = None) -> list[Path]:
    """User directories first (flag, then environment), the shipped profiles last."""
    environ = os.environ if environ is None else environ
    dirs = [Path(d) for d in profiles_dirs]
    dirs += [Path(d) for d in environ.get(PROFILES_DIR_ENV, "").split(os.pathsep) if d]
    dirs.append(shipped_profiles_dir())
    return dirs


def is_base_name(path: Path) -> bool:
    """Files whose name starts with `_` are bases: extended, never served or listed."""
    return path.name.startswith("_")


def list_profiles(dirs: Sequence[Path]) -> dict[str, Path]:
    """Name -> file for every servable profile; earlier directories shadow later ones."""
    found: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            if not is_base_name(f):
                found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def find_profile(name: str, dirs: Sequence[Path], relative_to: Path | None = None) -> Path:
    """Resolve a profile name or path to a file, with a did-you-mean when it is unknown."""
    looks_like_path = os.sep in name or "/" in name or name.endswith((".yaml", ".yml"))
    if looks_like_path:
        candidates = [Path(name)] if relative_to is None else [relative_to / name, Path(name)]
        for c in candidates:
            if c.is_file():
                return c
        raise ProfileError(f"profile file {name} does not exist")
    for d in ([relative_to] if relative_to else []) + list(dirs):
        for ext in (".yaml", ".yml"):
            candidate = d / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    known = sorted(list_profiles(dirs))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known profiles: {', '.join(known) or 'none'}"
    raise ProfileError(f"no profile named '{name}'{hint}")


# ---------------------------------------------------------------------------- YAML


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(key, line, seen[key])
        seen[key] = line
    return {loader.construct_object(k, deep=deep): loader.construct_object(v, deep=deep) for k, v in node.value}


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node | None, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line of that key, walking the composed YAML tree."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[dotted] = key_node.start_mark.line + 1
            _line_map(value_node, dotted, out)
    return out


@dataclass(frozen=True)
class Layer:
    """One source of values, lowest precedence first when stacked."""

    name: str  # "base", "profile", "env", "--set", "args", "check"
    source: str  # file path, variable name or flag, for messages
    data: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)

    def describe(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read one profile file strictly: a mapping, no duplicate keys, errors with file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        lines = _line_map(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except _DuplicateKey as exc:
        raise ProfileError(f"{path}:{exc.line}: duplicate key '{exc.key}' (first set on line {exc.first})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ProfileError(f"{path}{line}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: YAML error: {exc}") from None
    if data is None:
        raise ProfileError(f"{path}: the file is empty; a profile needs at least `hardware` and `model` (or `extends`)")
    if not isinstance(data, dict):
        raise ProfileError(f"{path}:1: a profile must be a mapping of keys to values, not a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ProfileError(f"{path}:{lines.get(str(key), 1)}: key {key!r} must be a string")
    return data, lines


def file_layers(path: Path, dirs: Sequence[Path]) -> list[Layer]:
    """The profile file and its `extends` chain, base first."""
    chain: list[Layer] = []
    visited: list[Path] = []
    current = path
    while True:
        resolved = current.resolve()
        if resolved in visited:
            cycle = " -> ".join(p.name for p in visited + [resolved])
            raise ProfileError(f"{current}: `extends` cycle: {cycle}")
        visited.append(resolved)
        data, lines = read_yaml(current)
        chain.append(Layer("profile" if current == path else "base", str(current), data, lines))
        base = data.get("extends")
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise ProfileError(located("extends", "must be the name or path of a profile", str(current), lines.get("extends")))
        try:
            current = find_profile(base, dirs, relative_to=current.parent)
        except ProfileError as exc:
            raise ProfileError(located("extends", f"base profile: {exc}", str(current), lines.get("extends"))) from None
    chain.reverse()
    # `extends` is consumed here; it must not leak from a base into the merged profile.
    return [Layer(l.name, l.source, {k: v for k, v in l.data.items() if k != "extends"}, l.lines) for l in chain[:-1]] + [chain[-1]]


# ---------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """An override value is read as a YAML scalar or flow collection: 8 -> int, true -> bool, {..} -> dict."""
    if text.strip().lower() in ("none", "null", "~"):
        return DELETE
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"cannot parse value {text!r}: {problem}") from None
    return "" if value is None else value


def parse_set(item: str, source: str) -> tuple[str, Any]:
    """`engine.max_model_len=32768` -> ("engine.max_model_len", 32768)."""
    if "=" not in item:
        raise ProfileError(f"{source}: '{item}' must look like dotted.key=value (e.g. engine.max_model_len=32768)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ProfileError(f"{source}: '{item}': the key must be dotted words like engine.max_model_len")
    try:
        return key, parse_value(raw)
    except ValueError as exc:
        raise ProfileError(f"{source}: {key}: {exc}") from None


def set_layer(items: Iterable[str], source: str = "--set") -> Layer | None:
    data: dict[str, Any] = {}
    for item in items:
        key, value = parse_set(item, source)
        _assign(data, key.split("."), value)
    return Layer("--set", source, data) if data else None


def env_layer(environ: Mapping[str, str]) -> Layer | None:
    """Container-friendly overrides: LAUNCHER__SECTION__KEY=value and LAUNCHER_SET."""
    data: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ProfileError(f"environment variable {name}: expected LAUNCHER__SECTION__KEY (double underscores between parts)")
        # Schema keys are lower case; names under `env` keep their case (they are variable names).
        keys = [parts[0].lower()] + ([*parts[1:]] if parts[0].lower() == "env" else [p.lower() for p in parts[1:]])
        try:
            value = parse_value(environ[name])
        except ValueError as exc:
            raise ProfileError(f"environment variable {name}: {exc}") from None
        _assign(data, keys, value)
    if environ.get(ENV_SET):
        try:
            items = shlex.split(environ[ENV_SET])
        except ValueError as exc:
            raise ProfileError(f"environment variable {ENV_SET}: {exc}") from None
        for item in items:
            key, value = parse_set(item, f"environment variable {ENV_SET}")
            _assign(data, key.split("."), value)
    return Layer("env", "environment", data) if data else None


def extra_args_layer(args: Sequence[str], source: str, base: Sequence[str] = ()) -> Layer | None:
    if not args:
        return None
    return Layer("args", source, {"extra_args": [*base, *args]})


def env_extra_args(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get(ENV_EXTRA_ARGS, "")
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ProfileError(f"environment variable {ENV_EXTRA_ARGS}: {exc}") from None


def _assign(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = node[k] = {}
        node = nxt
    node[keys[-1]] = value


# ------------------------------------------------------------------------ merging


@dataclass(frozen=True)
class Merged:
    data: dict[str, Any]
    provenance: dict[str, Layer]  # dotted key -> the layer that set it last


def merge(layers: Sequence[Layer]) -> Merged:
    """Deep-merge plain data, lowest layer first: dicts merge, scalars and lists replace."""
    data: dict[str, Any] = {}
    provenance: dict[str, Layer] = {}
    for layer in layers:
        _merge_into(data, layer.data, "", layer, provenance)
    return Merged(data, provenance)


def _merge_into(dst: dict[str, Any], src: Mapping[str, Any], prefix: str, layer: Layer, prov: dict[str, Layer]) -> None:
    for key, value in src.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if value is DELETE:
            dst.pop(key, None)
            for k in [k for k in prov if k == dotted or k.startswith(dotted + ".")]:
                del prov[k]
            prov[dotted] = layer
            continue
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            prov[dotted] = layer
            _merge_into(dst[key], value, dotted, layer, prov)
            continue
        for k in [k for k in prov if k.startswith(dotted + ".")]:
            del prov[k]
        dst[key] = copy.deepcopy(_strip_delete(value))
        prov[dotted] = layer
        if isinstance(value, dict):
            _record(value, dotted, layer, prov)


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if v is not DELETE}
    return value


def _record(value: Mapping[str, Any], prefix: str, layer: Layer, prov: dict[str, Layer]) -> None:
    for key, item in value.items():
        dotted = f"{prefix}.{key}"
        prov[dotted] = layer
        if isinstance(item, dict):
            _record(item, dotted, layer, prov)


def layer_for(key: str, provenance: Mapping[str, Layer]) -> Layer | None:
    """The layer that set `key`, or the nearest enclosing key's layer."""
    parts = key.split(".")
    while parts:
        layer = provenance.get(".".join(parts))
        if layer is not None:
            return layer
        parts.pop()
    return None


# --------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Resolved:
    """A validated profile with the layers it came from (for `explain`)."""

    name: str
    path: Path
    profile: "Profile"
    layers: tuple[Layer, ...]
    provenance: Mapping[str, Layer]


def resolve(
    name: str,
    *,
    profiles_dirs: Sequence[str | os.PathLike[str]] = (),
    sets: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    extra_layers: Sequence[Layer] = (),
) -> Resolved:
    """Profile name or path + overrides -> validated profile.

    Precedence, lowest first: `extends` bases < the profile file < LAUNCHER__* / LAUNCHER_SET
    environment < --set < extra vLLM args (LAUNCHER_EXTRA_ARGS, then after `--`) < extra_layers.
    """
    environ = os.environ if environ is None else environ
    dirs = search_dirs(profiles_dirs, environ)
    path = find_profile(name, dirs)
    layers = file_layers(path, dirs)
    for layer in (env_layer(environ), set_layer(sets)):
        if layer is not None:
            layers.append(layer)
    file_extra = merge(layers).data.get("extra_args") or []
    if not isinstance(file_extra, list):
        file_extra = []
    args = [*env_extra_args(environ), *extra_args]
    args_layer = extra_args_layer(args, "extra vLLM args", base=file_extra)
    if args_layer is not None:
        layers.append(args_layer)
    layers.extend(extra_layers)
    merged = merge(layers)
    _expand_paths(merged.data, environ)
    profile = validate(merged)
    return Resolved(path.stem, path, profile, tuple(layers), merged.provenance)


PATH_KEYS = (("model", "name"), ("model", "tokenizer"), ("chat", "chat_template"))


def _expand_paths(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """`~` and `$VAR` in local paths are expanded here, as a shell would: vLLM takes them literally."""
    import re

    for section, key in PATH_KEYS:
        block = data.get(section)
        value = block.get(key) if isinstance(block, dict) else None
        if not isinstance(value, str) or not (value.startswith("~") or "$" in value):
            continue
        if value == "~" or value.startswith("~/"):
            home = environ.get("HOME") or os.path.expanduser("~")
            value = home + value[1:]
        value = re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: environ.get(m.group(1) or m.group(2), m.group(0)), value)
        block[key] = value


def validate(merged: Merged) -> "Profile":
    """The one place a ValidationError becomes a ProfileError naming file, line and key."""
    from pydantic import ValidationError

    from launcher.schema import Profile

    try:
        return Profile.model_validate(merged.data)
    except ValidationError as exc:
        lines = [_describe_error(err, merged) for err in exc.errors()]
        raise ProfileError("\n".join(dict.fromkeys(lines))) from None


def _describe_error(err: Mapping[str, Any], merged: Merged) -> str:
    from launcher.schema import RuleError

    loc = [str(p) for p in err.get("loc", ())]
    key = ".".join(loc)
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, RuleError):
        key, message = cause.key, cause.message
    elif kind == "extra_forbidden":
        message = "unknown key" + _did_you_mean(loc)
    elif kind == "missing":
        message = "is required"
    else:
        message = _plain_message(err)
    layer = layer_for(key, merged.provenance)
    if layer is None:
        # A missing key is blamed on the file that should have had it.
        layer = next((l for l in merged.provenance.values() if l.name == "profile"), None)
        return located(key, message, layer.source if layer else None)
    if layer.name in ("profile", "base"):
        return located(key, message, layer.source, layer.lines.get(key) or _nearest_line(key, layer))
    return located(key, message, _layer_label(layer))


def _layer_label(layer: Layer) -> str:
    return {"--set": "--set", "env": "environment (LAUNCHER__*/LAUNCHER_SET)", "args": "extra vLLM args"}.get(layer.name, layer.source)


def _nearest_line(key: str, layer: Layer) -> int | None:
    parts = key.split(".")
    while parts:
        line = layer.lines.get(".".join(parts))
        if line:
            return line
        parts.pop()
    return None


def _plain_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if err.get("type") not in ("missing",) and not isinstance(value, (dict, list)):
        msg = f"{msg} (got {value!r})"
    return msg


def _did_you_mean(loc: Sequence[str]) -> str:
    from launcher.schema import Profile

    allowed = _fields_at(Profile, list(loc[:-1]))
    if not allowed:
        return ""
    close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(allowed)}"


def _fields_at(model: Any, path: list[str]) -> list[str]:
    """Field names of the model reached by following `path` from `model`."""
    from pydantic import BaseModel

    current = model
    for part in path:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
