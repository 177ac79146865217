"""Loading: find profile files, read YAML strictly, layer bases/env/overrides, validate once."""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import yaml

from launcher.errors import ProfileError, located

if TYPE_CHECKING:
    from launcher.profile.schema import Profile

PROFILES_DIR_ENV = "LAUNCHER_PROFILES_DIR"
ENV_PREFIX = "LAUNCHER__"  # LAUNCHER__ENGINE__MAX_MODEL_LEN=32768 -> engine.max_model_len
ENV_SET = "LAUNCHER_SET"  # "engine.max_model_len=32768 server.port=9000"
ENV_EXTRA_ARGS = "LAUNCHER_EXTRA_ARGS"  # "--enforce-eager --seed 1"
DELETE = object()  # a `none`/`null` override removes the key, so the default applies again

# Bounds on what one profile file or override may hold (issue 19: hostile input must fail fast, exit 2).
MAX_FILE_BYTES = 1 << 20  # a profile is a few KiB; 1 MiB is far beyond any real one
MAX_NODES = 10_000  # keys and values after YAML aliases are expanded (an alias bomb expands to billions)
MAX_DEPTH = 32  # nesting of mappings and lists (real profiles: 4)
MAX_MESSAGE = 400  # characters of one error line


def clip(text: object, limit: int = 80) -> str:
    """Text from a file or the command line, quoted for one error line: no control characters, bounded."""
    shown = repr(str(text))
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def shown(text: object, limit: int = 200) -> str:
    """A name or path as written when it is plain printable text, else quoted like `clip`."""
    value = str(text)
    return value if value.isprintable() and len(value) <= limit else clip(value, limit)


def _key_text(key: str, limit: int = 80) -> str:
    """A dotted key as written, or quoted when it holds anything but plain key characters."""
    return key if re.fullmatch(r"[A-Za-z0-9_.\-]{1,80}", key) else clip(key, limit)


def shipped_profiles_dir() -> Path:
    """Profiles installed with the package, or the checkout's `profiles/` in a source tree."""
    here = Path(__file__).resolve().parent.parent  # the launcher package
    installed = here / "profiles"
    if installed.is_dir():
        return installed
    return here.parent / "profiles"


def search_dirs(profiles_dirs: Sequence[str | os.PathLike[str]] = (), environ: Mapping[str, str] | None = None) -> list[Path]:
    """User directories first (flag, then environment), the shipped profiles last."""
    environ = os.environ if environ is None else environ
    dirs = [Path(d) for d in profiles_dirs]
    for d in dirs:
        if not d.is_dir():
            raise ProfileError(f"--profiles-dir {shown(d)}: no such directory")
    for d in (Path(d) for d in environ.get(PROFILES_DIR_ENV, "").split(os.pathsep) if d):
        if not d.is_dir():
            raise ProfileError(f"environment variable {PROFILES_DIR_ENV}: {shown(d)}: no such directory")
        dirs.append(d)
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
            if not is_base_name(f) and f.is_file():
                found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def find_profile(name: str, dirs: Sequence[Path], relative_to: Path | None = None) -> Path:
    """Resolve a profile name or path to a file, with a did-you-mean when it is unknown."""
    looks_like_path = os.sep in name or "/" in name or name.endswith((".yaml", ".yml"))
    if looks_like_path:
        candidates = [Path(name)] if relative_to is None else [relative_to / name, Path(name)]
        for c in candidates:
            _refuse_dangling(c)
            if c.is_file():
                return c
        for c in candidates:
            _refuse_not_a_file(c)
        raise ProfileError(f"profile file {shown(name)} does not exist")
    for d in ([relative_to] if relative_to else []) + list(dirs):
        for ext in (".yaml", ".yml"):
            candidate = d / f"{name}{ext}"
            _refuse_dangling(candidate)
            if candidate.is_file():
                return candidate
            _refuse_not_a_file(candidate)
    known = sorted(list_profiles(dirs))
    close = [c for c in difflib.get_close_matches(name, known, n=2) if c != name]
    hint = f"; did you mean '{close[0]}'?" if close else f"; known profiles: {', '.join(known) or 'none'}"
    raise ProfileError(f"no profile named '{shown(name, 80)}'{hint}")


def _refuse_not_a_file(path: Path) -> None:
    """Something that is there but is no file (a directory, a FIFO, a device) is named as what it is."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise ProfileError(f"profile file {shown(path)}: is a directory, not a profile file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a plain file"
        raise ProfileError(f"profile file {shown(path)}: {kind}, not a profile file (a profile is read from a plain file)")


def _refuse_dangling(path: Path) -> None:
    """A symlink that leads nowhere (a loop, a missing target) is named as such, not as an unknown profile."""
    if path.is_symlink() and not path.exists():
        raise ProfileError(f"profile file {shown(path)}: a symbolic link that leads nowhere (a loop or a missing target)")


# ---------------------------------------------------------------------------- YAML


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]` or `{[1]: 2}`: no profile key is a list or mapping
            raise _ComplexKey(line)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(key, line, seen[key])
        seen[key] = line
    return {loader.construct_object(k, deep=deep): loader.construct_object(v, deep=deep) for k, v in node.value}


class _ComplexKey(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(node: yaml.Node | None, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line of that key, walking the composed YAML tree (its size is bounded by _yaml_budget)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out.setdefault(dotted, key_node.start_mark.line + 1)
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


class _Budget:
    """Refuse, before anything is built, YAML nested too deep or expanding (through aliases) too far.

    One pass over the parser's events: each anchor's expanded size is known when its node ends, so an
    alias costs what it expands to. A billion-laughs bomb is refused after a few hundred events.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[str, int | None] = {}  # anchor -> expanded size; None while its node is still open
        self.stack: list[list[Any]] = []  # open collections: [anchor, expanded size so far]
        self.total = 0

    def add(self, n: int, line: int) -> None:
        if self.stack:
            self.stack[-1][1] += n
        self.total += n
        if self.total > MAX_NODES:
            raise ProfileError(f"{self.source}:{line}: more than {MAX_NODES} keys and values (YAML aliases counted as what they expand to); "
                               "a profile needs a few dozen")

    def event(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark else 1
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.CollectionStartEvent):
            if len(self.stack) >= MAX_DEPTH:
                raise ProfileError(f"{self.source}:{line}: nested deeper than {MAX_DEPTH} levels")
            if anchor:
                self.sizes[anchor] = None
            self.stack.append([anchor, 0])
            self.add(1, line)
        elif isinstance(event, yaml.CollectionEndEvent):
            opened, size = self.stack.pop()
            if opened:
                self.sizes[opened] = size + 1
        elif isinstance(event, yaml.ScalarEvent):
            if anchor:
                self.sizes[anchor] = 1
            self.add(1, line)
        elif isinstance(event, yaml.AliasEvent):
            size = self.sizes.get(anchor or "")
            if size is None:
                raise ProfileError(f"{self.source}:{line}: alias {clip(anchor, 40)} refers to a node that contains it (or to no node)")
            self.add(size, line)


def _yaml_budget(text: str, source: str) -> None:
    budget = _Budget(source)
    for event in yaml.parse(text, Loader=_BaseLoader):
        budget.event(event)


def safe_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML within the budget: (data, composed node). Duplicate keys refused; YAML errors as ProfileError."""
    try:
        _yaml_budget(text, source)
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise ProfileError(f"{source}:{exc.line}: duplicate key {clip(exc.key)} (first set on line {exc.first})") from None
    except _ComplexKey as exc:
        raise ProfileError(f"{source}:{exc.line}: a key must be a plain word, not a list or a mapping (YAML `?` complex key)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ProfileError(f"{source}{line}: YAML syntax error: {what[:200]}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: YAML error: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:
        raise ProfileError(f"{source}: nested too deep") from None
    return data, node


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read one profile file strictly: a mapping, no duplicate keys, errors with file:line."""
    from launcher.files import read_bytes

    raw = read_bytes(path, MAX_FILE_BYTES, "profile")  # a plain file only: a FIFO or /dev/zero is refused, not read
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None
    data, node = safe_yaml(text, str(path))
    lines = _line_map(node)
    if data is None:
        raise ProfileError(f"{path}: the file is empty; a profile needs at least `hardware` and `model` (or `extends`)")
    if not isinstance(data, dict):
        raise ProfileError(f"{path}:1: a profile must be a mapping of keys to values, not a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ProfileError(f"{path}:{lines.get(str(key), 1)}: key {clip(key)} must be a string")
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
            current = _find_base(base, current, dirs)
        except ProfileError as exc:
            raise ProfileError(located("extends", f"base profile: {exc}", str(current), lines.get("extends"))) from None
    chain.reverse()
    # `extends` is consumed here; it must not leak from a base into the merged profile.
    return [Layer(b.name, b.source, {k: v for k, v in b.data.items() if k != "extends"}, b.lines) for b in chain[:-1]] + [chain[-1]]


def _find_base(base: str, extending: Path, dirs: Sequence[Path]) -> Path:
    """`extends` names a profile file: .yaml/.yml, next to the extending file or in a profiles directory.

    Anything else (`extends: /etc/shadow`) is refused before it is read.
    """
    found = find_profile(base, dirs, relative_to=extending.parent)
    if found.resolve() == extending.resolve():
        found = _next_of_name(base, extending, dirs) or found  # none further: the cycle is reported as one
    allowed = {d.resolve() for d in [extending.parent, *dirs] if d.is_dir()}
    where = Path(os.path.abspath(found)).parent.resolve()
    if found.suffix not in (".yaml", ".yml") or found.resolve().suffix not in (".yaml", ".yml") or where not in allowed:
        raise ProfileError(
            f"{clip(base, 120)} is not a profile file: `extends` takes a profile name, or a .yaml/.yml file next to "
            "this one or in a profiles directory (--profiles-dir, LAUNCHER_PROFILES_DIR, the shipped profiles)"
        )
    return found


def _next_of_name(base: str, extending: Path, dirs: Sequence[Path]) -> Path | None:
    """A profile that extends its own name (`my/dual-3090.yaml: extends: dual-3090`, the way to change one value of a
    shipped profile) extends the next profile of that name in the search path, after the extending file's directory."""
    if os.sep in base or "/" in base or base.endswith((".yaml", ".yml")):
        return None  # a path names one file
    own = extending.parent.resolve()
    order: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in order:
            order.append(d.resolve())
    if own not in order:
        order.insert(0, own)  # a file outside the search path: every directory of it comes after
    for d in order[order.index(own) + 1 :]:
        try:
            candidate = find_profile(base, [d])
        except ProfileError:
            continue
        if candidate.resolve() != extending.resolve():
            return candidate
    return None


# ---------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """An override value is read as a YAML scalar or flow collection: 8 -> int, true -> bool, {..} -> dict."""
    if text.strip().lower() in ("none", "null", "~"):
        return DELETE
    if len(text) > MAX_FILE_BYTES:
        raise ValueError(f"value too long ({len(text)} characters)")
    try:
        value, _ = safe_yaml(text, "value")
    except ProfileError as exc:
        raise ValueError(f"cannot parse value {clip(text)}: {exc.message.split(': ', 1)[-1]}") from None
    return "" if value is None else value


def parse_set(item: str, source: str) -> tuple[str, Any]:
    """`engine.max_model_len=32768` -> ("engine.max_model_len", 32768); `env.NAME=...` -> the text as written."""
    if "=" not in item:
        raise ProfileError(f"{source}: {_clip_item(item)} must look like dotted.key=value (e.g. engine.max_model_len=32768)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")) or len(key.split(".")) > MAX_DEPTH:
        raise ProfileError(f"{source}: {_clip_item(item)}: the key must be dotted words like engine.max_model_len")
    _refuse_extends(key, source)
    return key, override_value(key.split("."), raw, f"{source}: {_key_text(key)}")


def _clip_item(item: str) -> str:
    """A --set item for an error line; an `env.` value (possibly a secret) is not shown."""
    key, eq, _ = item.partition("=")
    return clip(f"{key}=..." if eq and (key.strip() == "env" or key.strip().startswith("env.")) else item)


def _refuse_extends(key: str, source: str) -> None:
    if key.split(".")[0] == "extends":
        raise ProfileError(f"{source}: extends: the base of a profile is read from its file only; an override cannot change it "
                           "(write a profile file with `extends: NAME` instead)")


def override_value(keys: Sequence[str], raw: str, where: str) -> Any:
    """The value of one override for the dotted `keys`.

    `env.NAME` values are environment variables, strings by nature: taken verbatim (YAML would read
    `12:30:00` as 45000, `yes` as true, cut `pw #x` at ` #`, and echo a secret in its parse error).
    Every other value is read as a YAML scalar or flow collection; a parse error under `env` does not
    show the value.
    """
    if len(keys) >= 2 and keys[0] == "env":
        if len(raw) > MAX_FILE_BYTES:
            raise ProfileError(f"{where}: value too long ({len(raw)} characters)")
        return raw
    try:
        return parse_value(raw)
    except ValueError as exc:
        if keys and keys[0] == "env":
            raise ProfileError(f"{where}: cannot parse the value (not shown: it may hold a secret); write env as "
                               "{NAME: value, ...} or set each variable with env.NAME=value") from None
        raise ProfileError(f"{where}: {exc}") from None


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
        if not all(parts) or len(parts) > MAX_DEPTH:
            raise ProfileError(f"environment variable {clip(name)}: expected LAUNCHER__SECTION__KEY (double underscores between parts)")
        # Schema keys are lower case; names under `env` keep their case (they are variable names).
        keys = [parts[0].lower()] + ([*parts[1:]] if parts[0].lower() == "env" else [p.lower() for p in parts[1:]])
        _refuse_extends(keys[0], f"environment variable {clip(name)}")
        _assign(data, keys, override_value(keys, environ[name], f"environment variable {clip(name)}"))
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


# Secret-bearing vLLM flags: refused in extra args (argv is visible to every user through ps).
SECRET_FLAG_HINTS = {
    "api_key": "set server.api_key_env to the name of an environment variable that holds the key (it reaches vLLM as VLLM_API_KEY, never in argv)",
    "hf_token": "put the token in the HF_TOKEN environment variable, where vLLM and huggingface_hub read it",
}


def lift_extra_args(layer: Layer, version: str) -> Layer:
    """A layer whose extra_args name profile keys, with those keys set in the layer itself.

    `-- --max-num-seqs 8` becomes engine.max_num_seqs: 8 at the extra args' precedence, so it is
    rendered once and validated by every rule like any other value. Extra args the profile has no key
    for stay in extra_args, verbatim. Secret-bearing flags, and profile keys written in a form that
    cannot be read back (abbreviated, dotted JSON keys), are refused.
    """
    args = layer.data.get("extra_args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return layer
    keys, rest = split_extra_args(args, version, _layer_label(layer))
    if not keys and rest == args:
        return layer
    data = dict(layer.data)
    for section in {k.split(".")[0] for k in keys}:
        if isinstance(data.get(section), dict):
            data[section] = dict(data[section])
    data["extra_args"] = rest
    for dotted, value in keys.items():
        _assign(data, dotted.split("."), value)
    return Layer(layer.name, layer.source, data, layer.lines)


def split_extra_args(args: Sequence[str], version: str, source: str) -> tuple[dict[str, Any], list[str]]:
    """Extra vLLM args -> ({profile key: value}, the args that stay verbatim)."""
    from launcher.engine import parsing

    schema = _engine_schema(version)
    dests = _profile_dests(schema.version)
    lifted: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, explicit = token.partition("=") if token.startswith("--") else (token, "", "")
        opt = schema.lookup(name) if len(token) > 1 and token.startswith("-") and not parsing.NEG_NUM_RE.match(token) else None
        if opt is None:
            rest.append(token)
            i += 1
            continue
        _refuse_secret(opt.dest, name, source)
        key = dests.get(opt.dest)
        if key is not None:
            _refuse_block(key, name, source)
            value, used = _lift_value(schema, opt, name, explicit if eq else None, args, i)
            if used:
                lifted[key] = value
                i += used
                continue
        rest.append(token)
        i += 1
    _refuse_hidden(rest, schema, dests, source)
    return lifted, rest


def _engine_schema(version: str) -> Any:
    from launcher import engine

    try:
        return engine.load_engine(version)
    except ProfileError:
        return engine.load_engine()  # an unknown version is reported by the engine check itself


def _lift_value(schema: Any, opt: Any, name: str, explicit: str | None, args: Sequence[str], i: int) -> tuple[Any, int]:
    """(value, tokens used) for an extra arg naming a profile key; (None, 0) leaves it to the engine check."""
    from launcher.engine import parsing, schemas, values

    if opt.is_flag:
        return (None, 0) if explicit is not None else (schemas.dash_key(name) not in opt.negative, 1)
    if explicit is not None:
        raw, used = explicit, 1
    elif i + 1 < len(args) and not parsing.option_like(args[i + 1]):
        raw, used = args[i + 1], 2
    else:
        return None, 0
    if opt.nargs in ("+", "*") and explicit is None and i + 2 < len(args) and not parsing.option_like(args[i + 2]):
        return None, 0  # several values: the profile key holds one (refused below)
    try:
        value = values.convert(schema, opt, raw)
    except values.BadValue:
        return None, 0
    if value is None or value == "":
        return DELETE, used
    if opt.type == "human-int-or-auto" and value == -1:
        return "auto", used
    if isinstance(value, list):
        return None, 0
    return value, used


def _refuse_secret(dest: str, token: str, source: str) -> None:
    hint = SECRET_FLAG_HINTS.get(dest)
    if hint is None and re.search(r"password|secret", dest):
        hint = "pass it through an environment variable instead"
    if hint:
        raise ProfileError(f"{source}: {clip(token, 60)} would put a secret into vLLM's command line (visible to every user in ps); {hint}")


def _refuse_block(key: str, token: str, source: str) -> None:
    if key == "speculative":
        raise ProfileError(
            f"{source}: {clip(token, 60)} sets speculative decoding, which the profile holds as speculative.*: "
            "use --set speculative.num_speculative_tokens=N (or speculative.method, speculative.enabled, speculative.extra)"
        )
    if key == "model.name":
        raise ProfileError(f"{source}: {clip(token, 60)} names the model, which the profile holds as model.name: use --set model.name=...")


def _refuse_hidden(rest: Sequence[str], schema: Any, dests: Mapping[str, str], source: str) -> None:
    """What vLLM would still read as a profile key or a secret from the verbatim args (abbreviations, dotted keys, -O)."""
    from launcher.engine import findings, parsing, preprocess, values

    if any(preprocess.MODEL_RE.match(t) for t in rest):
        _refuse_block("model.name", "--model", source)
    res = findings.Result()
    parsing.parse(schema, preprocess.preprocess(["MODEL", *rest], res), res)
    for occ in res.occurrences:
        _refuse_secret(occ.opt.dest, occ.token, source)
        key = dests.get(occ.opt.dest)
        if key is None or occ.value is values.BadValue:
            continue
        _refuse_block(key, occ.token, source)
        raise ProfileError(
            f"{source}: {clip(occ.token, 60)} sets the profile key {key} in a form launcher does not read back; "
            f"write it as {occ.opt.name} VALUE, or --set {key}=VALUE"
        )


@functools.lru_cache(maxsize=None)
def _profile_dests(version: str) -> dict[str, str]:
    """vLLM option dest -> the profile key that renders it (for this engine version)."""
    from launcher import engine
    from launcher.profile.schema import FLAG_SECTIONS, Profile, flag_for

    schema = engine.load_engine(version)
    out: dict[str, str] = {}
    for section in FLAG_SECTIONS:
        block = _model_in(Profile.model_fields[section].annotation)
        for field_name, info in block.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("render") is False:
                continue
            opt = schema.lookup(flag_for(field_name, extra))
            if opt is not None:
                out[opt.dest] = f"{section}.{field_name}"
    for flag, key in (("--model", "model.name"), ("--speculative-config", "speculative")):
        opt = schema.lookup(flag)
        if opt is not None:
            out[opt.dest] = key
    return out


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
    # Linear in the size of the data: a replaced mapping forgets the provenance of its own keys only.
    for key, value in src.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        old = dst.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            prov[dotted] = layer
            _merge_into(old, value, dotted, layer, prov)
            continue
        if isinstance(old, dict):
            _forget(old, dotted, prov)
        prov[dotted] = layer
        if value is DELETE:
            dst.pop(key, None)
            continue
        dst[key] = copy.deepcopy(_strip_delete(value))
        if isinstance(value, dict):
            _record(value, dotted, layer, prov)


def _forget(old: Mapping[str, Any], prefix: str, prov: dict[str, Layer]) -> None:
    for key, item in old.items():
        dotted = f"{prefix}.{key}"
        prov.pop(dotted, None)
        if isinstance(item, dict):
            _forget(item, dotted, prov)


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
    if is_base_name(path):
        raise ProfileError(f"{path}: {path.name} is a base profile (its name starts with `_`): it is extended, never served; "
                           "use a profile that extends it")
    layers = file_layers(path, dirs)
    for layer in (env_layer(environ), set_layer(sets)):
        if layer is not None:
            layers.append(layer)
    version = _version_of(merge(layers).data)
    layers = [lift_extra_args(layer, version) for layer in layers]
    file_extra = merge(layers).data.get("extra_args") or []
    if not isinstance(file_extra, list):
        file_extra = []
    args = [*env_extra_args(environ), *extra_args]
    args_layer = extra_args_layer(args, "extra vLLM args", base=file_extra)
    if args_layer is not None:
        layers.append(lift_extra_args(args_layer, version))
    layers.extend(extra_layers)
    merged = merge(layers)
    _expand_paths(merged, environ)
    profile = validate(merged)
    return Resolved(path.stem, path, profile, tuple(layers), merged.provenance)


def _version_of(data: Mapping[str, Any]) -> str:
    from launcher.profile.schema import DEFAULT_VLLM_VERSION

    block = data.get("vllm")
    version = block.get("version") if isinstance(block, dict) else None
    return version if isinstance(version, str) else DEFAULT_VLLM_VERSION


PATH_KEYS = (("model", "name"), ("model", "tokenizer"), ("chat", "chat_template"), ("vllm", "cache_dir"))
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _is_local_path(value: str) -> bool:
    """A value written as a local path: absolute, relative with ./ or ../, under ~, or starting with a variable."""
    return value.startswith(("/", "./", "../", "~", "$"))


def default_cache_dir(environ: Mapping[str, str]) -> str:
    """The compile cache root when the profile names none: vLLM's own rule for VLLM_CACHE_ROOT (envs.py, its
    VLLM_CACHE_ROOT entry and get_default_cache_root: $VLLM_CACHE_ROOT, else $XDG_CACHE_HOME/vllm, else ~/.cache/vllm),
    so a cache vLLM already filled is reused."""
    if environ.get("VLLM_CACHE_ROOT"):
        return environ["VLLM_CACHE_ROOT"]
    if environ.get("XDG_CACHE_HOME"):
        return os.path.join(environ["XDG_CACHE_HOME"], "vllm")
    return "~/.cache/vllm"


def _expand_paths(merged: Merged, environ: Mapping[str, str]) -> None:
    """`~` and `$VAR` in local paths are expanded here, as a shell would: vLLM takes them literally.

    Only local paths (a Hugging Face id or an inline chat template is left as written), and never a
    variable whose name looks secret: the expanded value ends up in vLLM's argv, visible in ps.
    """
    from launcher.profile.schema import looks_secret

    vllm_block = merged.data.setdefault("vllm", {})
    if isinstance(vllm_block, dict) and vllm_block.get("cache_dir") is None:
        vllm_block["cache_dir"] = default_cache_dir(environ)
    for section, key in PATH_KEYS:
        block = merged.data.get(section)
        if not isinstance(block, dict):
            continue
        value = block.get(key)
        if not isinstance(value, str) or not _is_local_path(value):
            continue
        for m in _VARIABLE.finditer(value):
            variable = m.group(1) or m.group(2)
            if looks_secret(variable, environ.get(variable)):
                dotted = f"{section}.{key}"
                raise ProfileError(_located_in(dotted, f"refers to ${variable}, whose name looks secret; launcher does not expand "
                                               "a secret into vLLM's command line (visible in ps)", merged))
        if value == "~" or value.startswith("~/"):
            home = environ.get("HOME") or os.path.expanduser("~")
            value = home + value[1:]
        value = _VARIABLE.sub(lambda m: environ.get(m.group(1) or m.group(2), m.group(0)), value)
        block[key] = value


def validate(merged: Merged) -> "Profile":
    """The one place a ValidationError becomes a ProfileError naming file, line and key: one bounded line."""
    from pydantic import ValidationError

    from launcher.profile.schema import Profile

    try:
        return Profile.model_validate(merged.data)
    except ValidationError as exc:
        described = [_describe_error(err, merged) for err in exc.errors()]
        lines = list(dict.fromkeys(text for _, text in described))
        keys = list(dict.fromkeys(key for key, _ in described))
        raise ProfileError(_one_line(lines[0], keys[1:] if len(lines) > 1 else [])) from None


def _one_line(first: str, others: Sequence[str]) -> str:
    more = ""
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        more = f" (and {len(others)} more: {shown})"
    if len(first) + len(more) > MAX_MESSAGE:
        first = first[: max(80, MAX_MESSAGE - len(more)) - 3] + "..."
    return first + more


def _describe_error(err: Mapping[str, Any], merged: Merged) -> tuple[str, str]:
    """(dotted key as shown, `file:line: key: message`) for one pydantic error."""
    from launcher.profile.schema import RuleError

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
    return _key_text(key), _located_in(key, message, merged)


def _located_in(key: str, message: str, merged: Merged) -> str:
    """`file:line: key: message` with the file and line of the layer that set `key`."""
    shown = _key_text(key)
    layer = layer_for(key, merged.provenance)
    if layer is None:
        # A missing key is blamed on the file that should have had it.
        layer = next((p for p in merged.provenance.values() if p.name == "profile"), None)
        return located(shown, message, layer.source if layer else None)
    if layer.name in ("profile", "base"):
        return located(shown, message, layer.source, layer.lines.get(key) or _nearest_line(key, layer))
    return located(shown, message, _layer_label(layer))


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
        msg = f"{msg} (got {clip(value, 60) if isinstance(value, str) else _short_repr(value)})"
    return msg


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(loc: Sequence[str]) -> str:
    from launcher.profile.schema import Profile

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
